"""Configuration of the scorer's rewards (pydantic; one block of the run file).

    scorer:
      rewards:
        - name: math_verify          # built-in name, or "my_pkg.rewards:judge"
          weight: 1.0
        - name: format
          weight: 0.1
          params: {pattern: "^<think>.*</think>.*$"}
        - name: soft_overlong
          params: {max_len: 4096, cache: 512}

Validation errors name the field (`rewards.1.weight`). Reward `params` are checked when the
rewards are built (`Combiner.from_config`), with the same kind of field path.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class RewardSpec(BaseModel):
    """One reward function and how it enters the total."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    """Built-in reward name (exact_match, numeric_match, math_verify, task, format,
    length_penalty, soft_overlong, repetition_penalty, code_exec, http_judge) or the dotted
    path "package.module:object" of a user reward."""
    label: str | None = Field(None, min_length=1)
    """Key of this component in `ScoredRollout.rewards`; defaults to the reward's `name`. Set
    it to use one reward twice."""
    weight: float = Field(1.0, ge=-1000, le=1000, allow_inf_nan=False)
    """Multiplies the component in the total reward."""
    timeout_s: float = Field(10.0, gt=0, le=3600)
    """Longest wait for this component; after it the fallback is used and counted."""
    fallback: float = Field(0.0, allow_inf_nan=False)
    """Component value when it times out (or its backend stays unavailable)."""
    run: Literal["auto", "inline", "thread"] = "auto"
    """How a sync reward runs: inline on the event loop (cheap ones; no timeout), on the
    thread pool, or auto (the reward's own `inline` attribute decides). Async rewards always
    run on the loop."""
    checker: bool | None = None
    """Whether this component decides `correct` (value >= 1 means correct); None: the
    reward's own `checker` attribute decides."""
    params: dict[str, Any] = {}
    """Arguments of the reward (see each reward's Params)."""


class ScorerConfig(BaseModel):
    """The rewards and how they run."""

    model_config = ConfigDict(extra="forbid")

    rewards: list[RewardSpec] = Field(
        default_factory=lambda: [RewardSpec(name="task")], min_length=1
    )
    """Reward components; the total is their weighted sum."""
    threads: int = Field(4, ge=1, le=256)
    """Thread pool size for sync rewards that do not run inline."""
    max_in_flight: int = Field(64, ge=1, le=100_000)
    """Rollouts scored concurrently per worker; past it the worker stops reading."""

    @model_validator(mode="after")
    def _unique_labels(self) -> ScorerConfig:
        seen: set[str] = set()
        for spec in self.rewards:
            if spec.label is None:
                continue
            if spec.label in seen:
                raise ValueError(f"rewards: label {spec.label!r} is used twice")
            seen.add(spec.label)
        return self


def reward_keys(config: ScorerConfig) -> list[str] | None:
    """Each reward's key in `ScoredRollout.rewards` (its label, else a built-in's name), or
    None when a user reward (a dotted path or an entry point) has no label: its key is its
    object's `name`, known once built."""
    from rollstream.services.scorer.reward import BUILTIN_REWARDS

    if any(r.label is None and r.name not in BUILTIN_REWARDS for r in config.rewards):
        return None
    return [r.label or r.name for r in config.rewards]


def validate_control(params: dict[str, Any], base: ScorerConfig | None = None) -> None:
    """Check scorer knobs (`rollstream control scorer weights='{format: 0.2}'`): their shape
    and ranges, and with the run's config `base`, that each key names one of its rewards.
    Raises ValueError naming the bad entry; without `base` any key passes here and the stage
    refuses one it does not have."""
    from rollstream.services.scorer.combine import Combiner, Component

    keys = None if base is None else reward_keys(base)
    if keys is None:
        keys = list({k for v in params.values() if isinstance(v, dict) for k in v})
    Combiner([Component(key=k, reward=None) for k in keys]).update(params)  # type: ignore[arg-type]
