"""PODS max-variance down-sampling (Xu et al. 2025, "Not All Rollouts are Useful: Down-Sampling
Rollouts in LLM RL"): from the n samples of a group keep the m whose rewards have the largest
variance, drop the rest.

Rule: sort the rewards; the best subset is the k highest plus the m - k lowest for some k in
[0, m], so scanning k after the sort finds it in O(n log n) (checked against brute force in
the tests). Ties go to the smallest k, and equal rewards to the lower sample index.

Reason "pods_downsample"; stats: count (dropped), target (m), variance (of the kept rewards).
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import Field

from rollstream.services.filter.chain import KEEP, CandidateGroup, Decision, Filter, FilterParams
from rollstream.services.filter.stats import pstd


def max_variance_subset(rewards: Sequence[float], m: int) -> list[int]:
    """Indices (ascending) of the m rewards with the largest population variance."""
    n = len(rewards)
    if m >= n:
        return list(range(n))
    order = sorted(range(n), key=lambda i: (rewards[i], i))
    values = [rewards[i] for i in order]
    low_sum, low_sq = [0.0], [0.0]  # sums over the j lowest
    for v in values:
        low_sum.append(low_sum[-1] + v)
        low_sq.append(low_sq[-1] + v * v)
    best_k, best_var = 0, -1.0
    for k in range(m + 1):  # k highest + (m - k) lowest
        total = low_sum[m - k] + low_sum[n] - low_sum[n - k]
        squares = low_sq[m - k] + low_sq[n] - low_sq[n - k]
        var = squares / m - (total / m) ** 2
        if var > best_var + 1e-12:
            best_k, best_var = k, var
    return sorted(order[: m - best_k] + order[n - best_k :])


class Pods(Filter):
    """Keep the `m` samples with the largest reward variance."""

    name = "pods"

    class Params(FilterParams):
        m: int = Field(ge=1)
        """Samples kept per group (the paper's m; the generator samples n > m)."""

    def apply(self, group: CandidateGroup) -> Decision:
        m = self.params.m
        if len(group.samples) <= m:
            return KEEP
        keep = set(max_variance_subset(group.rewards, m))
        gone = [s.rollout.rollout_id for i, s in enumerate(group.samples) if i not in keep]
        variance = pstd([group.rewards[i] for i in sorted(keep)]) ** 2
        return Decision.drop_samples(
            gone, "pods_downsample", count=len(gone), target=m, variance=variance
        )
