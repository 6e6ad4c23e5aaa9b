"""Zero-variance filter (DAPO dynamic sampling, Yu et al. 2025): drop a group whose rewards
are all equal, since group-normalised advantages are then all zero.

Reasons: "zero_variance_all_correct" (every sample correct), "zero_variance_all_wrong" (none
correct), "zero_variance" (equal rewards, mixed verdicts). Stats: reward_std, reward_mean,
pass_rate. With `metric="correct"` the spread of the 0/1 verdicts is used instead of rewards.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from rollstream.services.filter.chain import KEEP, CandidateGroup, Decision, Filter, FilterParams
from rollstream.services.filter.stats import is_correct, mean, pass_rate, pstd


class ZeroVariance(Filter):
    """Drop groups whose reward (or correctness) spread is at most `eps`."""

    name = "zero_variance"

    class Params(FilterParams):
        eps: float = Field(1e-6, ge=0)
        """Largest population std still counted as zero (slime uses 1e-6)."""
        metric: Literal["reward", "correct"] = "reward"
        """Spread of the total reward, or of the 0/1 correct verdicts."""

    def apply(self, group: CandidateGroup) -> Decision:
        if self.params.metric == "reward":
            values = group.rewards
        else:
            values = [float(is_correct(s)) for s in group.samples]
        std = pstd(values)
        if std > self.params.eps:
            return KEEP
        rate = pass_rate(group.samples)
        if rate == 1.0:
            reason = "zero_variance_all_correct"
        elif rate == 0.0:
            reason = "zero_variance_all_wrong"
        else:
            reason = "zero_variance"
        return Decision.drop_group(
            reason, reward_std=std, reward_mean=mean(group.rewards), pass_rate=rate
        )
