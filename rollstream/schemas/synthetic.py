"""Synthetic Rollouts, Groups and TrainBatches with placeholder text, for tests and benchmarks.

Not part of the wire contract: only builders of its messages from given token ids, with the
fields nobody reads in a test filled with fixed values (no clocks: produced_at is 0.0).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from rollstream.schemas._base import pack_floats, pack_ids
from rollstream.schemas.group import Group, GroupStats
from rollstream.schemas.prompt import Sampling
from rollstream.schemas.rollout import FinishReason, Rollout, ScoredRollout
from rollstream.schemas.train import BatchItem, TrainBatch


def scored(
    group_id: str,
    index: int,
    prompt_ids: Iterable[int],
    completion_ids: Sequence[int],
    *,
    group_size: int,
    logprobs: float | Iterable[float] = -1.0,
    reward: float = 0.0,
    correct: bool | None = None,
    task_id: str = "t",
    task: str = "toy",
    text: tuple[str, str] = ("p", "c"),
    finish_reason: FinishReason = "stop",
    policy_version: int = 0,
    temperature: float | None = None,
) -> ScoredRollout:
    """Sample `index` of group `group_id` (rollout id `<group_id>/<index>`), scored `reward`.
    `logprobs`: one per completion token, or one value for all of them; `text`: (prompt,
    completion) strings; `temperature` goes into its Sampling(n=group_size)."""
    if isinstance(logprobs, int | float):
        logprobs = [float(logprobs)] * len(completion_ids)
    r = Rollout(
        rollout_id=f"{group_id}/{index}",
        group_id=group_id,
        task_id=task_id,
        task=task,
        sample_index=index,
        group_size=group_size,
        prompt=text[0],
        completion=text[1],
        prompt_ids=pack_ids(prompt_ids),
        completion_ids=pack_ids(completion_ids),
        logprobs=pack_floats(logprobs),
        finish_reason=finish_reason,
        policy_version=policy_version,
        sampling=Sampling(n=group_size, temperature=temperature),
        produced_at=0.0,
    )
    return ScoredRollout(rollout=r, reward=reward, correct=correct, produced_at=0.0)


def group(
    group_id: str,
    samples: list[ScoredRollout],
    advantages: Iterable[float],
    *,
    reward_mean: float = 0.5,
    reward_std: float = 0.5,
    pass_rate: float = 0.5,
    estimator: str = "grpo",
    size: int | None = None,
    task_id: str = "t",
    task: str = "toy",
    policy_version: int = 0,
) -> Group:
    """A Group of `samples` with these advantages and stats; `size` samples were generated and
    kept (default: len(samples))."""
    size = len(samples) if size is None else size
    stats = GroupStats(
        reward_mean=reward_mean,
        reward_std=reward_std,
        pass_rate=pass_rate,
        generated=size,
        kept=size,
        estimator=estimator,
    )
    return Group(
        group_id=group_id,
        task_id=task_id,
        task=task,
        samples=samples,
        advantages=list(advantages),
        stats=stats,
        policy_version=policy_version,
        produced_at=0.0,
    )


def train_batch(
    groups: Iterable[Group],
    *,
    seq: int = 1,
    batch_id: str = "b1",
    learner_id: str = "learner",
    weights: Iterable[float] | None = None,
) -> TrainBatch:
    """A TrainBatch of these groups (importance weights 1.0 unless given), learner version 0."""
    groups = list(groups)
    weights = [1.0] * len(groups) if weights is None else list(weights)
    items = [BatchItem(group=g, weight=w) for g, w in zip(groups, weights, strict=True)]
    return TrainBatch(
        batch_id=batch_id,
        learner_id=learner_id,
        seq=seq,
        items=items,
        learner_version=0,
        produced_at=0.0,
    )
