"""Scrape the stages' /metrics endpoints into flat {metric{labels}: value} snapshots."""

from __future__ import annotations

import urllib.request

from prometheus_client.parser import text_string_to_metric_families


def scrape(port: int, host: str = "127.0.0.1", timeout_s: float = 1.0) -> dict[str, float]:
    """Every sample of one endpoint as `name{k=v,...}` -> value; {} if it does not answer."""
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=timeout_s) as r:
            text = r.read().decode()
    except Exception:
        return {}
    out: dict[str, float] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
            out[f"{s.name}{{{labels}}}" if labels else s.name] = float(s.value)
    return out


def total(snapshot: dict[str, float], name: str, **match: str) -> float:
    """Sum of every sample of `name` whose labels include `match`."""
    acc = 0.0
    for key, value in snapshot.items():
        base, _, labels = key.partition("{")
        if base != name:
            continue
        if match:
            pairs = dict(p.split("=", 1) for p in labels.rstrip("}").split(",") if "=" in p)
            if any(pairs.get(k) != v for k, v in match.items()):
                continue
        acc += value
    return acc


def by_label(snapshot: dict[str, float], name: str, label: str) -> dict[str, float]:
    """Sum of `name` per value of `label`."""
    acc: dict[str, float] = {}
    for key, value in snapshot.items():
        base, _, labels = key.partition("{")
        if base != name:
            continue
        pairs = dict(p.split("=", 1) for p in labels.rstrip("}").split(",") if "=" in p)
        if label in pairs:
            acc[pairs[label]] = acc.get(pairs[label], 0.0) + value
    return acc


# The counters of rollouts that will never be trained, by reason: the filter's drops and the
# groups replay let go of.
DROP_COUNTERS = (
    ("filter", "rollstream_filter_samples_dropped_total"),
    ("replay", "rollstream_replay_dropped_rollouts_total"),
)


def drops_by_reason(record: dict[str, dict[str, float]]) -> dict[str, float]:
    """Dropped rollouts per reason in one record of snapshots by stage (filter and replay)."""
    drops: dict[str, float] = {}
    for stage, name in DROP_COUNTERS:
        for reason, v in by_label(record.get(stage, {}), name, "reason").items():
            drops[reason] = drops.get(reason, 0.0) + v
    return drops
