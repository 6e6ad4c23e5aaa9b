"""Format filter: drop samples whose completion does not match a regex (or
the group, with scope=group).

Reason "format"; stats: count, fraction.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import field_validator

from rollstream.services.filter.chain import CandidateGroup, Decision, Filter
from rollstream.services.filter.scope import ScopedParams, decide


class FormatFilter(Filter):
    """Drop samples (or the group) that do not match `pattern`."""

    name = "format"

    class Params(ScopedParams):
        pattern: str
        """Regular expression (Python syntax) a kept completion must match."""
        mode: Literal["fullmatch", "search"] = "search"
        """fullmatch: the whole completion; search: anywhere in it."""
        dotall: bool = True
        """`.` also matches newlines."""

        @field_validator("pattern")
        @classmethod
        def _compiles(cls, value: str) -> str:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"not a valid regular expression: {exc}") from None
            return value

    def apply(self, group: CandidateGroup) -> Decision:
        p = self.params
        regex = re.compile(p.pattern, re.DOTALL if p.dotall else 0)  # re caches compiled patterns
        match = regex.fullmatch if p.mode == "fullmatch" else regex.search
        bad = [s.rollout.rollout_id for s in group.samples if not match(s.rollout.completion)]
        return decide(group, bad, p, "format")
