"""Score one rollout with every configured reward and combine them into one number.

All components of a rollout run concurrently: async rewards as tasks, sync rewards on a thread
pool (or inline on the loop when cheap), each under its own timeout. The total is
sum(weight * value). A component that times out (or raises RewardTimeout) gets its fallback
value and is listed in `timed_out`; one that raises anything else makes the whole rollout
fail with RewardError (the scorer app sends it to the dead-letter topic). `correct` is
all(value >= 1) over the checker components that did not time out, or None when there are
none.

A thread running a timed-out sync reward cannot be stopped; it finishes in the background
and its result is ignored (a reward that can hang should be async or enforce its own limit).
Pure apart from the rewards it calls.
"""

from __future__ import annotations

import asyncio
import inspect
import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from rollstream.schemas import Rollout, ScoredRollout
from rollstream.services.scorer.config import ScorerConfig
from rollstream.services.scorer.reward import (
    Reward,
    RewardConfigError,
    RewardError,
    load_reward,
)

RunMode = Literal["async", "inline", "thread"]


@dataclass(frozen=True)
class Component:
    """One configured reward."""

    key: str
    reward: Reward
    weight: float = 1.0
    timeout_s: float = 10.0
    fallback: float = 0.0
    run: RunMode = "inline"
    checker: bool = False


Outcome = tuple[Component, float, bool, float]  # component, value, timed out, seconds


@dataclass(frozen=True)
class Score:
    """What the scorer learned about one rollout."""

    reward: float
    components: dict[str, float]  # unweighted, by component key
    timed_out: list[str]
    correct: bool | None
    latency_s: dict[str, float]  # wall time of each component

    def of(self, rollout: Rollout, score_s: float, now: float) -> ScoredRollout:
        """The message `rollouts.scored` carries for `rollout` with this score."""
        return ScoredRollout(
            rollout=rollout,
            reward=self.reward,
            rewards=self.components,
            correct=self.correct,
            timed_out=self.timed_out,
            score_s=score_s,
            produced_at=now,
        )


def run_mode(reward: Reward, requested: str = "auto") -> RunMode:
    """How to call `reward`: async rewards on the loop; sync ones inline or on threads."""
    if inspect.iscoroutinefunction(reward.score):
        return "async"
    if requested in ("inline", "thread"):
        return requested  # type: ignore[return-value]
    return "inline" if getattr(reward, "inline", False) else "thread"


class Combiner:
    """Runs the components on one rollout and combines them (see module docstring)."""

    def __init__(self, components: list[Component], threads: int = 4) -> None:
        if not components:
            raise RewardConfigError("at least one reward is needed")
        keys = [c.key for c in components]
        dupes = sorted({k for k in keys if keys.count(k) > 1})
        if dupes:
            raise RewardConfigError(f"reward keys used twice: {dupes}; give each a `label`")
        self.components = components
        self.base = list(components)  # as configured: live knobs apply onto these
        self._inline = [c for c in components if c.run == "inline"]
        self._other = [c for c in components if c.run != "inline"]
        self._threads = threads
        self._pool: ThreadPoolExecutor | None = None

    @classmethod
    def from_config(cls, config: ScorerConfig) -> Combiner:
        """Build every reward of `config`; errors name the offending `rewards.<i>` entry."""
        components = []
        for i, spec in enumerate(config.rewards):
            try:
                reward = load_reward(spec.name, spec.params)
            except (RewardConfigError, ValueError) as exc:
                raise RewardConfigError(f"rewards.{i} ({spec.name}): {exc}") from exc
            checker = spec.checker
            if checker is None:
                checker = bool(getattr(reward, "checker", False))
            components.append(
                Component(
                    key=spec.label or reward.name,
                    reward=reward,
                    weight=spec.weight,
                    timeout_s=spec.timeout_s,
                    fallback=spec.fallback,
                    run=run_mode(reward, spec.run),
                    checker=checker,
                )
            )
        return cls(components, threads=config.threads)

    @property
    def inline_only(self) -> bool:
        """True when every component runs inline: `score` then never suspends."""
        return not self._other

    async def score(self, rollout: Rollout) -> Score:
        """Score `rollout`; raises RewardError when a component raises."""
        results: list[Outcome] = []
        for comp in self._inline:
            results.append(self._call_inline(comp, rollout))
        if self._other:
            outcomes = await asyncio.gather(
                *(self._call(comp, rollout) for comp in self._other), return_exceptions=True
            )
            for outcome in outcomes:
                if isinstance(outcome, BaseException):
                    raise outcome
                results.append(outcome)
        return _combine(results)

    def _call_inline(self, comp: Component, rollout: Rollout) -> Outcome:
        start = time.perf_counter()
        try:
            value = comp.reward.score(rollout)
        except TimeoutError:
            return comp, comp.fallback, True, time.perf_counter() - start
        except Exception as exc:
            raise _error(comp, exc) from exc
        return comp, _as_float(comp, value), False, time.perf_counter() - start

    async def _call(self, comp: Component, rollout: Rollout) -> Outcome:
        start = time.perf_counter()
        try:
            async with asyncio.timeout(comp.timeout_s):
                if comp.run == "async":
                    value = await comp.reward.score(rollout)
                else:
                    loop = asyncio.get_running_loop()
                    value = await loop.run_in_executor(self._executor(), comp.reward.score, rollout)
                if inspect.isawaitable(value):
                    value = await value
        except TimeoutError:  # our timeout, or RewardTimeout from the reward
            return comp, comp.fallback, True, time.perf_counter() - start
        except Exception as exc:
            raise _error(comp, exc) from exc
        return comp, _as_float(comp, value), False, time.perf_counter() - start

    def update(self, params: dict[str, Any]) -> None:
        """Live knobs, all or nothing, onto the configured rewards (a knob left out goes back to
        its configured value): {"weights": {key: w}, "timeouts": {key: seconds},
        "fallbacks": {key: value}}. Raises RewardConfigError naming the bad entry."""
        self.components = self.overridden(params)
        self._inline = [c for c in self.components if c.run == "inline"]
        self._other = [c for c in self.components if c.run != "inline"]

    def overridden(self, params: dict[str, Any]) -> list[Component]:
        """The configured components with `params` applied; RewardConfigError if invalid."""
        fields = {"weights": "weight", "timeouts": "timeout_s", "fallbacks": "fallback"}
        unknown = sorted(set(params) - set(fields))
        if unknown:
            raise RewardConfigError(f"unknown scorer knobs {unknown}; known: {sorted(fields)}")
        by_key = {c.key: c for c in self.base}
        changes: dict[str, dict[str, float]] = {}
        for knob, values in params.items():
            if not isinstance(values, dict):
                raise RewardConfigError(f"{knob}: expected {{reward key: number}}")
            for key, value in values.items():
                if key not in by_key:
                    raise RewardConfigError(
                        f"{knob}.{key}: no reward with that key; the run's: {sorted(by_key)}"
                    )
                if isinstance(value, bool) or not isinstance(value, int | float):
                    raise RewardConfigError(f"{knob}.{key}: {value!r} is not a number")
                if (
                    not math.isfinite(value)
                    or (knob == "timeouts" and value <= 0)
                    or (knob == "weights" and abs(value) > 1000)  # RewardSpec.weight's bounds
                ):
                    raise RewardConfigError(f"{knob}.{key}: {value!r} is out of range")
                changes.setdefault(key, {})[fields[knob]] = float(value)
        return [replace(c, **changes.get(c.key, {})) for c in self.base]

    def _executor(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self._threads, thread_name_prefix="reward")
        return self._pool

    async def close(self) -> None:
        """Close every reward that has `close()` and stop the thread pool."""
        for comp in self.components:
            closer = getattr(comp.reward, "close", None)
            if closer is not None:
                result = closer()
                if inspect.isawaitable(result):
                    await result
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None


def _combine(results: list[Outcome]) -> Score:
    components: dict[str, float] = {}
    timed_out: list[str] = []
    latency: dict[str, float] = {}
    total = 0.0
    verdicts: list[bool] = []
    for comp, value, late, seconds in results:
        components[comp.key] = value
        latency[comp.key] = seconds
        total += comp.weight * value
        if late:
            timed_out.append(comp.key)
        elif comp.checker:
            verdicts.append(value >= 1.0)
    correct = all(verdicts) if verdicts else None
    return Score(total, components, timed_out, correct, latency)


def _error(comp: Component, exc: Exception) -> RewardError:
    if isinstance(exc, RewardError):
        return exc
    return RewardError(comp.key, f"{type(exc).__name__}: {exc}")


def _as_float(comp: Component, value: Any) -> float:
    if isinstance(value, bool):
        return float(value)
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise RewardError(comp.key, f"returned {value!r}, not a number") from None
    if not math.isfinite(number):
        raise RewardError(comp.key, f"returned {number}, not a finite number")
    return number


class ScorerKnobs(BaseModel):
    """The scorer's live knobs (`rollstream control scorer weights='{exact: 2}' ...`): per
    reward key, its weight, timeout and fallback over the run's configured values."""

    model_config = ConfigDict(extra="forbid")

    weights: dict[str, float] = {}
    timeouts: dict[str, float] = {}
    fallbacks: dict[str, float] = {}


KNOBS = tuple(ScorerKnobs.model_fields)
