"""Find a task by name, or load a user's task from a module by dotted path.

`get_task("add")` returns a built-in; `get_task("my_tasks.parity")` imports that module and
returns its `TASK`; `get_task("my_tasks.parity:PARITY")` returns the named object. A task
loaded this way remembers the path (`Task.source`) and its items carry it as their `task`, so
the scorer and the evaluator, in other processes, load it from a rollout or item alone. It is
also registered under its own name for later lookups in the same process. Reads nothing but
the Python import path.
"""

from __future__ import annotations

from dataclasses import replace

from rollstream.services.tasks.base import Task, TaskError
from rollstream.services.tasks.builtin import BUILTIN_TASKS

_REGISTRY: dict[str, Task] = {t.name: t for t in BUILTIN_TASKS}


def list_tasks() -> list[str]:
    """Names of every registered task (built-ins first, then user tasks in load order)."""
    return [key for key, task in _REGISTRY.items() if key == task.name]


def register(task: Task, *, replace: bool = False) -> Task:
    """Add `task` under its name. Another task already under that name is an error unless
    `replace`; registering the very same object again is a no-op."""
    if not isinstance(task, Task):
        raise TaskError(f"expected a Task, got {type(task).__name__}")
    old = _REGISTRY.get(task.name)
    if old is not None and old is not task and not replace:
        raise TaskError(f"a different task is already registered as {task.name!r}")
    _REGISTRY[task.name] = task
    return task


def load_task(spec: str) -> Task:
    """Import a task from "pkg.module:obj" or "pkg.module" (which must define `TASK`)."""
    module_name, _, attr = spec.partition(":")
    attr = attr or "TASK"
    from rollstream.services.runtime.plugins import import_module

    module = import_module(module_name, "task", TaskError)
    obj = getattr(module, attr, None)
    if obj is None:
        raise TaskError(f"module {module_name!r} defines no {attr!r}")
    if not isinstance(obj, Task):
        raise TaskError(f"{spec!r} is a {type(obj).__name__}, not a rollstream Task")
    return obj


def get_task(name: str) -> Task:
    """A registered task by name, else a user task by dotted path (then registered)."""
    task = _REGISTRY.get(name)
    if task is not None:
        return task
    if "." not in name and ":" not in name:
        from rollstream.services.runtime import plugins

        try:
            obj = plugins.entry_point("tasks", name)
        except plugins.PluginError as exc:
            raise TaskError(str(exc)) from exc
        if obj is None:
            installed = ", ".join(plugins.names("tasks")) or "none"
            raise TaskError(
                f"unknown task {name!r}; known: {', '.join(list_tasks())}; installed "
                f"(rollstream.tasks entry points): {installed}"
            )
        if not isinstance(obj, Task):
            raise TaskError(f"entry point {name!r} is a {type(obj).__name__}, not a Task")
        if obj.name != name:
            raise TaskError(f"entry point {name!r} names a task called {obj.name!r}")
        return register(obj)
    task = load_task(name)
    if not task.source:
        task = replace(task, source=name)
    known = _REGISTRY.get(task.name)
    if known is not None and replace(known, source="") == replace(task, source=""):
        task = known  # the same task reached by another spelling of its path
    else:
        register(task)
    _REGISTRY[name] = task
    return task
