"""Format filter: drop samples whose completion does not match a regex (or
the group, with scope=group).

Reason "format"; stats: count, fraction.
"""

from __future__ import annotations

from rollstream.services.filter.chain import CandidateGroup, Decision, Filter
from rollstream.services.filter.scope import ScopedParams, decide
from rollstream.services.runtime.regex import MatchMode, Pattern, matcher


class FormatFilter(Filter):
    """Drop samples (or the group) that do not match `pattern`."""

    name = "format"

    class Params(ScopedParams):
        pattern: Pattern
        """Regular expression (Python syntax) a kept completion must match."""
        mode: MatchMode = "search"
        """fullmatch: the whole completion; search: anywhere in it."""
        dotall: bool = True
        """`.` also matches newlines."""

    def apply(self, group: CandidateGroup) -> Decision:
        p = self.params
        match = matcher(p.pattern, p.mode, p.dotall)  # re caches compiled patterns
        bad = [s.rollout.rollout_id for s in group.samples if not match(s.rollout.completion)]
        return decide(group, bad, p, "format")
