"""Truncated / overlong filter (DAPO overlong filtering, Yu et al. 2025): samples whose
generation stopped on the length limit (`finish_reason == "length"`) carry no verdict on the
answer; drop them (scope=samples, the DAPO choice) or drop the group (scope=group).

Reason "truncated"; stats: count, fraction (of the samples this filter saw).
"""

from __future__ import annotations

from pydantic import Field

from rollstream.services.filter.chain import CandidateGroup, Decision, Filter
from rollstream.services.filter.scope import ScopedParams, decide


class Truncated(Filter):
    """Drop samples (or the group) that hit the length limit."""

    name = "truncated"

    class Params(ScopedParams):
        finish_reasons: list[str] = Field(default_factory=lambda: ["length"], min_length=1)
        """finish_reason values that count as truncated (add "abort" to drop aborted ones)."""

    def apply(self, group: CandidateGroup) -> Decision:
        reasons = set(self.params.finish_reasons)
        bad = [s.rollout.rollout_id for s in group.samples if s.rollout.finish_reason in reasons]
        return decide(group, bad, self.params, "truncated")
