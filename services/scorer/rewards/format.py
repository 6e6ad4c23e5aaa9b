"""Format reward (F5): `match_value` when the completion matches a regex, else `miss_value`.

The R1-Zero default pattern wants `<think>...</think>` then `<answer>...</answer>`. Pure.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import field_validator

from rollstream.schemas import Rollout
from rollstream.services.scorer.reward import RewardParams, parse_params

R1_FORMAT = r"^<think>\n.*?\n</think>\n<answer>\n.*?\n</answer>$"


class FormatMatch:
    """`match_value` iff `pattern` matches the completion (per `mode`), else `miss_value`."""

    name = "format"
    inline = True

    class Params(RewardParams):
        pattern: str = R1_FORMAT
        """Regular expression (Python syntax)."""
        mode: Literal["fullmatch", "search"] = "fullmatch"
        """fullmatch: the whole completion must match; search: anywhere in it."""
        dotall: bool = True
        """`.` also matches newlines."""
        match_value: float = 1.0
        """Reward when it matches."""
        miss_value: float = 0.0
        """Reward when it does not."""

        @field_validator("pattern")
        @classmethod
        def _compiles(cls, value: str) -> str:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"not a valid regular expression: {exc}") from None
            return value

    def __init__(self, **params: object) -> None:
        self.params = parse_params(self.Params, dict(params), self.name)
        regex = re.compile(self.params.pattern, re.DOTALL if self.params.dotall else 0)
        self._match = regex.fullmatch if self.params.mode == "fullmatch" else regex.search

    def score(self, rollout: Rollout) -> float:
        p = self.params
        return p.match_value if self._match(rollout.completion) else p.miss_value
