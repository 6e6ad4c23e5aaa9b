"""Builders of Rollouts for the scorer tests (pytest puts this folder on sys.path)."""

from __future__ import annotations

from typing import Any

from rollstream.schemas import Rollout, Sampling, pack_floats, pack_ids


def rollout(
    completion: str = "",
    *,
    answer: str | None = None,
    task: str = "toy",
    tokens: int | None = None,
    reference: dict[str, Any] | None = None,
    index: int = 0,
) -> Rollout:
    """One Rollout; `tokens` sets the completion length in tokens (default: one per word)."""
    count = len(completion.split()) if tokens is None else tokens
    return Rollout(
        rollout_id=f"g0/{index}",
        group_id="g0",
        task_id="t0",
        task=task,
        sample_index=index,
        group_size=4,
        prompt="question",
        completion=completion,
        prompt_ids=pack_ids([1, 2]),
        completion_ids=pack_ids(list(range(count))),
        logprobs=pack_floats([-1.0] * count),
        finish_reason="stop",
        policy_version=0,
        sampling=Sampling(n=4, temperature=1.0),
        answer=answer,
        reference=reference or {},
        produced_at=0.0,
    )
