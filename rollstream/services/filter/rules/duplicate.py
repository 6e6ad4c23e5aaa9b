"""Duplicate filter (rollout level): identical completions within a group
waste update compute; keep the first of each and drop the rest.

Reason "duplicate"; stats: count (dropped), distinct (completions left).
"""

from __future__ import annotations

from rollstream.services.filter.chain import KEEP, CandidateGroup, Decision, Filter, FilterParams


class Duplicate(Filter):
    """Drop later copies of a completion already seen in the group."""

    name = "duplicate"

    class Params(FilterParams):
        normalise_whitespace: bool = True
        """Treat completions that differ only in spacing as equal."""
        case_sensitive: bool = True
        """Treat completions that differ only in letter case as different."""

    def _key(self, text: str) -> str:
        if self.params.normalise_whitespace:
            text = " ".join(text.split())
        return text if self.params.case_sensitive else text.casefold()

    def apply(self, group: CandidateGroup) -> Decision:
        seen: set[str] = set()
        dupes = []
        for s in group.samples:
            key = self._key(s.rollout.completion)
            if key in seen:
                dupes.append(s.rollout.rollout_id)
            seen.add(key)
        if not dupes:
            return KEEP
        return Decision.drop_samples(dupes, "duplicate", count=len(dupes), distinct=len(seen))
