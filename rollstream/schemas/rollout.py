"""Rollouts: one sampled completion per message, raw (generator) and scored (scorer)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
import numpy as np

from rollstream.schemas._base import (
    FLOAT32,
    INT32,
    Message,
    check_finite,
    check_packed,
    floats,
    ids,
)
from rollstream.schemas.prompt import Sampling

FinishReason = Literal["stop", "length", "abort"]


class Rollout(Message, tag="Rollout", kw_only=True):  # type: ignore[call-arg]
    """generator -> scorer. One sample of a group. Key: group_id.

    Token ids are packed little-endian int32, `logprobs` packed float32: the behaviour
    log-probability of each completion token under the distribution actually sampled from
    (after temperature / top-p / top-k / constraints). len(logprobs) == len(completion_ids).
    `policy_version` is the weight version that produced every token of this sample."""

    rollout_id: str
    group_id: str
    task_id: str
    task: str
    sample_index: Annotated[int, msgspec.Meta(ge=0)]
    group_size: Annotated[int, msgspec.Meta(ge=1)]
    prompt: str
    completion: str
    prompt_ids: bytes
    completion_ids: bytes
    logprobs: bytes
    finish_reason: FinishReason
    policy_version: Annotated[int, msgspec.Meta(ge=0)]
    sampling: Sampling
    answer: str | None = None
    reference: dict[str, Any] = {}
    generator_id: str = ""
    queued_s: float = 0.0  # prompt consumed -> generation started
    generate_s: float = 0.0  # generation wall time of the batch this sample was in
    produced_at: float

    def __post_init__(self) -> None:
        # Shapes are checked where the record is decoded, so a forged or truncated array is a
        # dead letter at the first consumer, never a crash of the learner's batching.
        check_packed("prompt_ids", self.prompt_ids, INT32)
        n = check_packed("completion_ids", self.completion_ids, INT32)
        m = check_packed("logprobs", self.logprobs, FLOAT32)
        if n != m:
            raise ValueError(f"{n} completion tokens but {m} logprobs")
        if m and not np.isfinite(floats(self.logprobs)).all():
            raise ValueError("`logprobs` holds NaN or infinite values")

    def prompt_tokens(self):  # -> np.ndarray (P,) int32, a view
        return ids(self.prompt_ids)

    def completion_tokens(self):  # -> np.ndarray (T,) int32, a view
        return ids(self.completion_ids)

    def token_logprobs(self):  # -> np.ndarray (T,) float32, a view
        return floats(self.logprobs)


class ScoredRollout(Message, tag="ScoredRollout", kw_only=True):  # type: ignore[call-arg]
    """scorer -> filter. A Rollout with its reward. Key: group_id.

    `reward` is the weighted sum of `rewards` (one entry per reward function, unweighted);
    `correct` is the verifiable outcome when a checker gave one (pass-rate statistics use it,
    else reward > 0.5). `timed_out` names reward functions that hit their time limit and got
    their fallback value."""

    rollout: Rollout
    reward: float
    rewards: dict[str, float] = {}
    correct: bool | None = None
    timed_out: list[str] = []
    score_s: Annotated[float, msgspec.Meta(ge=0)] = 0.0
    produced_at: float

    def __post_init__(self) -> None:
        check_finite("reward", self.reward)
        for name, value in self.rewards.items():
            check_finite(f"rewards.{name}", value)
