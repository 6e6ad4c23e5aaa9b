"""The wire contract: one msgspec Struct per message, and the topic registry.

Imports only the standard library, msgspec and numpy (tests/unit/test_schema_imports.py
proves it), so any tool can read the bus without pulling in torch or faust.
"""

from rollstream.schemas._base import (
    FLOAT32,
    INT32,
    Message,
    SchemaError,
    decode,
    decode_any,
    encode,
    envelope,
    floats,
    ids,
    pack_floats,
    pack_ids,
    to_builtins,
)
from rollstream.schemas.control import ControlUpdate, EvalResult, WeightUpdate
from rollstream.schemas.deadletter import DeadLetter
from rollstream.schemas.group import DropRecord, Group, GroupStats
from rollstream.schemas.prompt import PromptStats, PromptTask, Sampling
from rollstream.schemas.rollout import Rollout, ScoredRollout
from rollstream.schemas.train import BatchItem, Feedback, TrainBatch

MESSAGE_TYPES: dict[str, type[Message]] = {
    t.__name__: t
    for t in (
        PromptTask,
        Rollout,
        ScoredRollout,
        Group,
        DropRecord,
        PromptStats,
        TrainBatch,
        Feedback,
        WeightUpdate,
        ControlUpdate,
        EvalResult,
        DeadLetter,
    )
}

__all__ = [
    "FLOAT32",
    "INT32",
    "MESSAGE_TYPES",
    "BatchItem",
    "ControlUpdate",
    "DeadLetter",
    "DropRecord",
    "EvalResult",
    "Feedback",
    "Group",
    "GroupStats",
    "Message",
    "PromptStats",
    "PromptTask",
    "Rollout",
    "Sampling",
    "SchemaError",
    "ScoredRollout",
    "TrainBatch",
    "WeightUpdate",
    "decode",
    "decode_any",
    "encode",
    "envelope",
    "floats",
    "ids",
    "pack_floats",
    "pack_ids",
    "to_builtins",
]
