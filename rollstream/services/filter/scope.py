"""Shared rule for per-sample filters that can also act on the whole group."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from rollstream.services.filter.chain import KEEP, CandidateGroup, Decision, FilterParams


class ScopedParams(FilterParams):
    """`scope` and `max_fraction`, shared by the truncated and format filters."""

    scope: Literal["samples", "group"] = "samples"
    """samples: drop only the offending samples; group: drop the whole group when more than
    `max_fraction` of its samples offend."""
    max_fraction: float = Field(0.0, ge=0, le=1)
    """With scope=group: the largest offending fraction that still keeps the group."""


def decide(
    group: CandidateGroup, bad: list[str], params: ScopedParams, reason: str, **stats: float
) -> Decision:
    """Drop `bad` samples, or the group, per `params`; stats get count and fraction."""
    if not bad:
        return KEEP
    fraction = len(bad) / len(group.samples)
    numbers = {"count": float(len(bad)), "fraction": fraction, **stats}
    if params.scope == "samples":
        return Decision.drop_samples(bad, reason, **numbers)
    if fraction > params.max_fraction:
        return Decision.drop_group(reason, **numbers, max_fraction=params.max_fraction)
    return KEEP
