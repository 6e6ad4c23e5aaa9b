"""Write the Grafana dashboard from the metric names the code exports.

Reads: `rollstream.services.runtime.metrics.catalog()` ({stage: metric names}, built by
instantiating each stage's metrics).
Writes: `helm/rollstream/dashboards/rollstream.json` (the chart renders it into a ConfigMap
labelled `grafana_dashboard: "1"` for the Grafana sidecar).

One overview row, then one row per stage: the panels every stage has (messages in/out, dead
letters, consumer lag, processes up), curated panels where a stage has them, and a default
panel for every other metric the stage exports (rate for counters, p50/p95 for histograms,
value for gauges). A panel is kept only if every metric it queries is in the catalog, so
re-running this after a stage adds metrics picks them up, and a renamed metric drops out.
Run: `.venv/bin/python helm/gen_dashboard.py`. tests/helm/test_chart_dashboard.py fails when
the committed JSON differs from a fresh build or queries a name the code does not export.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent / "rollstream" / "dashboards" / "rollstream.json"
STAGES = ("feed", "generator", "scorer", "filter", "replay", "learner", "evaluator")
SEL = '{namespace=~"$namespace"}'
RATE = "[$__rate_interval]"
NAME_RE = re.compile(r"\brollstream_[a-z0-9_]+")
WIDTH, HEIGHT, PER_ROW = 8, 7, 3


@dataclass(frozen=True)
class Panel:
    title: str
    unit: str
    targets: tuple[tuple[str, str], ...]  # (PromQL, legend); `{S}` = rollstream_<stage>_

    def exprs(self, stage: str) -> list[tuple[str, str]]:
        prefix = f"rollstream_{stage}_"
        return [(e.replace("{S}", prefix).replace("{SEL}", SEL), leg) for e, leg in self.targets]


def _rate(name: str, by: str = "") -> str:
    group = f" by ({by})" if by else ""
    return f"sum{group}(rate({{S}}{name}{{SEL}}{RATE}))"


def _quantiles(name: str) -> tuple[tuple[str, str], ...]:
    return tuple(
        (
            f"histogram_quantile({q}, sum by (le) (rate({{S}}{name}_bucket{{SEL}}{RATE})))",
            f"p{int(q * 100)}",
        )
        for q in (0.5, 0.95)
    )


COMMON = (
    Panel("messages in / s", "ops", ((_rate("messages_in_total", "topic"), "{{topic}}"),)),
    Panel("messages out / s", "ops", ((_rate("messages_out_total", "topic"), "{{topic}}"),)),
    Panel("dead letters / s", "ops", ((_rate("dead_letters_total", "topic"), "{{topic}}"),)),
    Panel(
        "consumer lag", "short", (("sum by (topic) ({S}consumer_lag_messages{SEL})", "{{topic}}"),)
    ),
    Panel("processes up", "short", (("sum({S}up{SEL})", "up"),)),
)


def _gauge(name: str, agg: str = "max") -> str:
    return f"{agg}({{S}}{name}{{SEL}})"


def _by_pod(name: str) -> tuple[tuple[str, str], ...]:
    return ((f"{{S}}{name}{{SEL}}", "{{pod}}"),)


# Panels worth a title and a fixed place; each stays only while the code exports its metrics.
CURATED: dict[str, tuple[Panel, ...]] = {
    "generator": (
        Panel("tokens / s", "short", ((_rate("tokens_total"), "tokens"),)),
        Panel("rollouts / s", "ops", ((_rate("rollouts_total"), "rollouts"),)),
        Panel("policy version", "short", ((_gauge("policy_version"), "version"),)),
        Panel("batch occupancy", "percentunit", ((_gauge("batch_occupancy_ratio", "avg"), "avg"),)),
        Panel("response length (tokens)", "short", _quantiles("response_length_tokens")),
        Panel("generate call (s)", "s", _quantiles("generate_seconds")),
        Panel("weight swap (s)", "s", _quantiles("swap_seconds")),
        Panel("new version: published to loaded (s)", "s", _quantiles("version_delay_seconds")),
        Panel(
            "finish reasons / s", "ops", ((_rate("finish_reason_total", "reason"), "{{reason}}"),)
        ),
        Panel(
            "paused (s/s)",
            "percentunit",
            ((_rate("paused_seconds_total", "reason"), "{{reason}}"),),
        ),
        Panel(
            "unscored rollouts (rollouts.raw lag)",
            "short",
            ((_gauge("rollouts_raw_lag_messages"), "lag"),),
        ),
    ),
    "scorer": (
        Panel("reward mean", "short", _by_pod("reward_mean")),
        Panel("reward std", "short", _by_pod("reward_std")),
        Panel("score (s)", "s", _quantiles("score_seconds")),
    ),
    "filter": (
        Panel(
            "groups kept / dropped per s",
            "ops",
            (
                (_rate("groups_kept_total"), "kept"),
                (_rate("groups_dropped_total"), "dropped"),
            ),
        ),
        Panel("zero-variance ratio", "percentunit", _by_pod("zero_variance_ratio")),
    ),
    "replay": (
        Panel("buffer occupancy", "percentunit", _by_pod("buffer_occupancy_ratio")),
        Panel("staleness (versions)", "short", _quantiles("staleness_versions")),
    ),
    "learner": (
        Panel("step", "short", ((_gauge("step"), "step"),)),
        Panel("loss", "short", _by_pod("loss")),
        Panel("kl", "short", _by_pod("kl")),
        Panel("entropy", "short", _by_pod("entropy")),
        Panel("grad norm", "short", _by_pod("grad_norm")),
        Panel("tokens / s", "short", ((_rate("tokens_total"), "tokens"),)),
        Panel(
            "sample latency by hop (mean)",
            "s",
            (
                (
                    f"{_rate('sample_latency_seconds_sum', 'hop')}"
                    f" / {_rate('sample_latency_seconds_count', 'hop')}",
                    "{{hop}}",
                ),
            ),
        ),
    ),
}


def used_names(text: str) -> set[str]:
    """Every `rollstream_*` metric name a PromQL expression (or any text) mentions."""
    return set(NAME_RE.findall(text))


def _default_panel(stage: str, family: str, names: set[str]) -> Panel:
    """A panel for a metric family with no curated panel, by the type its names show."""
    title = family.replace("_", " ")
    if f"rollstream_{stage}_{family}_bucket" in names:
        return Panel(title, "s" if family.endswith("_seconds") else "short", _quantiles(family))
    if family.endswith("_total"):
        return Panel(title[: -len(" total")] + " / s", "ops", ((_rate(family), "rate"),))
    return Panel(title, "short", ((f"{{S}}{family}{{SEL}}", "__auto"),))


def _families(stage: str, names: set[str]) -> list[str]:
    """Metric families (histograms as one) of a stage, without the stage prefix."""
    prefix = f"rollstream_{stage}_"
    fams: set[str] = set()
    for n in names:
        base = n[len(prefix) :] if n.startswith(prefix) else n
        for suffix in ("_bucket", "_sum", "_count"):
            if base.endswith(suffix) and (prefix + base[: -len(suffix)] + "_bucket") in names:
                base = base[: -len(suffix)]
        fams.add(base)
    return sorted(fams)


def stage_panels(stage: str, names: set[str]) -> list[Panel]:
    """The panels of one stage's row: common, curated, then defaults for the rest."""
    chosen = [
        p
        for p in (*COMMON, *CURATED.get(stage, ()))
        if all(used_names(e) <= names for e, _ in p.exprs(stage))
    ]
    covered = set().union(*(used_names(e) for p in chosen for e, _ in p.exprs(stage)))
    for fam in _families(stage, names):
        p = _default_panel(stage, fam, names)
        if not used_names(" ".join(e for e, _ in p.exprs(stage))) & covered:
            chosen.append(p)
    return chosen


def _timeseries(pid: int, x: int, y: int, title: str, unit: str, targets: list) -> dict:
    return {
        "id": pid,
        "type": "timeseries",
        "title": title,
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "gridPos": {"h": HEIGHT, "w": WIDTH, "x": x, "y": y},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}},
        "targets": [
            {"refId": chr(ord("A") + i), "expr": e, "legendFormat": leg}
            for i, (e, leg) in enumerate(targets)
        ],
    }


def build(catalog: dict[str, set[str]]) -> dict[str, Any]:
    """The dashboard for a metric catalog ({stage: names})."""
    panels: list[dict[str, Any]] = []
    y = 0

    def row(title: str, items: list[tuple[str, str, list]]) -> None:
        nonlocal y
        panels.append(
            {
                "id": len(panels) + 1,
                "type": "row",
                "title": title,
                "collapsed": False,
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": y},
                "panels": [],
            }
        )
        y += 1
        for i, (t, unit, targets) in enumerate(items):
            x = (i % PER_ROW) * WIDTH
            panels.append(_timeseries(len(panels) + 1, x, y, t, unit, targets))
            if i % PER_ROW == PER_ROW - 1 or i == len(items) - 1:
                y += HEIGHT

    stages = [s for s in STAGES if s in catalog]
    overview = [
        (
            "messages out / s by stage",
            "ops",
            [(f"sum(rate(rollstream_{s}_messages_out_total{SEL}{RATE}))", s) for s in stages],
        ),
        (
            "consumer lag by stage",
            "short",
            [(f"sum(rollstream_{s}_consumer_lag_messages{SEL})", s) for s in stages],
        ),
        (
            "dead letters / s by stage",
            "ops",
            [(f"sum(rate(rollstream_{s}_dead_letters_total{SEL}{RATE}))", s) for s in stages],
        ),
    ]
    overview = [o for o in overview if used_names(" ".join(e for e, _ in o[2])) <= _all(catalog)]
    row("pipeline", overview)
    for s in stages:
        row(s, [(p.title, p.unit, p.exprs(s)) for p in stage_panels(s, catalog[s])])
    first = f"rollstream_{stages[0]}_up" if stages else "up"
    return {
        "uid": "rollstream",
        "title": "rollstream",
        "tags": ["rollstream"],
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "refresh": "30s",
        "time": {"from": "now-1h", "to": "now"},
        "annotations": {"list": []},
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Prometheus",
                    "type": "datasource",
                    "query": "prometheus",
                },
                {
                    "name": "namespace",
                    "label": "namespace",
                    "type": "query",
                    "datasource": {"type": "prometheus", "uid": "${datasource}"},
                    "query": f"label_values({first}, namespace)",
                    "refresh": 2,
                    "includeAll": True,
                    "multi": True,
                    "allValue": ".*",
                },
            ]
        },
        "panels": panels,
    }


def _all(catalog: dict[str, set[str]]) -> set[str]:
    return set().union(*catalog.values()) if catalog else set()


def render(catalog: dict[str, set[str]] | None = None) -> str:
    if catalog is None:
        from rollstream.services.runtime.metrics import catalog as code_catalog

        catalog = code_catalog()
    return json.dumps(build(catalog), indent=1) + "\n"


def main() -> int:
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(render())
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
