"""Small numbers about a group of scored samples: correctness, pass rate, mean and spread.

Pure functions over lists; shared by the filters, the advantage estimators and the pass-rate
tracker so they all count "correct" the same way.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from rollstream.schemas import ScoredRollout


def is_correct(sample: ScoredRollout) -> bool:
    """The checker's verdict when there is one, else reward > 0.5 (the ScoredRollout contract)."""
    return sample.correct if sample.correct is not None else sample.reward > 0.5


def pass_rate(samples: Sequence[ScoredRollout]) -> float:
    """Fraction of correct samples (0.0 for an empty group)."""
    return sum(is_correct(s) for s in samples) / len(samples) if samples else 0.0


def mean(values: Sequence[float]) -> float:
    """Arithmetic mean (0.0 for no values)."""
    return math.fsum(values) / len(values) if values else 0.0


def pstd(values: Sequence[float]) -> float:
    """Population standard deviation (divides by n; 0.0 for fewer than two values)."""
    if len(values) < 2:
        return 0.0
    m = mean(values)
    return math.sqrt(math.fsum((v - m) ** 2 for v in values) / len(values))


def sample_std(values: Sequence[float]) -> float:
    """Sample standard deviation (divides by n - 1; 0.0 for fewer than two values)."""
    if len(values) < 2:
        return 0.0
    m = mean(values)
    return math.sqrt(math.fsum((v - m) ** 2 for v in values) / (len(values) - 1))
