"""Curriculum policies: for each candidate prompt, send it or skip it (with a reason).

Pure: no I/O. The feed calls `decide(item, stats)` just before it would send `item`, with the
latest PromptStats of that task_id (None until the filter has reported one of its groups),
and `observe(stats)` once for every PromptStats that arrives on `prompt.stats`.

Built-ins (`make_policy(name, params, seed)`):
- `epochs`: never skips; every epoch sends the whole pool (the default).
- `band`: skips a prompt whose running pass rate (PromptStats.pass_rate, an EMA) lies outside
  [lo, hi] once it has `min_groups` groups (online difficulty filtering, AReaL's
  success-rate bounds).
- `greso`: GRESO (arXiv 2506.02177) pre-rollout skipping. From the prompt's recent group pass
  rates (PromptStats.recent, newest last) it counts the trailing all-correct groups z_easy and
  trailing all-wrong groups z_hard and skips with probability 1 - max(p_easy**z_easy,
  min_keep) (likewise p_hard). Every `adapt_every` observed groups it moves p_easy down by
  `step` if the share of all-correct groups reached target_zero_variance/3, else up, and
  p_hard likewise against 2*target_zero_variance/3, within [min_p, max_p].

Your own policy: any class or function reachable as `pkg.module:name` (or `pkg.module.name`)
that, called with the `params` as keyword arguments, returns an object with
`decide(item, stats) -> str | None` (a skip reason, or None to send); `observe(stats)`,
`gauges() -> dict[str, float]` and a `needs_stats` attribute are optional.
"""

from __future__ import annotations

import importlib
import random
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from rollstream.schemas import PromptStats
from rollstream.services.feed.items import FeedItem

_EPS = 1e-9


class CurriculumError(ValueError):
    """A policy that cannot be found or built from its parameters."""


class Policy(Protocol):
    needs_stats: bool

    def decide(self, item: FeedItem, stats: PromptStats | None) -> str | None: ...

    def observe(self, stats: PromptStats) -> None: ...

    def gauges(self) -> dict[str, float]: ...


class Epochs:
    """Never skips: plain epochs over the pool."""

    needs_stats = False

    def decide(self, item: FeedItem, stats: PromptStats | None) -> str | None:
        return None

    def observe(self, stats: PromptStats) -> None:
        pass

    def gauges(self) -> dict[str, float]:
        return {}


class BandParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    lo: float = Field(0.05, ge=0, le=1)
    """Skip a prompt whose running pass rate is below this (too hard)."""
    hi: float = Field(0.95, ge=0, le=1)
    """Skip a prompt whose running pass rate is above this (too easy)."""
    min_groups: int = Field(1, ge=1)
    """Judge a prompt only once it has at least this many groups."""

    @model_validator(mode="after")
    def _ordered(self) -> BandParams:
        if self.lo > self.hi:
            raise ValueError(f"lo ({self.lo}) must be <= hi ({self.hi})")
        return self


class Band(Epochs):
    """Skip prompts whose running pass rate left [lo, hi] after `min_groups` groups."""

    needs_stats = True

    def __init__(self, lo: float = 0.05, hi: float = 0.95, min_groups: int = 1) -> None:
        p = BandParams(lo=lo, hi=hi, min_groups=min_groups)
        self.lo, self.hi, self.min_groups = p.lo, p.hi, p.min_groups

    def decide(self, item: FeedItem, stats: PromptStats | None) -> str | None:
        if stats is None or stats.groups < self.min_groups:
            return None
        if stats.pass_rate > self.hi:
            return "band_too_easy"
        if stats.pass_rate < self.lo:
            return "band_too_hard"
        return None


class GresoParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    p_easy: float = Field(0.5, gt=0, le=1)
    """Initial per-group probability of still exploring an all-correct prompt."""
    p_hard: float = Field(0.5, gt=0, le=1)
    """Initial per-group probability of still exploring an all-wrong prompt."""
    min_keep: float = Field(0.01, ge=0, le=1)
    """Floor of the keep probability, however long the zero-variance streak."""
    easy_at: float = Field(1.0, ge=0, le=1)
    """A group counts as all-correct when its pass rate is >= this (GRESO's 0.98 was a mean
    reward; with pass rates, 1.0 is exactly the zero-variance case)."""
    hard_at: float = Field(0.0, ge=0, le=1)
    """A group counts as all-wrong when its pass rate is <= this."""
    adapt: bool = True
    """Adapt p_easy / p_hard toward the target zero-variance share."""
    target_zero_variance: float = Field(0.25, ge=0, le=1)
    """Target share of zero-variance groups: a third of it all-correct, two thirds all-wrong."""
    step: float = Field(0.01, ge=0, le=1)
    """How far one adaptation moves p_easy / p_hard."""
    min_p: float = Field(0.05, gt=0, le=1)
    """Lower bound of p_easy / p_hard under adaptation."""
    max_p: float = Field(0.95, gt=0, le=1)
    """Upper bound of p_easy / p_hard under adaptation."""
    adapt_every: int = Field(64, ge=1)
    """Observed groups per adaptation step (GRESO adapts once per training step)."""
    seed: int = 0
    """Seed of the skip draws."""

    @model_validator(mode="after")
    def _ordered(self) -> GresoParams:
        if self.min_p > self.max_p:
            raise ValueError(f"min_p ({self.min_p}) must be <= max_p ({self.max_p})")
        return self


def trailing(trace: Sequence[float], pred: Callable[[float], bool]) -> int:
    """How many of the newest entries of `trace` (newest last) in a row satisfy `pred`."""
    count = 0
    for value in reversed(trace):
        if not pred(value):
            break
        count += 1
    return count


class Greso(Epochs):
    """GRESO-style probabilistic skip of prompts predicted to give zero-variance groups."""

    needs_stats = True

    def __init__(self, rng: random.Random | None = None, **params: Any) -> None:
        self.p = GresoParams(**params)
        self.p_easy = self.p.p_easy
        self.p_hard = self.p.p_hard
        self.rng = rng if rng is not None else random.Random(f"greso/{self.p.seed}")
        self._seen = self._easy = self._hard = 0

    def _easy_group(self, rate: float) -> bool:
        return rate >= self.p.easy_at - _EPS

    def _hard_group(self, rate: float) -> bool:
        return rate <= self.p.hard_at + _EPS

    def skip_probability(self, recent: Sequence[float]) -> tuple[float, str | None]:
        """(probability of skipping, the reason it would give) for a pass-rate history."""
        z_easy = trailing(recent, self._easy_group)
        if z_easy:
            return 1.0 - max(self.p_easy**z_easy, self.p.min_keep), "greso_too_easy"
        z_hard = trailing(recent, self._hard_group)
        if z_hard:
            return 1.0 - max(self.p_hard**z_hard, self.p.min_keep), "greso_too_hard"
        return 0.0, None

    def decide(self, item: FeedItem, stats: PromptStats | None) -> str | None:
        if stats is None:
            return None
        recent = stats.recent or [stats.last_pass_rate] * min(stats.groups, 1)
        prob, reason = self.skip_probability(recent)
        if reason is not None and self.rng.random() < prob:
            return reason
        return None

    def observe(self, stats: PromptStats) -> None:
        if not self.p.adapt:
            return
        self._seen += 1
        self._easy += self._easy_group(stats.last_pass_rate)
        self._hard += self._hard_group(stats.last_pass_rate)
        if self._seen < self.p.adapt_every:
            return
        target = self.p.target_zero_variance
        self.p_easy = self._nudge(self.p_easy, self._easy / self._seen >= target / 3)
        self.p_hard = self._nudge(self.p_hard, self._hard / self._seen >= 2 * target / 3)
        self._seen = self._easy = self._hard = 0

    def _nudge(self, p: float, too_many: bool) -> float:
        p = p - self.p.step if too_many else p + self.p.step
        return min(self.p.max_p, max(self.p.min_p, p))

    def gauges(self) -> dict[str, float]:
        return {"p_easy": self.p_easy, "p_hard": self.p_hard}


BUILTIN: dict[str, Callable[..., Policy]] = {"epochs": Epochs, "band": Band, "greso": Greso}


def _load(spec: str) -> Callable[..., Any]:
    if ":" in spec:
        module_name, attr = spec.split(":", 1)
    else:
        module_name, _, attr = spec.rpartition(".")
    if not module_name or not attr:
        raise CurriculumError(
            f"unknown curriculum policy {spec!r}; built-in: {', '.join(BUILTIN)},"
            " or a dotted path pkg.module:factory"
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise CurriculumError(f"cannot import curriculum module {module_name!r}: {exc}") from exc
    factory = getattr(module, attr, None)
    if factory is None or not callable(factory):
        raise CurriculumError(f"{module_name!r} has no callable {attr!r}")
    return factory


def make_policy(name: str, params: dict[str, Any] | None = None, seed: int = 0) -> Policy:
    """Build a built-in policy by name or a user policy by dotted path. `seed` is the default
    seed of built-ins that draw random numbers. CurriculumError names the bad parameter."""
    params = dict(params or {})
    factory = BUILTIN.get(name) or _load(name)
    if factory is Greso:
        params.setdefault("seed", seed)
    try:
        policy = factory(**params)
    except ValidationError as exc:
        errs = "; ".join(
            f"feed.curriculum.params.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
            for e in exc.errors()
        )
        raise CurriculumError(errs) from None
    except TypeError as exc:
        raise CurriculumError(f"feed.curriculum.params: {name}: {exc}") from None
    if not callable(getattr(policy, "decide", None)):
        raise CurriculumError(f"{name!r} built a {type(policy).__name__} without decide()")
    return policy
