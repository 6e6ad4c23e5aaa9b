"""Learner metrics (names `rollstream_learner_*`)."""

from __future__ import annotations

from rollstream.services.runtime.metrics import StageMetrics

VERSION_BUCKETS = (0, 1, 2, 3, 4, 6, 8, 16, 32, 64)
STEP_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300)

# per-step values of train_on_batch's metrics exported as gauges: metric key -> gauge name
STEP_GAUGES = {
    "loss": "loss",
    "pg_loss": "pg_loss",
    "entropy": "entropy",
    "kl": "kl",
    "clip_frac": "clip_fraction",
    "ratio_mean": "ratio_mean",
    "ratio_max": "ratio_max",
    "is_ratio_mean": "is_ratio_mean",
    "is_ratio_max": "is_ratio_max",
    "is_truncated_frac": "is_truncated_fraction",
    "grad_norm": "grad_norm",
}


class LearnerMetrics:
    def __init__(self, m: StageMetrics) -> None:
        self.step = m.gauge("step", "Optimizer steps taken (one per batch unless mini_steps)")
        self.version = m.gauge("policy_version", "Newest weight version published")
        self.values = {
            key: m.gauge(name, f"Last step's {key}") for key, name in STEP_GAUGES.items()
        }
        self.lr = m.gauge("learning_rate", "Current learning rate")
        self.batches = m.counter("batches_trained_total", "TrainBatches trained")
        self.duplicates = m.counter("duplicate_batches_total", "Batches skipped as already trained")
        self.tokens = m.counter("tokens_total", "Completion tokens trained")
        self.samples = m.counter("samples_total", "Samples (rollouts) trained")
        self.tokens_per_s = m.gauge("tokens_per_second", "Trained tokens / compute time, last step")
        self.phase = m.histogram(
            "step_phase_seconds", "Time per step by phase", ["phase"], buckets=STEP_BUCKETS
        )
        self.idle = m.gauge("idle_ratio", "Share of wall time spent waiting for data (last minute)")
        self.staleness = m.histogram(
            "staleness_versions",
            "Learner version - sample policy version of trained samples",
            buckets=VERSION_BUCKETS,
        )
        self.credits = m.gauge("credits_total", "Batches asked for so far (cumulative credits)")
        self.publish = m.histogram("publish_seconds", "Time to write and announce one version")
        self.checkpoint = m.histogram("checkpoint_seconds", "Time to write one checkpoint")
        self.control = m.counter("control_updates_total", "Control updates", ["result"])


def register(m: StageMetrics) -> LearnerMetrics:
    """Every metric this stage exports, in `m`'s registry."""
    return LearnerMetrics(m)
