"""The ledger (RELIABILITY.md): every rollout ever produced is in exactly one of pending,
dropped (with a reason), trained, or expired. Computed by reading the topics themselves.

generated  = distinct rollout_ids on `rollouts.raw`
dropped    = rollout_ids named by DropRecords on `groups.dropped` (reason != expired)
expired    = rollout_ids of DropRecords with reason `expired` (replay's staleness bound)
trained    = rollouts of the groups the learner reports as trained on `learner.feedback`
pending    = generated - dropped - expired - trained (in a topic or a buffer)
Balanced means: no rollout in two categories, none trained or dropped that was never
generated, and no group trained twice (a group handed out again by replay on purpose is a
`reuse`, counted separately).
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from rollstream.schemas import WeightUpdate
from rollstream.services.runtime.bus import Consumer
from rollstream.services.runtime.settings import KafkaSettings


@dataclass
class Ledger:
    generated: int = 0
    pending: int = 0
    trained: int = 0
    expired: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    duplicates_raw: int = 0  # repeated rollout_ids on rollouts.raw (regenerated after a crash)
    trained_twice: int = 0
    unknown: int = 0  # trained/dropped ids never seen on rollouts.raw
    overlap: int = 0  # ids in two final categories
    reuses: int = 0
    groups_kept: int = 0
    groups_trained: int = 0
    learner_version: int = 0
    learner_step: int = 0
    skipped_records: dict[str, int] = field(default_factory=dict)  # bad records, per topic

    @property
    def balanced(self) -> bool:
        dropped = sum(self.dropped.values())
        return (
            self.unknown == 0
            and self.overlap == 0
            and self.trained_twice == 0
            and self.generated == self.pending + self.trained + self.expired + dropped
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "dropped_total": sum(self.dropped.values()),
            "balanced": self.balanced,
        }


def read_all(
    kafka: KafkaSettings,
    topic: str,
    timeout_s: float = 30.0,
    skipped: Counter[str] | None = None,
) -> list[Any]:
    """Every decodable message of `topic` from the beginning up to its end as of this call:
    each partition's end is taken once, from the first fetch that reports it, and reading
    stops there, so a topic that is still being written (a live run) is read in seconds
    instead of chasing its end. BusError if that end is not reached within `timeout_s`. Bad
    records are skipped, logged and counted in `skipped[topic]` (a reader never
    dead-letters)."""
    from rollstream.services.runtime.bus import BusError

    c = Consumer(kafka, "status", [topic], group=None, from_beginning=True, dead_letters=False)
    out: list[Any] = []
    cut: dict[tuple[str, int], int] = {}
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            recs = c.poll(5000, 0.2)
            out += [r.value for r in recs]
            for tp, end in c.ends().items():
                if end is not None:
                    cut.setdefault(tp, end)
            pos = c.positions()
            parts = c.assignment()
            if len(cut) == len(parts) and all(pos.get(tp, 0) >= cut[tp] for tp in cut):
                break
            if time.monotonic() > deadline:
                raise BusError(f"{topic}: end not reached in {timeout_s:g} s (cut {cut}, at {pos})")
    finally:
        c.close()
    if skipped is not None and c.skipped:
        skipped[topic] += c.skipped
    return out


def compute(kafka: KafkaSettings, policy: str | None = None) -> Ledger:
    """The ledger over one consistent cut: the topics are read downstream first (feedback,
    kept, dropped, then rollouts.raw), each to its end when its reading starts, so every
    rollout a later stage names was already on the earlier topic within the cut; what was
    produced after shows up as generated and pending, never as unknown. `weights` is read
    first, for the newest version of `policy` published only (None: any policy's)."""
    led = Ledger()
    skipped: Counter[str] = Counter()
    weights = read_all(kafka, "weights", skipped=skipped)
    feedback = read_all(kafka, "learner.feedback", skipped=skipped)
    kept_msgs = read_all(kafka, "groups.kept", skipped=skipped)
    dropped_msgs = read_all(kafka, "groups.dropped", skipped=skipped)
    raw = read_all(kafka, "rollouts.raw", skipped=skipped)
    raw_ids: Counter[str] = Counter(r.rollout_id for r in raw)
    led.generated = len(raw_ids)
    led.duplicates_raw = sum(n - 1 for n in raw_ids.values())
    final: dict[str, str] = {}

    def mark(rid: str, state: str) -> None:
        if rid not in raw_ids:
            led.unknown += 1
        if rid in final and final[rid] != state:
            led.overlap += 1
        final.setdefault(rid, state)

    dropped: Counter[str] = Counter()
    for d in dropped_msgs:
        for rid in d.rollout_ids:
            if rid in final:
                continue  # a repeated DropRecord (at-least-once) is not a second drop
            mark(rid, "expired" if d.reason == "expired" else "dropped")
            if d.reason == "expired":
                led.expired += 1
            else:
                dropped[d.reason] += 1
    led.dropped = dict(dropped)
    kept: dict[str, list[str]] = {}
    for g in kept_msgs:
        kept.setdefault(g.group_id, [s.rollout.rollout_id for s in g.samples])
    led.groups_kept = len(kept)
    seen_groups: Counter[str] = Counter()
    seen_batches: set[str] = set()
    for f in feedback:
        led.learner_version = max(led.learner_version, f.learner_version)
        led.learner_step = max(led.learner_step, f.step)
        if any(b in seen_batches for b in f.trained_batches):
            continue  # a resent Feedback for batches already counted
        seen_batches.update(f.trained_batches)
        for gid in f.trained_groups:
            seen_groups[gid] += 1
    for gid, uses in seen_groups.items():
        led.reuses += uses - 1
        for rid in kept.get(gid, []):
            if final.get(rid) == "trained":
                led.trained_twice += 1
                continue
            mark(rid, "trained")
            led.trained += 1
    led.groups_trained = len(seen_groups)
    # a step's Feedback goes out before the version it makes (the last step's says N-1): the
    # newest version published, bounded by the learner's (a forged far-future one is not)
    bound = led.learner_version + 1 if feedback else 0
    published = [
        w.version
        for w in weights
        if isinstance(w, WeightUpdate)
        and w.version <= bound
        and (policy is None or w.policy == policy)
    ]
    led.learner_version = max([led.learner_version, *published])
    led.pending = led.generated - sum(1 for rid in final if rid in raw_ids)
    led.skipped_records = dict(skipped)
    return led


def render(led: Ledger) -> str:
    d = led.as_dict()
    lines = [
        f"generated {d['generated']}  =  pending {d['pending']}  +  trained {d['trained']}"
        f"  +  dropped {d['dropped_total']}  +  expired {d['expired']}",
        "dropped by reason: "
        + (", ".join(f"{k} {v}" for k, v in sorted(led.dropped.items())) or "none"),
        f"groups kept {led.groups_kept}, trained {led.groups_trained} (reuses {led.reuses});"
        f" learner step {led.learner_step}, version {led.learner_version}",
        f"regenerated duplicates on rollouts.raw {led.duplicates_raw} (deduplicated by id)",
        "bad records skipped (not messages of the pipeline): "
        + (", ".join(f"{k} {v}" for k, v in sorted(led.skipped_records.items())) or "none"),
        (
            "ledger BALANCED"
            if led.balanced
            else f"ledger NOT balanced: unknown {led.unknown}, overlap {led.overlap}, "
            f"trained twice {led.trained_twice}"
        ),
    ]
    return "\n".join(lines)
