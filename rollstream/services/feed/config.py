"""Feed settings (the `feed:` block of a run file). Pure config; no I/O."""

from __future__ import annotations

from typing import Any, Literal

import msgspec
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from rollstream.schemas import Sampling
from rollstream.services.runtime.knobs import check_knobs

# FeedConfig fields that `rollstream control feed KEY=VALUE` may change while the feed runs
LIVE_KNOBS = ("n", "sampling", "template", "max_ahead", "poll_s")


class TaskEntry(BaseModel):
    """One entry of the built-in task mixture."""

    model_config = ConfigDict(extra="forbid")

    task: str = Field(min_length=1)
    """Task name (`add`, `sort`, `reverse`, `count`) or a user task's dotted path
    (`my_tasks.parity`, see rollstream/services/tasks)."""
    difficulty: int | None = Field(None, ge=1)
    """Difficulty of the drawn items; None = the task's default."""
    weight: float = Field(1.0, ge=0)
    """Relative share of this entry in the pool."""


class DatasetSpec(BaseModel):
    """A JSONL or Parquet file of prompts, and how its rows map onto PromptTasks."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field(min_length=1)
    """File to read: `.jsonl` / `.ndjson` (one JSON object per line) or `.parquet`
    (needs pyarrow). `~` is expanded; relative paths are relative to the working directory."""
    format: Literal["auto", "jsonl", "parquet"] = "auto"
    """File format; `auto` picks by the file's suffix."""
    task: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_\-.:]+$")
    """Name stamped on every PromptTask of this file (PromptTask.task). The scorer chooses the
    reward by it; task ids are `<task>-<hash>` (or `<task>-<id>` with `id_field`)."""
    prompt_field: str = "prompt"
    """Row field holding the prompt text (a dotted path reaches into nested objects:
    `question.text`)."""
    answer_field: str | None = "answer"
    """Row field holding the reference answer (stringified); None = rows carry no answer."""
    id_field: str | None = None
    """Row field holding a stable id; None = an id hashed from prompt and answer, so the same
    row gets the same task_id on every run and restart."""
    reference: list[str] | Literal["rest"] = []
    """Row fields copied into PromptTask.reference for the scorer: a list of field names
    (dotted paths allowed; the key is the path), or `rest` for every top-level field other
    than prompt, answer and id."""
    limit: int | None = Field(None, ge=1)
    """Read only the first `limit` rows."""


class CurriculumSpec(BaseModel):
    """Which curriculum policy decides, per candidate prompt, to send or skip it."""

    model_config = ConfigDict(extra="forbid")

    policy: str = Field("epochs", min_length=1)
    """`epochs` (never skips), `band` (skip prompts whose running pass rate left
    [lo, hi]), `greso` (probabilistic skip of prompts predicted to give zero-variance groups),
    or a dotted path `pkg.module:factory` / `pkg.module.factory` of your own policy."""
    params: dict[str, Any] = {}
    """Keyword arguments of the policy (see rollstream/services/feed/curriculum.py for each
    built-in's parameters; unknown ones are an error)."""


class FeedConfig(BaseModel):
    """What the feed asks, how often, and how far it may run ahead of the generators."""

    model_config = ConfigDict(extra="forbid")

    tasks: list[TaskEntry] | None = None
    """Built-in task mixture. None = the default mixture when no dataset is given, nothing
    when `datasets` is set; set both to mix tasks and datasets in one pool."""
    pool_size: int = Field(2000, ge=1, le=10_000_000)
    """Items drawn from the task mixture into the pool that every epoch walks through
    (duplicates are removed, so the pool may be a little smaller)."""
    datasets: list[DatasetSpec] = []
    """Prompt files; their rows join the pool (loaded into memory at start)."""
    n: int = Field(8, ge=1, le=4096)
    """Group size: completions the generator samples per prompt (PromptTask.n)."""
    sampling: dict[str, Any] = {}
    """Sampling overrides stamped on every PromptTask, with schemas.Sampling's keys
    (temperature, top_p, top_k, max_tokens, stop, seed, regex, choice, json_schema);
    empty = the generator's own settings. The group size is `n`, not a key here."""
    template: Literal["plain", "chat"] | None = None
    """Prompt template the generator applies; None = the generator's default."""
    epochs: int | None = Field(None, ge=1)
    """Passes over the pool; None = forever. After the last one the feed exits with 0."""
    shuffle: bool = True
    """Shuffle the pool's order every epoch (differently per epoch, the same for a seed)."""
    seed: int | None = None
    """Seed of the pool and the shuffles; None = the run's seed."""
    max_ahead: int = Field(64, ge=1, le=1_000_000)
    """Most prompts on `prompts` that the generator group has not committed yet; the feed
    pauses at this bound and resumes as the generators commit."""
    poll_s: float = Field(0.5, gt=0, le=10)
    """Seconds between measurements of the generator group's committed offsets."""
    lead_polls: float = Field(2.0, ge=0, le=100)
    """The run-ahead bound also grows to this many `poll_s` of the generators' measured
    consumption (prompts committed a second), so that fast generators never wait for prompts:
    a fixed bound lets at most `max_ahead` prompts out per `poll_s`. 0 = `max_ahead` only."""
    consumer_group: str = Field("generator", min_length=1)
    """Consumer group whose committed offsets on `prompts` count as consumed (namespaced)."""
    resume: bool = True
    """On restart, continue after the last prompt this feed (same pool and seed) published,
    read back from the tail of `prompts`; False = start again at epoch 0."""
    curriculum: CurriculumSpec = CurriculumSpec()
    """Curriculum policy and its parameters."""

    @field_validator("sampling")
    @classmethod
    def _valid_sampling(cls, value: dict[str, Any]) -> dict[str, Any]:
        if "n" in value:
            raise ValueError("set the group size with feed.n, not feed.sampling.n")
        unknown = sorted(set(value) - set(Sampling.__struct_fields__))
        if unknown:
            known = ", ".join(f for f in Sampling.__struct_fields__ if f != "n")
            raise ValueError(f"unknown sampling key(s) {unknown}; known: {known}")
        try:
            msgspec.convert(value, Sampling)
        except msgspec.ValidationError as exc:
            raise ValueError(str(exc)) from None
        return value

    @model_validator(mode="after")
    def _some_source(self) -> FeedConfig:
        if self.tasks is not None and not self.tasks and not self.datasets:
            raise ValueError("tasks is empty and no datasets are given: nothing to feed")
        return self

    def sampling_overrides(self) -> Sampling | None:
        """The overrides as the wire struct, or None when there are none."""
        return msgspec.convert(self.sampling, Sampling) if self.sampling else None


def validate_control(params: dict[str, Any], base: FeedConfig | None = None) -> FeedConfig:
    """`base` (defaults if None) with live knobs `params`; ValueError naming an unknown knob
    or a bad value. Used by the feed and by `rollstream control feed` before it publishes."""
    return check_knobs(FeedConfig, base, params, LIVE_KNOBS)
