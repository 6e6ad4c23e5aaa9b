"""Evaluator metrics (names `rollstream_evaluator_*`), for the service and the metrics catalog."""

from __future__ import annotations

from rollstream.services.evaluator.service import EvaluatorMetrics
from rollstream.services.runtime.metrics import StageMetrics


def register(m: StageMetrics) -> EvaluatorMetrics:
    """Every metric this stage exports, in `m`'s registry."""
    return EvaluatorMetrics(m)
