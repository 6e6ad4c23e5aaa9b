"""Replay policy settings (the `replay:` block of a run file). Pure config; no I/O."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

# knobs a ControlUpdate for stage "replay" may change while it runs
LIVE_KNOBS = (
    "beta",
    "fresh_fraction",
    "max_staleness",
    "batch_groups",
    "batch_tokens",
    "partial_after_s",
    "min_batch_groups",
)


class ReplayConfig(BaseModel):
    """What the learner trains on next, how often a group is reused, and how big a batch is."""

    model_config = ConfigDict(extra="forbid")

    policy: Literal["fifo", "prioritized"] = "fifo"
    """fifo: fully on-policy, each group handed out once in arrival order, weight 1.
    prioritized: groups drawn with probability priority^alpha / sum (sum tree)."""

    priority: Literal["advantage", "learnability", "feedback"] = "advantage"
    """Priority of a group under `prioritized`: `advantage` = mean |advantage| of its samples;
    `learnability` = p(1-p) of its pass rate; `feedback` = what the learner sends back by
    group_id (a new group starts at the largest priority seen so far, so it is drawn soon)."""

    capacity: int = Field(default=65536, ge=1)
    """Most groups held at once."""

    eviction: Literal["oldest", "lowest_priority"] = "oldest"
    """Which group leaves when a new one arrives at capacity (prioritized; the FIFO service
    stops reading instead). A group evicted before it was ever handed out is reported
    (reason "evicted"), never silently lost."""

    max_staleness: int = Field(default=4, ge=0)
    """Never hand out a group with learner_version - group.policy_version > max_staleness;
    such groups are removed and reported (reason "expired"). Set in a run file as
    `staleness.max_versions` (its old name there, `replay.max_staleness`, still works with a
    warning); the live knob keeps this name."""

    max_uses: int = Field(default=1, ge=1)
    """Reuse cap: a group leaves the buffer after it has been handed out this many times.
    fifo always uses 1."""

    fresh_fraction: float | None = Field(default=None, ge=0, le=1)
    """Share of each batch taken from groups never handed out before; the rest are re-used
    groups. None: no split, one pool drawn by priority alone. Either side fills from the
    other when it runs short."""

    alpha: float = Field(default=1.0, ge=0)
    """Priority exponent: a group is drawn with probability p^alpha / sum(p^alpha)."""

    beta: float = Field(default=0.4, ge=0, le=1)
    """Importance-weight exponent: w = (N P(i))^-beta / max w (1 undoes the bias fully)."""

    priority_eps: float = Field(default=1e-3, gt=0)
    """Added to every priority so that no group has zero chance."""

    batch_groups: int = Field(default=8, ge=1)
    """Groups per batch when `batch_tokens` is not set."""

    batch_tokens: int | None = Field(default=None, ge=1)
    """Token budget per batch (prompt + completion tokens of every sample); groups are added
    while the next one fits. A single group larger than the budget is sent alone."""

    max_batch_groups: int = Field(default=1024, ge=1)
    """Upper bound on groups per batch under a token budget."""

    partial_after_s: float | None = Field(default=10.0, gt=0)
    """A batch goes out only when it is full (`batch_groups` groups, or `batch_tokens` tokens)
    unless the oldest group has waited this long; then what there is goes out. None: full
    batches only. Handing out whatever is there as soon as the learner asks halved the
    learning per step of the default run (6-8 groups a step instead of 16; RESULTS.md)."""

    min_batch_groups: int | None = Field(default=None, ge=1)
    """Eager hand-out: while the learner has a credit, a batch goes out as soon as this many
    groups are there (at most `batch_groups`), instead of waiting for a full one. With a fast
    learner the wait for a full batch is most of a sample's latency (RESULTS.md); pair it
    with `learner.lr_batch_groups` so that a small batch takes a proportionally small step.
    None: full batches only (and `partial_after_s`)."""

    success_replay: bool = False
    """Success replay for hard prompts (ExGRPO-style); see rollstream/services/replay/success.py."""

    success_max_pass_rate: float = Field(default=0.5, ge=0, le=1)
    """A prompt is hard while its latest group's pass rate is <= this (and > 0 to store)."""

    success_mix: int = Field(default=1, ge=1)
    """Stored successes appended to each handed-out group of a hard prompt."""

    success_prompts: int = Field(default=100_000, ge=1)
    """Most prompts with a stored success (least recently stored leaves first)."""

    seed: int = 0
    """Seed of the sampler (a fixed seed and input order give the same batches)."""

    learner_id: str = Field(default="learner", pattern=r"^[A-Za-z0-9_\-.]+$")
    """The learner this replay serves: key of its batches and of the feedback it reads."""

    rebuild_timeout_s: float = Field(default=60.0, gt=0)
    """Longest wait at start to read back the topics that rebuild the buffer."""

    @model_validator(mode="after")
    def _min_within_batch(self) -> ReplayConfig:
        if self.min_batch_groups is not None and self.min_batch_groups > self.batch_groups:
            raise ValueError(
                f"min_batch_groups ({self.min_batch_groups}) must be at most batch_groups "
                f"({self.batch_groups})"
            )
        return self

    @model_validator(mode="after")
    def _fifo_uses_once(self) -> ReplayConfig:
        if self.policy == "fifo":
            self.max_uses = 1
        return self


def validate_control(params: dict[str, Any], base: ReplayConfig | None = None) -> ReplayConfig:
    """`base` (defaults if None) with live knobs `params`; ValueError naming an unknown knob
    or a bad value."""
    unknown = set(params) - set(LIVE_KNOBS)
    if unknown:
        raise ValueError(f"unknown knob(s) {sorted(unknown)}; live: {sorted(LIVE_KNOBS)}")
    return ReplayConfig.model_validate({**(base or ReplayConfig()).model_dump(), **params})
