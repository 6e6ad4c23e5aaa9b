"""Advantage estimators: one number per sample from the rewards of its group.

- grpo:    A_i = (r_i - mean(r)) / (std(r) + eps), std the sample std (n - 1, as torch.std,
           TRL and verl compute it)
- dr_grpo: A_i = r_i - mean(r)                      (Dr. GRPO: no std division)
- rloo:    A_i = r_i - mean_{j != i} r_j = n / (n - 1) * (r_i - mean(r))

A group of one sample gets advantage 0 under every estimator. Pure.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from rollstream.services.filter.stats import mean, sample_std

Estimator = Literal["grpo", "dr_grpo", "rloo"]
ESTIMATORS: tuple[Estimator, ...] = ("grpo", "dr_grpo", "rloo")


def grpo(rewards: Sequence[float], eps: float = 1e-6) -> list[float]:
    """Group-normalised advantages (mean and std of the group)."""
    if len(rewards) < 2:
        return [0.0] * len(rewards)
    m, s = mean(rewards), sample_std(rewards)
    return [(r - m) / (s + eps) for r in rewards]


def dr_grpo(rewards: Sequence[float], eps: float = 1e-6) -> list[float]:
    """Mean-centred advantages, without the std division (Dr. GRPO)."""
    if len(rewards) < 2:
        return [0.0] * len(rewards)
    m = mean(rewards)
    return [r - m for r in rewards]


def rloo(rewards: Sequence[float], eps: float = 1e-6) -> list[float]:
    """Leave-one-out baseline: each reward minus the mean of the others."""
    n = len(rewards)
    if n < 2:
        return [0.0] * n
    total = sum(rewards)
    return [r - (total - r) / (n - 1) for r in rewards]


def advantages(rewards: Sequence[float], estimator: Estimator, eps: float = 1e-6) -> list[float]:
    """Advantages of one group with the named estimator."""
    if estimator == "grpo":
        return grpo(rewards, eps)
    if estimator == "dr_grpo":
        return dr_grpo(rewards, eps)
    if estimator == "rloo":
        return rloo(rewards, eps)
    raise ValueError(f"unknown estimator {estimator!r}; known: {', '.join(ESTIMATORS)}")
