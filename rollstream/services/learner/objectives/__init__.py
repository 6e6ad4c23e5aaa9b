"""Policy objectives as plugins: a registry by name. Pure torch; no I/O.

An objective is a callable `objective(inputs: PolicyInputs, norm: Norm | None) -> (loss,
metrics)`: `loss` is a scalar tensor to back-propagate, `metrics` a dict of floats (clip
fraction, ratio stats, kl, entropy, ... see losses.py). Built-in names: ppo, grpo, dapo,
dr_grpo, gspo (one module each, imported on first use). A third-party objective registers
itself with `@register("name")`, or is named as "package.module:Class".
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any, Protocol

from torch import Tensor

from rollstream.services.learner.losses import Norm, PolicyInputs, finish


class Objective(Protocol):
    def __call__(
        self, inp: PolicyInputs, norm: Norm | None = None
    ) -> tuple[Tensor, dict[str, float]]: ...


class Finishes:
    """For an objective (a dataclass) with the fields `losses.finish` takes after the per-token
    loss: aggregation `agg` (and its `max_length`), `kl_coef` and `entropy_coef`."""

    agg: str
    max_length: float
    kl_coef: float
    entropy_coef: float

    def finish(
        self, loss: Tensor, inp: PolicyInputs, norm: Norm, metrics: dict[str, float]
    ) -> tuple[Tensor, dict[str, float]]:
        """`losses.finish` with this objective's settings."""
        return finish(
            loss,
            inp,
            self.agg,
            norm,
            max_length=self.max_length,
            kl_coef=self.kl_coef,
            entropy_coef=self.entropy_coef,
            metrics=metrics,
        )


BUILTIN = {
    "ppo": "objectives.ppo",
    "grpo": "objectives.grpo",
    "dapo": "objectives.dapo",
    "dr_grpo": "objectives.drgrpo",
    "gspo": "objectives.gspo",
}

_REGISTRY: dict[str, Callable[..., Objective]] = {}


def register(name: str) -> Callable[[type], type]:
    """Class decorator: make `make_objective(name, **params)` build this class."""

    def deco(cls: type) -> type:
        _REGISTRY[name] = cls
        return cls

    return deco


def make_objective(name: str, **params: Any) -> Objective:
    """The objective registered as `name` (or "module:Class"), built with `params`."""
    if name not in _REGISTRY and name in BUILTIN:
        importlib.import_module(f"rollstream.services.learner.{BUILTIN[name]}")
    factory = _REGISTRY.get(name)
    if factory is None and ":" in name:
        module, attr = name.split(":", 1)
        factory = getattr(importlib.import_module(module), attr)
    if factory is None:
        raise ValueError(f"unknown objective {name!r}; built in: {', '.join(BUILTIN)}")
    return factory(**params)


def available() -> list[str]:
    return sorted(set(BUILTIN) | set(_REGISTRY))
