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

Live knobs (`rollstream control filter KEY=VALUE`, see `validate_control`) are the fields of
LIVE_KNOBS, applied onto the run's config: a knob removed with `--unset` goes back to the run's
value. `chain` takes a whole list of filters, or {label: {param: value}} to change some params
of the run's filters.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from rollstream.services.filter.advantage import Estimator
from rollstream.services.filter.chain import FilterChain, FilterConfigError, label_of


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


LIVE_KNOBS = frozenset(FilterConfig.model_fields) - {"tick_s", "table_store"}
"""The fields a ControlUpdate for stage "filter" may change: all but the tick interval and the
table store, which the app fixes when it starts."""


def validate_control(params: Mapping[str, Any], base: FilterConfig | None = None) -> FilterConfig:
    """The filter config with live knobs `params` applied onto `base` (the run's config;
    defaults if None), every filter's params checked; FilterConfigError (a ValueError) naming
    an unknown knob or a bad value. Used by the stage and by `rollstream control` before it
    publishes anything. The CLI does not know the run's chain: without `base`, params for a
    label that is not in the default chain are only checked for shape (the stage refuses a
    label its chain does not have)."""
    params = dict(params)
    unknown = set(params) - LIVE_KNOBS
    if unknown:
        raise FilterConfigError(f"unknown knob(s) {sorted(unknown)}; live: {sorted(LIVE_KNOBS)}")
    run = base or FilterConfig()
    if "chain" in params:
        params["chain"] = _chain(params["chain"], run.chain, strict=base is not None)
    try:
        config = FilterConfig.model_validate({**run.model_dump(), **params})
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(root)'}: {err['msg']}"
            for err in exc.errors()
        )
        raise FilterConfigError(problems) from None
    FilterChain.from_specs(config.chain)  # every filter's params (built, then let go)
    return config


def _chain(change: Any, run: list[FilterSpec], strict: bool) -> Any:
    """The chain knob as a list of filter specs: a list as it is; {label: params} as the run's
    chain with those params set over the run's params of each labelled filter."""
    if isinstance(change, list):
        return change
    if not isinstance(change, Mapping):
        raise FilterConfigError("chain: expected a list of filters or {label: params}")
    bad = sorted(str(label) for label, p in change.items() if not isinstance(p, Mapping))
    if bad:
        raise FilterConfigError(f"chain: expected {{param: value}} for {bad}")
    labels = [label_of(spec) for spec in run]
    unknown = sorted(set(change) - set(labels))
    if unknown and strict:
        raise FilterConfigError(f"chain: no filter labelled {unknown} in the chain")
    specs = []
    for spec, label in zip(run, labels, strict=True):
        params = {**spec.params, **change[label]} if label in change else spec.params
        specs.append({**spec.model_dump(), "params": params})
    return specs
