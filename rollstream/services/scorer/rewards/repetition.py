"""Repetition penalty (Yeo et al. 2025, "Demystifying Long Chain-of-Thought Reasoning in LLMs";
open-r1) over word n-grams:

    r = (1 - |unique n-grams| / |n-grams|) * max_penalty        (max_penalty <= 0)

Words are whitespace-separated (lower-cased); fewer than `ngram` words gives 0. Pure.
"""

from __future__ import annotations

from pydantic import Field

from rollstream.schemas import Rollout
from rollstream.services.scorer.reward import RewardParams, parse_params


def repetition_penalty(text: str, ngram: int, max_penalty: float) -> float:
    """Penalty for repeated word n-grams in `text` (see module docstring)."""
    words = text.lower().split()
    if len(words) < ngram:
        return 0.0
    grams = list(zip(*(words[i:] for i in range(ngram)), strict=False))
    scaling = 1.0 - len(set(grams)) / len(grams)
    return scaling * max_penalty


class RepetitionPenalty:
    """Word n-gram repetition penalty (see module docstring)."""

    name = "repetition_penalty"
    inline = True

    class Params(RewardParams):
        ngram: int = Field(3, ge=1, le=64)
        """n-gram size in words (open-r1 default 3)."""
        max_penalty: float = Field(-1.0, le=0)
        """Penalty when every n-gram repeats the first (open-r1 default -1.0)."""

    def __init__(self, **params: object) -> None:
        self.params = parse_params(self.Params, dict(params), self.name)

    def score(self, rollout: Rollout) -> float:
        return repetition_penalty(rollout.completion, self.params.ngram, self.params.max_penalty)
