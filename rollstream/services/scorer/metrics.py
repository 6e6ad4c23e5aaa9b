"""Scorer metrics (names `rollstream_scorer_*`), and a running mean/std per reward component."""

from __future__ import annotations

import math

from rollstream.services.runtime.metrics import StageMetrics


class ScorerMetrics:
    def __init__(self, m: StageMetrics) -> None:
        self.scored = m.counter("rollouts_scored_total", "Rollouts scored and published")
        self.score_time = m.histogram(
            "score_seconds", "Wall time to score one rollout (all components)"
        )
        self.reward_time = m.histogram(
            "reward_seconds", "Wall time of one reward component", ["reward"]
        )
        self.timeouts = m.counter(
            "reward_timeouts_total", "Components that timed out and got their fallback", ["reward"]
        )
        self.errors = m.counter(
            "reward_errors_total", "Rollouts dead-lettered because a reward raised", ["reward"]
        )
        self.reward_mean = m.gauge(
            "reward_mean", "Running mean of each component (and `total`)", ["reward"]
        )
        self.reward_std = m.gauge(
            "reward_std", "Running std of each component (and `total`)", ["reward"]
        )
        self.correct = m.counter("correct_total", "Rollouts by checker verdict", ["verdict"])
        self.in_flight = m.gauge("in_flight_rollouts", "Rollouts being scored right now")
        self.version = m.gauge("policy_version", "Newest policy version among scored rollouts")
        self.control = m.counter("control_updates_total", "Control updates", ["result"])


def register(m: StageMetrics) -> ScorerMetrics:
    """Every metric this stage exports, in `m`'s registry (the dashboard test uses it)."""
    return ScorerMetrics(m)


class RunningStats:
    """Exponentially weighted mean and std (weight `alpha` on the newest value)."""

    def __init__(self, alpha: float = 0.01) -> None:
        self.alpha = alpha
        self.mean = 0.0
        self.var = 0.0
        self.count = 0

    def add(self, x: float) -> None:
        self.count += 1
        if self.count == 1:
            self.mean, self.var = x, 0.0
            return
        a = max(self.alpha, 1.0 / self.count)  # plain mean/var until 1/alpha values
        delta = x - self.mean
        self.mean += a * delta
        self.var = (1 - a) * (self.var + a * delta * delta)

    @property
    def std(self) -> float:
        return math.sqrt(max(self.var, 0.0))
