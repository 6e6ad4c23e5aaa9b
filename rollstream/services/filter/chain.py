"""The filter plugin interface and the chain that applies filters in order to one group.

A filter is an object with a `name`, validated `params` and `apply(group) -> Decision`:

    class LongAnswers(Filter):
        name = "long_answers"
        class Params(FilterParams):
            max_chars: int = 2000
        def apply(self, group: CandidateGroup) -> Decision:
            long = [s.rollout.rollout_id for s in group.samples
                    if len(s.rollout.completion) > self.params.max_chars]
            return Decision.drop_samples(long, "too_long", count=len(long)) if long else KEEP

A Decision keeps the group, drops it whole, or drops some samples, each drop with a reason and
the numbers that decided it. The chain runs the filters in order on what is left; a group
drop ends it, and a sample drop that would leave nothing becomes a group drop. Every sample
that entered ends up either kept or in exactly one Drop.

A live change of the chain (`rollstream control filter chain=...`) rebuilds it with
`FilterChain.from_specs(specs, reuse=chain.filters)`: a filter whose name and label stay is the
same object with new `params`, so whatever it keeps between groups survives the change.

Built-ins are found by name (`BUILTIN_FILTERS`), user filters by "package.module:Class".
Pure: no I/O.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from rollstream.schemas import ScoredRollout

BUILTIN_FILTERS: dict[str, str] = {
    "zero_variance": "rollstream.services.filter.rules.zero_variance:ZeroVariance",
    "truncated": "rollstream.services.filter.rules.truncated:Truncated",
    "format": "rollstream.services.filter.rules.format:FormatFilter",
    "duplicate": "rollstream.services.filter.rules.duplicate:Duplicate",
    "stale": "rollstream.services.filter.rules.stale:Stale",
    "pass_rate_band": "rollstream.services.filter.rules.pass_rate_band:PassRateBand",
    "learnability": "rollstream.services.filter.rules.learnability:Learnability",
    "pods": "rollstream.services.filter.rules.pods:Pods",
}


class FilterConfigError(ValueError):
    """A filter that cannot be built or updated: unknown name, bad params (names the field)."""


@dataclass
class CandidateGroup:
    """The samples of one group still in play, and what the filters may need to know."""

    group_id: str
    task_id: str
    task: str
    samples: list[ScoredRollout]
    group_size: int  # samples the generator was asked for
    learner_version: int | None = None  # newest policy version the learner published

    @property
    def rewards(self) -> list[float]:
        return [s.reward for s in self.samples]

    @property
    def rollout_ids(self) -> list[str]:
        return [s.rollout.rollout_id for s in self.samples]


@dataclass(frozen=True)
class Decision:
    """What one filter decided about one group."""

    action: Literal["keep", "drop_group", "drop_samples"]
    reason: str = ""
    stats: dict[str, float] = field(default_factory=dict)
    rollout_ids: tuple[str, ...] = ()

    @staticmethod
    def keep() -> Decision:
        return KEEP

    @staticmethod
    def drop_group(reason: str, **stats: float) -> Decision:
        return Decision("drop_group", reason, {k: float(v) for k, v in stats.items()})

    @staticmethod
    def drop_samples(rollout_ids: Iterable[str], reason: str, **stats: float) -> Decision:
        ids = tuple(rollout_ids)
        return Decision("drop_samples", reason, {k: float(v) for k, v in stats.items()}, ids)


KEEP = Decision("keep")


@dataclass(frozen=True)
class Drop:
    """Samples removed by one filter: the whole (remaining) group or some samples."""

    filter: str
    reason: str
    scope: Literal["group", "samples"]
    rollout_ids: list[str]
    stats: dict[str, float]


class FilterParams(BaseModel):
    """Base of every filter's parameter model: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Filter:
    """Base class for filters: subclasses set `name`, `Params` and write `apply`."""

    name: ClassVar[str] = "filter"
    Params: ClassVar[type[FilterParams]] = FilterParams

    def __init__(self, **params: Any) -> None:
        self.label = self.name  # set by the chain from the spec's label
        self.spec = self.name  # how it was asked for: built-in name or "package.module:Class"
        self.params = self.parse(params)

    def parse(self, params: Mapping[str, Any]) -> Any:
        """The Params of exactly `params` (the others at their defaults, not at their current
        values); raises FilterConfigError if invalid."""
        try:
            return self.Params.model_validate(dict(params))
        except ValidationError as exc:
            from rollstream.services.runtime.plugins import validation_problems

            raise FilterConfigError(f"filter {self.label!r}: {validation_problems(exc)}") from None

    def check(self, params: Mapping[str, Any]) -> Any:
        """The params that `update(params)` would set; raises FilterConfigError if invalid."""
        return self.parse({**self.params.model_dump(), **params})

    def update(self, params: Mapping[str, Any]) -> None:
        """Change some params (the others stay); on a validation error nothing changes. Goes
        through `configure`, as the chain's live changes do."""
        self.configure(self.check(params))

    def configure(self, params: Any) -> None:
        """Take new (checked) params while the filter stays in the chain: a live knob changed
        them. A filter that derives state from its params overrides this (and calls super)."""
        self.params = params

    def apply(self, group: CandidateGroup) -> Decision:
        raise NotImplementedError


def load_filter(spec: str, params: Mapping[str, Any] | None = None) -> Filter:
    """Build the filter named `spec` (built-in name or "package.module:Class")."""
    return filter_class(spec)(**dict(params or {}))


def check_filter_params(spec: str, params: Mapping[str, Any] | None = None) -> None:
    """Refuse the `params` that `load_filter(spec, params)` would refuse, without building
    the filter: by its class's signature and Params model (`plugins.params_problem`).
    FilterConfigError names the field."""
    from rollstream.services.runtime.plugins import params_problem

    problem = params_problem(filter_class(spec), dict(params or {}), FilterParams)
    if problem:
        raise FilterConfigError(f"filter {spec!r}: {problem}")


def label_of(spec: Any) -> str:
    """The label a FilterSpec's filter gets in the chain: its `label`, else its class's name."""
    return getattr(spec, "label", None) or filter_class(spec.name).name


def filter_class(spec: str) -> Any:
    """The filter class named `spec` (built-in name, "package.module:Class" or the name of a
    `rollstream.filters` entry point); FilterConfigError if there is none."""
    from rollstream.services.runtime import plugins

    cls = plugins.find("filters", spec, BUILTIN_FILTERS, FilterConfigError, "Class")
    if not inspect.isclass(cls) or not callable(getattr(cls, "apply", None)):
        raise FilterConfigError(f"{spec!r} is not a filter class")
    return cls


@dataclass(frozen=True)
class ChainResult:
    """The samples that survived (empty when the group was dropped) and every drop."""

    kept: list[ScoredRollout]
    drops: list[Drop]

    @property
    def dropped_group(self) -> bool:
        return not self.kept


class FilterChain:
    """Filters applied in order (see module docstring). Labels must be unique."""

    def __init__(self, filters: list[Filter]) -> None:
        labels = [f.label for f in filters]
        dupes = sorted({x for x in labels if labels.count(x) > 1})
        if dupes:
            raise FilterConfigError(f"filters used twice: {dupes}; give each a `label`")
        self.filters = list(filters)

    @classmethod
    def from_specs(cls, specs: Iterable[Any], reuse: Iterable[Filter] = ()) -> FilterChain:
        """Build from objects with `name`, `params` and optional `label` (FilterSpec). A filter
        of `reuse` with a spec's name and label is kept, its params set to exactly the spec's,
        so what it accumulated (statistics, windows) survives a live change; the others are
        built. All or nothing: no filter of `reuse` changes unless every spec checks out."""
        old: dict[tuple[str, str | None], Filter] = {}
        for f in reuse:
            old[(f.spec, f.label)] = f
            if f.label == f.name:  # also what a spec without a label asks for
                old[(f.spec, None)] = f
        filters: list[Filter] = []
        params: list[tuple[Filter, Any]] = []
        for i, spec in enumerate(specs):
            label = getattr(spec, "label", None)
            try:
                flt = old.get((spec.name, label))
                if flt is not None:
                    params.append((flt, flt.parse(spec.params)))
                else:
                    flt = load_filter(spec.name, spec.params)
                    flt.label = label or flt.name
                    flt.spec = spec.name
            except FilterConfigError as exc:
                raise FilterConfigError(f"chain.{i} ({spec.name}): {exc}") from exc
            filters.append(flt)
        chain = cls(filters)
        for flt, checked in params:
            flt.configure(checked)
        return chain

    def apply(self, group: CandidateGroup) -> ChainResult:
        samples = list(group.samples)
        drops: list[Drop] = []
        for flt in self.filters:
            if not samples:
                break
            view = CandidateGroup(
                group.group_id,
                group.task_id,
                group.task,
                samples,
                group.group_size,
                group.learner_version,
            )
            decision = flt.apply(view)
            if decision.action == "keep":
                continue
            if decision.action == "drop_group":
                drops.append(_drop(flt, decision, "group", samples))
                return ChainResult([], drops)
            gone = set(decision.rollout_ids)
            removed = [s for s in samples if s.rollout.rollout_id in gone]
            if not removed:
                continue
            samples = [s for s in samples if s.rollout.rollout_id not in gone]
            drops.append(_drop(flt, decision, "samples" if samples else "group", removed))
        return ChainResult(samples, drops)


def _drop(flt: Filter, decision: Decision, scope: str, samples: list[ScoredRollout]) -> Drop:
    ids = [s.rollout.rollout_id for s in samples]
    return Drop(flt.label, decision.reason, scope, ids, dict(decision.stats))  # type: ignore[arg-type]
