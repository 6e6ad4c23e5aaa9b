"""User code outside the current directory: plugin folders and installed entry points.

Two ways to bring tasks, rewards and filters that are not built in:

- **A folder** (`rollstream up --plugins DIR`, or `plugins: [DIR, ...]` in the run file): the
  folder goes on `sys.path` of every stage process, so `my_rewards:score` in
  `scorer.rewards` names `DIR/my_rewards.py`. `up` writes the absolute path into the run's
  config, which every stage reads.
- **An installed package** that declares entry points in the groups `rollstream.tasks`,
  `rollstream.rewards` and `rollstream.filters`; each entry point's name is then usable like
  a built-in name (`scorer.rewards: [{name: parity}]`). In the package's pyproject.toml:

      [project.entry-points."rollstream.rewards"]
      parity = "my_pkg.rewards:parity"

Built-in names win over entry points of the same name.
"""

from __future__ import annotations

import importlib
import inspect
import sys
import traceback
from collections.abc import Mapping
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

GROUPS = {
    "tasks": "rollstream.tasks",
    "rewards": "rollstream.rewards",
    "filters": "rollstream.filters",
}


class PluginError(ValueError):
    """A plugin folder that does not exist, or an entry point that fails to load."""


def add_plugin_dirs(dirs: list[str] | tuple[str, ...]) -> list[str]:
    """Put each folder first on `sys.path` (once); return their absolute paths."""
    out = []
    for d in dirs:
        p = Path(d).expanduser().resolve()
        if not p.is_dir():
            raise PluginError(f"plugin folder {d} does not exist (--plugins / plugins:)")
        if str(p) not in sys.path:
            sys.path.insert(0, str(p))
        out.append(str(p))
    return out


def entry_point(kind: str, name: str) -> Any | None:
    """The object that the installed entry point `name` of group `rollstream.<kind>` names,
    or None when no installed package declares it."""
    found = [ep for ep in entry_points(group=GROUPS[kind]) if ep.name == name]
    if not found:
        return None
    ep = found[0]
    try:
        return ep.load()
    except Exception as exc:  # an import error in the user's package: say which one
        raise PluginError(f"entry point {name!r} ({GROUPS[kind]} = {ep.value}): {exc}") from exc


def names(kind: str) -> list[str]:
    """Names of the installed entry points of one kind (for error messages)."""
    return sorted(ep.name for ep in entry_points(group=GROUPS[kind]))


def find(
    kind: str, spec: str, builtins: Mapping[str, str], error: type[Exception], what: str
) -> Any:
    """The object a stage's config names by `spec`, looked for in this order: a built-in name
    (`builtins` maps it to its "module:attr" path), a "package.module:attr" path, the name of
    an installed entry point of group `rollstream.<kind>`. What is missing raises `error`
    saying what was tried; `what` is what the attr should be ("Class", "object")."""
    noun = kind.removesuffix("s")
    if spec in builtins:
        return _import_path(builtins[spec], noun, what, error)
    if ":" in spec:
        return _import_path(spec, noun, what, error)
    try:
        obj = entry_point(kind, spec)
    except PluginError as exc:
        raise error(str(exc)) from exc
    if obj is None:
        known = ", ".join(sorted(builtins))
        installed = ", ".join(names(kind)) or "none"
        raise error(
            f"unknown {noun} {spec!r}; built-ins: {known}; installed ({GROUPS[kind]} entry "
            f"points): {installed}; or give 'package.module:{what}'"
        )
    return obj


def _import_path(spec: str, noun: str, what: str, error: type[Exception]) -> Any:
    """The object at "package.module:attr" (attr may be dotted, "Class.attr"); `error` when
    the module does not import (missing, or raising while it runs: a SyntaxError in the
    user's file) or lacks the attr."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise error(f"{noun} path {spec!r} must look like 'package.module:{what}'")
    obj = import_module(module_name, noun, error)
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise error(f"module {module_name!r} has no {attr!r}")
        obj = getattr(obj, part)
    return obj


def import_module(module_name: str, noun: str, error: type[Exception]) -> Any:
    """Import a user's module; `error` when it does not import: missing, or raising while it
    runs (a SyntaxError in the user's file, a KeyError at import), saying how and where."""
    try:
        return importlib.import_module(module_name)
    except ImportError as exc:
        raise error(f"cannot import {noun} module {module_name!r}: {exc}") from exc
    except Exception as exc:  # the user's module itself is broken: say how, and where
        where = ""
        if not isinstance(exc, SyntaxError) and exc.__traceback__ is not None:
            frame = traceback.extract_tb(exc.__traceback__)[-1]
            where = f" ({Path(frame.filename).name}, line {frame.lineno})"
        raise error(
            f"cannot import {noun} module {module_name!r}: {type(exc).__name__}: {exc}{where}"
        ) from exc


def params_problem(obj: Any, params: Mapping[str, Any], base: type[BaseModel]) -> str | None:
    """Why building a user's reward or filter with `params` would fail, found without building
    it; None when nothing is known to be wrong (a call it cannot read is given the benefit of
    the doubt). `obj` is a class, called `obj(**params)`, or a function, called
    `obj(rollout, **params)`. The class or function's own signature decides first; what falls
    into a class's `**params` is then checked against its `Params` model when that model
    derives from `base` (RewardParams, FilterParams: the built-ins' convention)."""
    if inspect.isclass(obj) and issubclass(obj, BaseModel):
        return None  # a pydantic model checks its fields itself, maybe ignoring extra ones
    try:
        signature = inspect.signature(obj, follow_wrapped=False)
    except (TypeError, ValueError):  # no signature to read (a C function)
        return None
    try:
        bound = signature.bind(**params) if inspect.isclass(obj) else signature.bind(None, **params)
    except TypeError as exc:
        return f"params: {exc}"
    model = getattr(obj, "Params", None)
    rest = [p.name for p in signature.parameters.values() if p.kind is p.VAR_KEYWORD]
    if not (inspect.isclass(obj) and rest and inspect.isclass(model) and issubclass(model, base)):
        return None
    try:
        model.model_validate(dict(bound.arguments.get(rest[0], {})))
    except ValidationError as exc:
        return validation_problems(exc)
    return None


def validation_problems(exc: ValidationError) -> str:
    """A Params model's validation errors, each naming its field: "params.lo: ...; ..."."""
    return "; ".join(
        f"params.{'.'.join(str(p) for p in err['loc']) or '(root)'}: {err['msg']}"
        for err in exc.errors()
    )
