"""Replay metrics (names `rollstream_replay_*`)."""

from __future__ import annotations

from rollstream.services.runtime.metrics import StageMetrics

USES_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 32)
VERSION_BUCKETS = (0, 1, 2, 3, 4, 6, 8, 16, 32, 64)


class ReplayMetrics:
    def __init__(self, m: StageMetrics) -> None:
        self.groups = m.gauge("buffer_groups", "Groups in the buffer")
        self.fresh = m.gauge("buffer_fresh_groups", "Groups in the buffer never handed out")
        self.occupancy = m.gauge("buffer_occupancy_ratio", "Groups in the buffer / capacity")
        self.added = m.counter("groups_added_total", "Groups accepted into the buffer")
        self.duplicates = m.counter("duplicate_groups_total", "Groups seen again and ignored")
        self.expired = m.counter(
            "expired_groups_total", "Groups removed for staleness", ["trained"]
        )
        self.evicted = m.counter("evicted_groups_total", "Groups evicted at capacity", ["trained"])
        self.consumed = m.counter("consumed_groups_total", "Groups that reached the reuse cap")
        self.dropped = m.counter(
            "dropped_rollouts_total",
            "Rollouts in DropRecords published (never trained)",
            ["reason"],
        )
        self.batches = m.counter("batches_sent_total", "TrainBatches sent")
        self.sent = m.counter("groups_sent_total", "Groups handed out", ["replayed"])
        self.replay_fraction = m.gauge(
            "replay_fraction", "Share of replayed groups in the last batch"
        )
        self.uses = m.histogram(
            "reuse_count", "Uses of a group when handed out", buckets=USES_BUCKETS
        )
        self.staleness = m.histogram(
            "staleness_versions",
            "learner version - group policy version when handed out",
            buckets=VERSION_BUCKETS,
        )
        self.build = m.histogram("build_seconds", "Time to build one batch")
        self.granted = m.gauge("credits_granted", "Batches the learner asked for, in total")
        self.outstanding = m.gauge("credits_outstanding", "Granted batches not sent yet")
        self.version = m.gauge("policy_version", "Learner version replay knows")
        self.success = m.counter("success_mixed_total", "Stored successes mixed into groups")
        self.control = m.counter("control_updates_total", "Control updates", ["result"])


def register(m: StageMetrics) -> ReplayMetrics:
    """Every metric this stage exports, in `m`'s registry."""
    return ReplayMetrics(m)
