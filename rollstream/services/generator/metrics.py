"""Generator metrics (names `rollstream_generator_*`)."""

from __future__ import annotations

from rollstream.services.runtime.metrics import StageMetrics


class GeneratorMetrics:
    def __init__(self, m: StageMetrics) -> None:
        self.tokens = m.counter("tokens_total", "Completion tokens generated")
        self.rollouts = m.counter("rollouts_total", "Rollouts published")
        self.occupancy = m.gauge(
            "batch_occupancy_ratio", "Prompts in the last batch / the prompts it asked for"
        )
        self.finish = m.counter("finish_reason_total", "Samples by finish reason", ["reason"])
        self.length = m.histogram(
            "response_length_tokens",
            "Completion length",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096),
        )
        self.version = m.gauge("policy_version", "Weight version currently loaded")
        self.swap = m.histogram("swap_seconds", "Time to fetch, verify and load new weights")
        self.version_delay = m.histogram(
            "version_delay_seconds",
            "From a weight version's publication to its load here (pacing moves on it; wall"
            " clocks of two processes, so across hosts their skew counts too)",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 1, 2, 5),
        )
        self.inflight_swaps = m.counter(
            "inflight_swaps_total", "Weight versions loaded between two decoding steps"
        )
        self.refused = m.counter("swaps_refused_total", "Weight versions refused", ["reason"])
        self.paused = m.counter("paused_seconds_total", "Seconds sampling was paused", ["reason"])
        self.gen_time = m.histogram("generate_seconds", "Wall time of one generate call")
        self.control = m.counter("control_updates_total", "Control updates", ["result"])
        self.raw_lag = m.gauge("rollouts_raw_lag_messages", "Unscored rollouts on rollouts.raw")
        self.phase = m.counter(
            "phase_seconds_total",
            "Wall seconds by phase: generate, publish, swap, wait_prompts, paused",
            ["phase"],
        )
        self.idle = m.gauge(
            "idle_ratio", "Share of the last minute or so not spent in generate calls"
        )
        self.keep_rate = m.gauge(
            "keep_rate_ratio", "Kept / (kept + dropped) groups lately, as pacing sees it"
        )


def register(m: StageMetrics) -> GeneratorMetrics:
    """Every metric this stage exports, in `m`'s registry (used by the service and by the
    dashboard test that checks Grafana queries only names the code exports)."""
    return GeneratorMetrics(m)
