"""Filter metrics (names `rollstream_filter_*`)."""

from __future__ import annotations

from rollstream.services.runtime.metrics import StageMetrics

ASSEMBLY_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)


class FilterMetrics:
    def __init__(self, m: StageMetrics) -> None:
        self.kept = m.counter("groups_kept_total", "Groups published on groups.kept")
        self.dropped = m.counter(
            "groups_dropped_total",
            "Whole groups dropped, by filter and reason",
            ["filter", "reason"],
        )
        self.samples_dropped = m.counter(
            "samples_dropped_total", "Samples dropped, by filter and reason", ["filter", "reason"]
        )
        self.samples_kept = m.counter("samples_kept_total", "Samples in kept groups")
        self.zero_variance = m.counter(
            "zero_variance_groups_total",
            "Groups with no reward spread, by kind (all_correct, all_wrong, other)",
            ["kind"],
        )
        self.zero_variance_ratio = m.gauge(
            "zero_variance_ratio", "Running fraction of groups with no reward spread", ["kind"]
        )
        self.assembly = m.histogram(
            "group_assembly_seconds",
            "First sample seen -> group finished",
            buckets=ASSEMBLY_BUCKETS,
        )
        self.timed_out = m.counter(
            "groups_timed_out_total", "Groups finished by the timeout", ["policy"]
        )
        self.ignored = m.counter(
            "samples_ignored_total", "Samples not added to a group, by why", ["why"]
        )
        self.pending = m.gauge("pending_groups", "Groups being assembled on this worker")
        self.advantage_abs = m.histogram(
            "advantage_abs",
            "|advantage| of kept samples",
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8),
        )
        self.version = m.gauge("policy_version", "Learner policy version the filter works with")
        self.control = m.counter("control_updates_total", "Control updates", ["result"])


def register(m: StageMetrics) -> FilterMetrics:
    """Every metric this stage exports, in `m`'s registry (the dashboard test uses it)."""
    return FilterMetrics(m)
