"""Stale filter (bounded staleness): drop samples produced by a policy more than `max_lag`
versions behind the learner's latest published version. Keeps everything while the learner's
version is unknown.

Reason "stale"; stats: count, max_lag (the bound), worst_lag (the largest lag dropped).
"""

from __future__ import annotations

from pydantic import Field

from rollstream.services.filter.chain import KEEP, CandidateGroup, Decision, Filter, FilterParams


class Stale(Filter):
    """Drop samples with learner_version - policy_version > max_lag."""

    name = "stale"

    class Params(FilterParams):
        max_lag: int = Field(4, ge=0)
        """Largest accepted policy-version lag."""

    def apply(self, group: CandidateGroup) -> Decision:
        if group.learner_version is None:
            return KEEP
        lags = {
            s.rollout.rollout_id: group.learner_version - s.rollout.policy_version
            for s in group.samples
        }
        stale = [rid for rid, lag in lags.items() if lag > self.params.max_lag]
        if not stale:
            return KEEP
        worst = max(lags[rid] for rid in stale)
        return Decision.drop_samples(
            stale, "stale", count=len(stale), max_lag=self.params.max_lag, worst_lag=worst
        )
