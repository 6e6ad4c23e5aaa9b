"""Format reward (F5): `match_value` when the completion matches a regex, else `miss_value`.

The R1-Zero default pattern wants `<think>...</think>` then `<answer>...</answer>`. Pure.
"""

from __future__ import annotations

from rollstream.schemas import Rollout
from rollstream.services.runtime.regex import MatchMode, Pattern, matcher
from rollstream.services.scorer.reward import RewardParams, parse_params

R1_FORMAT = r"^<think>\n.*?\n</think>\n<answer>\n.*?\n</answer>$"


class FormatMatch:
    """`match_value` iff `pattern` matches the completion (per `mode`), else `miss_value`."""

    name = "format"
    inline = True

    class Params(RewardParams):
        pattern: Pattern = R1_FORMAT
        """Regular expression (Python syntax)."""
        mode: MatchMode = "fullmatch"
        """fullmatch: the whole completion must match; search: anywhere in it."""
        dotall: bool = True
        """`.` also matches newlines."""
        match_value: float = 1.0
        """Reward when it matches."""
        miss_value: float = 0.0
        """Reward when it does not."""

    def __init__(self, **params: object) -> None:
        self.params = parse_params(self.Params, dict(params), self.name)
        self._match = matcher(self.params.pattern, self.params.mode, self.params.dotall)

    def score(self, rollout: Rollout) -> float:
        p = self.params
        return p.match_value if self._match(rollout.completion) else p.miss_value
