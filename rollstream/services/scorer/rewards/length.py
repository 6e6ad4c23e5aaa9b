"""Linear length penalty: 0 up to `free` tokens (or characters), then falling linearly to
`-penalty` at `max_len` and staying there.

    r = -penalty * clip((L - free) / (max_len - free), 0, 1)

Pure; L is the number of completion tokens (`unit="tokens"`) or characters.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from rollstream.schemas import Rollout
from rollstream.services.scorer.reward import RewardParams, parse_params


def completion_length(rollout: Rollout, unit: Literal["tokens", "chars"]) -> int:
    """Completion length in tokens (from the packed ids) or in characters."""
    if unit == "chars":
        return len(rollout.completion)
    return len(rollout.completion_ids) // 4  # packed int32


class LengthPenalty:
    """Penalty that grows linearly with length past `free` (see module docstring)."""

    name = "length_penalty"
    inline = True

    class Params(RewardParams):
        free: int = Field(0, ge=0)
        """Length with no penalty."""
        max_len: int = Field(4096, ge=1)
        """Length at which the penalty reaches `-penalty`; must exceed `free`."""
        penalty: float = Field(1.0, ge=0)
        """Size of the full penalty."""
        unit: Literal["tokens", "chars"] = "tokens"
        """Count completion tokens or characters."""

        @model_validator(mode="after")
        def _order(self) -> LengthPenalty.Params:
            if self.max_len <= self.free:
                raise ValueError("max_len must be greater than free")
            return self

    def __init__(self, **params: object) -> None:
        self.params = parse_params(self.Params, dict(params), self.name)

    def score(self, rollout: Rollout) -> float:
        p = self.params
        length = completion_length(rollout, p.unit)
        frac = (length - p.free) / (p.max_len - p.free)
        return -p.penalty * min(1.0, max(0.0, frac))
