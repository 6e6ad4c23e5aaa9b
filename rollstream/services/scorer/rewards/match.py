"""Exact-match and numeric-match rewards: 1.0 when the completion's answer equals the reference.

Both compare `extract(completion, params.extract)` with `rollout.answer` (see extract.py). A
rollout without an answer is an error (it goes to the dead-letter topic): these rewards cannot
score it. Pure; no I/O.
"""

from __future__ import annotations

import math

from pydantic import Field

from rollstream.schemas import Rollout
from rollstream.services.scorer.extract import Extraction, extract, last_number, parse_number
from rollstream.services.scorer.reward import RewardParams, parse_params, require_answer


def _normalise(text: str, case_sensitive: bool) -> str:
    text = " ".join(text.split())
    return text if case_sensitive else text.casefold()


class ExactMatch:
    """1.0 iff the extracted answer equals the reference after collapsing whitespace (and
    case-folding unless `case_sensitive`), else 0.0."""

    name = "exact_match"
    checker = True
    inline = True

    class Params(RewardParams):
        extract: Extraction = "auto"
        """Where the answer is in the completion: auto, boxed, answer_tag, hash, first_line,
        last_line, last_number, none (the whole completion)."""
        case_sensitive: bool = False
        """Compare letters exactly instead of case-folded."""

    def __init__(self, **params: object) -> None:
        self.params = parse_params(self.Params, dict(params), self.name)

    def score(self, rollout: Rollout) -> float:
        gold = require_answer(rollout, self.name)
        found = extract(rollout.completion, self.params.extract)
        if found is None:
            return 0.0
        cs = self.params.case_sensitive
        return 1.0 if _normalise(found, cs) == _normalise(gold, cs) else 0.0


class NumericMatch:
    """1.0 iff the completion's number is within tolerance of the reference number:
    |a - b| <= max(rel_tol * max(|a|, |b|), abs_tol) (math.isclose), else 0.0.

    The number is read from the extracted answer, or failing that from the last number in it.
    A reference that is not a number is an error."""

    name = "numeric_match"
    checker = True
    inline = True

    class Params(RewardParams):
        extract: Extraction = "auto"
        """Where the answer is in the completion (see exact_match)."""
        rel_tol: float = Field(1e-6, ge=0, le=1)
        """Relative tolerance."""
        abs_tol: float = Field(1e-6, ge=0)
        """Absolute tolerance."""

    def __init__(self, **params: object) -> None:
        self.params = parse_params(self.Params, dict(params), self.name)

    def score(self, rollout: Rollout) -> float:
        gold_text = require_answer(rollout, self.name)
        gold = parse_number(gold_text)
        if gold is None:
            raise ValueError(f"{self.name}: reference answer {gold_text!r} is not a number")
        found = extract(rollout.completion, self.params.extract)
        value = parse_number(found)
        if value is None and found is not None:
            value = parse_number(last_number(found))
        if value is None:
            return 0.0
        close = math.isclose(value, gold, rel_tol=self.params.rel_tol, abs_tol=self.params.abs_tol)
        return 1.0 if close else 0.0
