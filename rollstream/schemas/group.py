"""Groups: all samples of one prompt, kept (with advantages) or dropped (with a reason)."""

from __future__ import annotations

from typing import Annotated

import msgspec

from rollstream.schemas._base import Message, check_finite
from rollstream.schemas.rollout import ScoredRollout


class GroupStats(msgspec.Struct, kw_only=True):
    """Numbers about one group, computed by the filter."""

    reward_mean: float
    reward_std: float
    pass_rate: Annotated[float, msgspec.Meta(ge=0, le=1)]
    generated: Annotated[int, msgspec.Meta(ge=0)]  # samples that arrived
    kept: Annotated[int, msgspec.Meta(ge=0)]  # samples in `samples`
    assembly_s: float = 0.0  # first sample seen -> group complete
    estimator: str = "grpo"


class Group(Message, tag="Group", kw_only=True):  # type: ignore[call-arg]
    """filter -> replay. The kept samples of one prompt and their advantages. Key: group_id.

    len(advantages) == len(samples); one advantage per sample, shared by all its tokens."""

    group_id: str
    task_id: str
    task: str
    samples: list[ScoredRollout]
    advantages: list[float]
    stats: GroupStats
    policy_version: int  # oldest policy version among the samples
    produced_at: float

    def __post_init__(self) -> None:
        if len(self.advantages) != len(self.samples):
            raise ValueError(f"{len(self.advantages)} advantages for {len(self.samples)} samples")
        check_finite("advantages", *self.advantages)


class DropRecord(Message, tag="DropRecord", kw_only=True):  # type: ignore[call-arg]
    """filter -> (inspection, feed). Samples that will never be trained, and why. Key: group_id.

    `scope` is "group" when the whole group was dropped, "samples" when only `rollout_ids`
    were removed from a group that was otherwise kept. `stats` holds the numbers that decided
    it (e.g. {"reward_std": 0.0, "pass_rate": 1.0})."""

    group_id: str
    task_id: str
    reason: str
    filter: str
    scope: str = "group"
    rollout_ids: list[str]
    stats: dict[str, float] = {}
    policy_version: int = 0
    produced_at: float
