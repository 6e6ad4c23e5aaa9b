"""The reward plugin interface, the built-in registry, and loading user rewards by dotted path.

A reward is any object with a `name` and a `score(rollout) -> float` method, sync or async:

    class Brevity:
        name = "brevity"
        def score(self, rollout: Rollout) -> float:
            return -len(rollout.completion) / 1000

Optional attributes tell the scorer how to run it:
- `checker = True`: the reward is a verifiable outcome (1.0 = correct); `ScoredRollout.correct`
  comes from such rewards.
- `inline = True`: a cheap sync reward, called directly on the event loop (no thread hop; its
  timeout cannot be enforced). Sync rewards without it run on a thread pool.
- `close()` (sync or async): called once when the scorer shuts down.

`load_reward("exact_match", params)` builds a built-in; `load_reward("my_pkg.rewards:judge",
params)` imports user code: a class is called with `**params`, a plain function
`f(rollout, **params) -> float` is wrapped, an object with `score` is used as is.

Reads only the Python import path. Built-ins are imported on first use (math-verify pulls in
sympy), so importing this module is cheap.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, Protocol, TypeVar, runtime_checkable

from pydantic import BaseModel, ConfigDict, ValidationError

from rollstream.schemas import Rollout


class RewardError(Exception):
    """A reward raised (or was misconfigured) while scoring one rollout. The scorer sends that
    rollout to the dead-letter topic with this message; `reward` names the component."""

    def __init__(self, reward: str, message: str) -> None:
        self.reward = reward
        super().__init__(f"reward {reward!r}: {message}")


class RewardTimeout(TimeoutError):
    """Raised by a reward to say "no verdict in time" (e.g. a judge server that stayed down
    through every retry). The scorer then uses the configured fallback, as for a timeout."""


class RewardConfigError(ValueError):
    """A reward that cannot be built: unknown name, bad params (the message names the field)."""


@runtime_checkable
class Reward(Protocol):
    """What the scorer calls. `score` may be `def` or `async def`."""

    name: str

    def score(self, rollout: Rollout) -> Any: ...


# Built-in rewards by name -> "module:attribute"; imported lazily by `load_reward`.
BUILTIN_REWARDS: dict[str, str] = {
    "exact_match": "rollstream.services.scorer.rewards.match:ExactMatch",
    "numeric_match": "rollstream.services.scorer.rewards.match:NumericMatch",
    "math_verify": "rollstream.services.scorer.rewards.math:MathVerify",
    "task": "rollstream.services.scorer.rewards.task:TaskCheck",
    "format": "rollstream.services.scorer.rewards.format:FormatMatch",
    "length_penalty": "rollstream.services.scorer.rewards.length:LengthPenalty",
    "soft_overlong": "rollstream.services.scorer.rewards.overlong:SoftOverlong",
    "repetition_penalty": "rollstream.services.scorer.rewards.repetition:RepetitionPenalty",
    "code_exec": "rollstream.services.scorer.rewards.code:CodeExec",
    "http_judge": "rollstream.services.scorer.rewards.http:HttpJudge",
}

P = TypeVar("P", bound=BaseModel)


class RewardParams(BaseModel):
    """Base of every built-in reward's parameter model: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def parse_params(model: type[P], params: dict[str, Any], owner: str) -> P:
    """Validate `params` into `model`; the error names `owner` and the offending field."""
    from rollstream.services.runtime.plugins import validation_problems

    try:
        return model.model_validate(params)
    except ValidationError as exc:
        raise RewardConfigError(f"reward {owner!r}: {validation_problems(exc)}") from None


def require_answer(rollout: Rollout, reward: str) -> str:
    """The rollout's reference answer, or a clear error when the prompt carried none."""
    if rollout.answer is None:
        raise ValueError(f"{reward}: rollout {rollout.rollout_id} has no reference answer")
    return rollout.answer


class FunctionReward:
    """Wraps a plain function `f(rollout, **params) -> float` as a sync reward."""

    def __init__(self, fn: Callable[..., Any], name: str, params: dict[str, Any]) -> None:
        self.name = name
        self._fn = fn
        self._params = dict(params)
        if inspect.iscoroutinefunction(fn):
            self.score = self._ascore  # type: ignore[method-assign]

    def score(self, rollout: Rollout) -> Any:
        return self._fn(rollout, **self._params)

    async def _ascore(self, rollout: Rollout) -> Any:
        return await self._fn(rollout, **self._params)


def load_reward(spec: str, params: dict[str, Any] | None = None) -> Reward:
    """Build the reward named `spec` (a built-in name or "pkg.module:object") with `params`."""
    params = dict(params or {})
    obj = reward_object(spec)
    kind = _reward_kind(spec, obj, params)
    if kind == "class":
        try:
            reward = obj(**params)
        except TypeError as exc:
            raise RewardConfigError(f"reward {spec!r}: {exc}") from exc
    elif kind == "object":
        reward = obj
    else:
        reward = FunctionReward(obj, spec.rpartition(":")[2].rpartition(".")[2], params)
    if not isinstance(getattr(reward, "name", None), str) or not callable(
        getattr(reward, "score", None)
    ):
        raise RewardConfigError(f"{spec!r} has no `name` string and `score` method")
    return reward


def check_reward_params(spec: str, params: dict[str, Any] | None = None) -> None:
    """Refuse the `params` that `load_reward(spec, params)` would refuse, without building
    the reward (which may load a model or open a connection): by the signature of its class
    or function, and a built-in's by its Params model (`plugins.params_problem`).
    RewardConfigError names the field."""
    from rollstream.services.runtime.plugins import params_problem

    params = dict(params or {})
    obj = reward_object(spec)
    if _reward_kind(spec, obj, params) == "object":
        return
    problem = params_problem(obj, params, RewardParams)
    if problem:
        raise RewardConfigError(f"reward {spec!r}: {problem}")


def _reward_kind(spec: str, obj: Any, params: dict[str, Any]) -> str:
    """How `load_reward` makes a reward of `obj`: "class" (called with the params), "object"
    (one with `score`, used as is: it takes no params) or "function" (wrapped);
    RewardConfigError for what is none of these."""
    if inspect.isclass(obj):
        return "class"
    if hasattr(obj, "score"):
        if params:
            raise RewardConfigError(f"reward {spec!r} is an object; it takes no params")
        return "object"
    if callable(obj):
        return "function"
    raise RewardConfigError(f"{spec!r} is a {type(obj).__name__}, not a reward")


def reward_object(spec: str) -> Any:
    """What `spec` names, not yet built: a built-in's class, the object at
    "package.module:object" (its module imported) or a `rollstream.rewards` entry point;
    RewardConfigError if there is none or its module does not import."""
    from rollstream.services.runtime import plugins

    return plugins.find("rewards", spec, BUILTIN_REWARDS, RewardConfigError, "object")
