"""Learnability threshold (LILO: Foster & Foerster 2025, "Learning to Reason at the Frontier of
Learnability"): keep a group only when p(1 - p) >= t, p its pass rate. p(1 - p) is the variance
of a Bernoulli success and peaks at 0.25 (p = 0.5); t = 0.09 keeps 0.1 <= p <= 0.9.

Reason "low_learnability"; stats: learnability, pass_rate, threshold.
"""

from __future__ import annotations

from pydantic import Field

from rollstream.services.filter.chain import KEEP, CandidateGroup, Decision, Filter, FilterParams
from rollstream.services.filter.stats import pass_rate


class Learnability(Filter):
    """Drop groups with p(1 - p) below `threshold`."""

    name = "learnability"

    class Params(FilterParams):
        threshold: float = Field(0.09, ge=0, le=0.25)
        """Smallest kept p(1 - p)."""

    def apply(self, group: CandidateGroup) -> Decision:
        p = pass_rate(group.samples)
        value = p * (1.0 - p)
        if value >= self.params.threshold - 1e-12:  # 0.1 * 0.9 must pass t = 0.09
            return KEEP
        return Decision.drop_group(
            "low_learnability", learnability=value, pass_rate=p, threshold=self.params.threshold
        )
