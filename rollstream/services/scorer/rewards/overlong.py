"""DAPO soft overlong punishment (DAPO, Yu et al. 2025, Eq. 13), scaled by `penalty_factor`:

    R(L) = 0                                   if L <= max_len - cache
         = ((max_len - cache) - L) / cache     if max_len - cache < L <= max_len
         = -1                                  if L > max_len

L is the number of completion tokens. Add it to the correctness reward. Pure.
"""

from __future__ import annotations

from pydantic import Field, model_validator

from rollstream.schemas import Rollout
from rollstream.services.scorer.reward import RewardParams, parse_params
from rollstream.services.scorer.rewards.length import completion_length


def overlong_penalty(length: int, max_len: int, cache: int) -> float:
    """DAPO Eq. 13 for a completion of `length` tokens."""
    if length <= max_len - cache:
        return 0.0
    if length <= max_len:
        return ((max_len - cache) - length) / cache
    return -1.0


class SoftOverlong:
    """DAPO soft overlong punishment (see module docstring)."""

    name = "soft_overlong"
    inline = True

    class Params(RewardParams):
        max_len: int = Field(20480, ge=1)
        """L_max: the hard length budget in tokens (DAPO: 20,480)."""
        cache: int = Field(4096, ge=1)
        """L_cache: the soft band below max_len where the penalty ramps (DAPO: 4,096)."""
        penalty_factor: float = Field(1.0, ge=0)
        """Multiplies the penalty (verl's overlong_buffer.penalty_factor)."""

        @model_validator(mode="after")
        def _order(self) -> SoftOverlong.Params:
            if self.cache > self.max_len:
                raise ValueError("cache must not exceed max_len")
            return self

    def __init__(self, **params: object) -> None:
        self.params = parse_params(self.Params, dict(params), self.name)

    def score(self, rollout: Rollout) -> float:
        p = self.params
        length = completion_length(rollout, "tokens")
        return p.penalty_factor * overlong_penalty(length, p.max_len, p.cache)
