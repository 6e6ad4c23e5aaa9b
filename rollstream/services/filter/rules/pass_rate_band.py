"""Pass-rate band (Bae et al. 2025, "Online Difficulty Filtering for Reasoning Oriented RL"): keep
a group only when its pass rate p lies in [lo, hi] (closed). AReaL's boba recipe uses lo=0.05,
hi=0.95.

Reasons "pass_rate_below_band" / "pass_rate_above_band"; stats: pass_rate, lo, hi.
"""

from __future__ import annotations

from pydantic import Field, model_validator

from rollstream.services.filter.chain import KEEP, CandidateGroup, Decision, Filter, FilterParams
from rollstream.services.filter.stats import pass_rate


class PassRateBand(Filter):
    """Drop groups whose pass rate is outside [lo, hi]."""

    name = "pass_rate_band"

    class Params(FilterParams):
        lo: float = Field(0.0, ge=0, le=1)
        """Lowest kept pass rate."""
        hi: float = Field(1.0, ge=0, le=1)
        """Highest kept pass rate."""

        @model_validator(mode="after")
        def _ordered(self) -> PassRateBand.Params:
            if self.lo > self.hi:
                raise ValueError("lo must not exceed hi")
            return self

    def apply(self, group: CandidateGroup) -> Decision:
        p = pass_rate(group.samples)
        lo, hi = self.params.lo, self.params.hi
        if p < lo:
            return Decision.drop_group("pass_rate_below_band", pass_rate=p, lo=lo, hi=hi)
        if p > hi:
            return Decision.drop_group("pass_rate_above_band", pass_rate=p, lo=lo, hi=hi)
        return KEEP
