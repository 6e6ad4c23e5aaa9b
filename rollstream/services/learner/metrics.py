"""Learner metrics (names `rollstream_learner_*`)."""

from __future__ import annotations

from rollstream.schemas import TrainBatch
from rollstream.services.runtime.metrics import StageMetrics

VERSION_BUCKETS = (0, 1, 2, 3, 4, 6, 8, 16, 32, 64)
STEP_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300)
HOP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 120)

HOPS = ("generate", "score", "group", "replay", "deliver", "total")
"""Where a trained sample's time went, from the start of its generation batch (when its policy
version was stamped) to the start of the step that trains it: `generate` the generation batch,
`score` published -> scored (a broker hop and the scorer), `group` scored -> its group left the
filter (waiting for the group's other samples), `replay` kept -> handed out in a batch,
`deliver` handed out -> training starts (a broker hop and the learner's prefetch queue), and
`total` all of it. At a steady rate, staleness in versions ~ total / seconds per version, so
this is what to cut to train fresher samples without idling. The times are the producing hosts'
clocks: across hosts, the hops carry their clock skew."""

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
        self.latency = m.histogram(
            "sample_latency_seconds",
            "Trained samples: time from generation start to training, by hop (see HOPS)",
            ["hop"],
            buckets=HOP_BUCKETS,
        )
        self.credits = m.gauge("credits_total", "Batches asked for so far (cumulative credits)")
        self.publish = m.histogram("publish_seconds", "Time to write and announce one version")
        self.checkpoint = m.histogram("checkpoint_seconds", "Time to write one checkpoint")
        self.control = m.counter("control_updates_total", "Control updates", ["result"])


def pipeline_latency(batch: TrainBatch, started: float) -> dict[str, list[float]]:
    """Per trained sample, seconds spent in each of HOPS (`started`: when the step that trains
    `batch` began, time.time()). Negative gaps (clock skew) count as 0."""
    hops: dict[str, list[float]] = {h: [] for h in HOPS}
    for item in batch.items:
        g = item.group
        for s in g.samples:
            r = s.rollout
            began = r.produced_at - r.generate_s
            for hop, secs in (
                ("generate", r.generate_s),
                ("score", s.produced_at - r.produced_at),
                ("group", g.produced_at - s.produced_at),
                ("replay", batch.produced_at - g.produced_at),
                ("deliver", started - batch.produced_at),
                ("total", started - began),
            ):
                hops[hop].append(max(0.0, secs))
    return hops


def register(m: StageMetrics) -> LearnerMetrics:
    """Every metric this stage exports, in `m`'s registry."""
    return LearnerMetrics(m)
