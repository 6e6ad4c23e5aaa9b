"""Configuration of the filter stage (pydantic; one block of the run file).

    filter:
      chain:
        - name: truncated
        - name: zero_variance
        - name: pods
          params: {m: 8}
      estimator: grpo
      group_timeout_s: 300
      timeout_policy: emit

Validation errors name the field (`chain.0.name`, `group_timeout_s`). Filter `params` are
checked when the chain is built (`FilterChain.from_specs`) and on every live update, with
messages of the form "chain.2 (pods): filter 'pods': params.m: ...".
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from rollstream.services.filter.advantage import Estimator


class FilterSpec(BaseModel):
    """One filter of the chain."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    """Built-in filter (zero_variance, truncated, format, duplicate, stale, pass_rate_band,
    learnability, pods) or "package.module:Class" of a user filter."""
    label: str | None = Field(None, min_length=1)
    """Name of this filter in drop records, metrics and live updates; defaults to `name`.
    Set it to use one filter twice."""
    params: dict[str, Any] = {}
    """Arguments of the filter (see each filter's Params)."""


class FilterConfig(BaseModel):
    """Group assembly, the filter chain and the advantage estimator."""

    model_config = ConfigDict(extra="forbid")

    chain: list[FilterSpec] = Field(
        default_factory=lambda: [FilterSpec(name="truncated"), FilterSpec(name="zero_variance")]
    )
    """Filters, applied in this order; an empty list keeps every complete group."""
    estimator: Estimator = "grpo"
    """Advantage estimator: grpo ((r - mean) / (std + eps)), dr_grpo (r - mean), rloo
    (r minus the mean of the others)."""
    eps: float = Field(1e-6, gt=0, le=1)
    """Added to the std in the grpo estimator."""
    min_samples: int = Field(2, ge=1)
    """A group left with fewer kept samples is dropped ("too_few_samples"): one sample has
    no advantage under any estimator."""
    group_timeout_s: float = Field(600.0, gt=0, le=7 * 24 * 3600)
    """Longest wait from a group's first sample for the rest."""
    timeout_policy: Literal["drop", "emit"] = "drop"
    """What to do with a group that timed out: drop it ("incomplete_timeout"), or filter
    and emit the samples that arrived."""
    done_ttl_s: float = Field(3600.0, gt=0)
    """How long finished group ids are remembered, so late or redelivered samples of an
    emitted group are ignored rather than starting a new group."""
    pass_rate_alpha: float = Field(0.3, gt=0, le=1)
    """EWMA weight of the newest group in a prompt's running pass rate."""
    pass_rate_recent: int = Field(8, ge=1, le=1024)
    """How many recent group pass rates PromptStats carries."""
    tick_s: float = Field(1.0, gt=0, le=3600)
    """How often the app checks for timed-out groups."""
    table_store: str = "memory://"
    """faust table store: memory:// rebuilds state from the changelog at start; rocksdb://
    keeps it on disk (needs the rocksdict package) for large deployments."""

    @model_validator(mode="after")
    def _unique_labels(self) -> FilterConfig:
        labels = [spec.label or spec.name for spec in self.chain]
        dupes = sorted({x for x in labels if labels.count(x) > 1})
        if dupes:
            raise ValueError(f"chain: filters used twice: {dupes}; give each a `label`")
        return self
