"""What enters the pipeline: prompts, their sampling overrides, and per-prompt statistics."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

from rollstream.schemas._base import Message

NonNeg = Annotated[float, msgspec.Meta(ge=0)]


class Sampling(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Sampling parameters. In a PromptTask every field is an optional override (None = the
    generator's current setting); in a Rollout every field holds the value actually used.

    `regex`, `choice` and `json_schema` are structured-output constraints (at most one)."""

    n: Annotated[int, msgspec.Meta(ge=1, le=4096)] | None = None
    temperature: Annotated[float, msgspec.Meta(ge=0, le=10)] | None = None
    top_p: Annotated[float, msgspec.Meta(gt=0, le=1)] | None = None
    top_k: Annotated[int, msgspec.Meta(ge=-1)] | None = None
    max_tokens: Annotated[int, msgspec.Meta(ge=1)] | None = None
    stop: list[str] | None = None
    seed: int | None = None
    regex: str | None = None
    choice: list[str] | None = None
    json_schema: str | None = None


class PromptTask(Message, tag="PromptTask", kw_only=True):  # type: ignore[call-arg]
    """feed -> generator. One prompt to roll out `n` times. Key: task_id.

    `task` names the task family or dataset; `answer` and `reference` are what the scorer
    needs to check a completion (the generator copies them into every Rollout)."""

    task_id: str
    task: str
    prompt: str
    n: Annotated[int, msgspec.Meta(ge=1, le=4096)]
    answer: str | None = None
    reference: dict[str, Any] = {}
    sampling: Sampling | None = None
    template: str | None = None  # "plain" | "chat" | None (the generator's default)
    epoch: int = 0
    produced_at: float


class PromptStats(Message, tag="PromptStats", kw_only=True):  # type: ignore[call-arg]
    """filter -> feed. Running pass rate of one prompt, after each of its groups. Key: task_id.

    `pass_rate` is an exponential moving average of group pass rates; `recent` the last few
    group pass rates, newest last (GRESO counts trailing all-correct / all-wrong groups)."""

    task_id: str
    task: str
    pass_rate: Annotated[float, msgspec.Meta(ge=0, le=1)]
    last_pass_rate: Annotated[float, msgspec.Meta(ge=0, le=1)]
    groups: Annotated[int, msgspec.Meta(ge=0)]
    recent: list[float] = []
    policy_version: int = 0
    produced_at: float
