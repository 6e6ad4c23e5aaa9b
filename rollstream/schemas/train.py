"""Training data and the learner's answer: batches (replay -> learner) and feedback."""

from __future__ import annotations

from typing import Annotated

import msgspec

from rollstream.schemas._base import Message, check_finite
from rollstream.schemas.group import Group


class BatchItem(msgspec.Struct, kw_only=True):
    """One group in a batch. `weight` is the importance weight that undoes prioritised
    sampling (1.0 for FIFO); `uses` counts how often replay has handed this group out,
    this time included; `replayed` is true when uses > 1 or it came from success replay."""

    group: Group
    weight: float = 1.0
    uses: Annotated[int, msgspec.Meta(ge=1)] = 1
    replayed: bool = False

    def __post_init__(self) -> None:
        check_finite("weight", self.weight)


class TrainBatch(Message, tag="TrainBatch", kw_only=True):  # type: ignore[call-arg]
    """replay -> learner. Emitted only against a credit the learner granted. Key: learner_id.

    `seq` counts batches replay has sent to this learner (1, 2, ...); the learner skips a
    batch_id it has already trained (ids go into its checkpoint)."""

    batch_id: str
    learner_id: str
    seq: Annotated[int, msgspec.Meta(ge=1)]
    items: list[BatchItem]
    learner_version: int  # the learner version replay knew when it built the batch
    produced_at: float


class Feedback(Message, tag="Feedback", kw_only=True):  # type: ignore[call-arg]
    """learner -> replay. Demand and results. Key: learner_id.

    `credits_total` is cumulative (all credits ever granted by this learner), so a duplicate
    or lost-then-resent Feedback never over-grants: replay may have sent at most
    credits_total batches. `trained_batches` / `trained_groups` are ids trained since the last
    feedback; `priorities` maps group_id -> new priority (for feedback-prioritised replay)."""

    learner_id: str
    credits_total: Annotated[int, msgspec.Meta(ge=0)]
    learner_version: Annotated[int, msgspec.Meta(ge=0)]
    step: Annotated[int, msgspec.Meta(ge=0)]
    trained_batches: list[str] = []
    trained_groups: list[str] = []
    trained_rollouts: Annotated[int, msgspec.Meta(ge=0)] = 0
    priorities: dict[str, float] = {}
    produced_at: float

    def __post_init__(self) -> None:
        check_finite("priorities", *self.priorities.values())
