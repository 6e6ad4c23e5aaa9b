"""Math-answer reward via Hugging Face Math-Verify: 1.0 when the completion's final answer is
mathematically equal to the reference (fractions, intervals, sets, expressions...), else 0.0.

`verify(gold, answer)` — the order matters (Math-Verify is asymmetric). The reference is parsed
as LaTeX math (`$...$` added when absent). Math-Verify's own signal-based timeouts only work on
the main thread, so they are switched off here; the scorer's per-reward timeout bounds the call
instead. CPU-bound: runs on the scorer's thread pool. math_verify (and sympy) are imported on
first use.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from rollstream.schemas import Rollout
from rollstream.services.scorer.extract import after_hash
from rollstream.services.scorer.reward import RewardParams, parse_params, require_answer


class MathVerify:
    """1.0 iff Math-Verify finds the completion's answer equal to the reference answer."""

    name = "math_verify"
    checker = True

    class Params(RewardParams):
        float_rounding: int = Field(6, ge=0, le=15)
        """Decimal places kept when comparing floats."""
        strict: bool = True
        """Math-Verify's strict mode (variables and functions must match exactly)."""

    def __init__(self, **params: object) -> None:
        self.params = parse_params(self.Params, dict(params), self.name)
        self._gold_cache: dict[str, Any] = {}

    def _gold(self, answer: str) -> Any:
        gold = self._gold_cache.get(answer)
        if gold is None:
            from math_verify import parse

            if "####" in answer:  # a GSM8K reference: worked steps, then `#### 72`
                answer = (after_hash(answer) or "").replace(",", "")
            text = answer if "$" in answer or "\\boxed" in answer else f"${answer}$"
            gold = parse(text, parsing_timeout=None) or parse(answer, parsing_timeout=None)
            if not gold:
                raise ValueError(f"{self.name}: cannot parse reference answer {answer!r}")
            if len(self._gold_cache) > 4096:
                self._gold_cache.clear()
            self._gold_cache[answer] = gold
        return gold

    def score(self, rollout: Rollout) -> float:
        from math_verify import parse, verify

        gold = self._gold(require_answer(rollout, self.name))
        answer = parse(rollout.completion, parsing_timeout=None)
        if not answer:
            return 0.0
        ok = verify(
            gold,
            answer,
            float_rounding=self.params.float_rounding,
            strict=self.params.strict,
            timeout_seconds=None,
        )
        return 1.0 if ok else 0.0
