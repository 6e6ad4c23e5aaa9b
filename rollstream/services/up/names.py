"""`python -m rollstream.services.up.names`: resolve the names a run's stages will look up -
the feed's tasks, the scorer's rewards, the filter chain's filters - in a process of its own,
started as the supervisor starts a stage (`python -m` from up's directory, so that directory
is first on the import path, then the run's plugin folders), and print what does not resolve.

Why a process of its own: resolving a user's `package.module:object` imports the module, and
a module may do anything at import (load a model onto a GPU, start a thread or a server).
Inside `up`, which lives as long as the run, that would last the whole run. Nothing is built
here, only looked up and checked.

Reads JSON on stdin: {"plugins": [folder, ...], "tasks": [{"name": ...}, ...], "rewards":
[{"name": ..., "params": {...}}, ...], "filters": [...]}. A reward's or filter's params are
checked as it would check them when built (a built-in's Params model; a user's function or
class by its signature), but nothing is built. Writes the errors as one JSON list on the last
line of stdout, each naming its config field (`scorer.rewards.1.name: unknown reward 'formt';
...`), and exits 0 whatever a user's module left running.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from typing import Any


def unresolved(names: dict[str, Any]) -> list[str]:
    """What does not resolve, each message naming its field."""
    from rollstream.services.filter.chain import (
        FilterConfigError,
        check_filter_params,
        filter_class,
    )
    from rollstream.services.runtime.plugins import PluginError, add_plugin_dirs
    from rollstream.services.scorer.reward import (
        RewardConfigError,
        check_reward_params,
        reward_object,
    )
    from rollstream.services.tasks import get_task
    from rollstream.services.tasks.base import TaskError

    try:
        add_plugin_dirs(names.get("plugins", []))
    except PluginError as exc:
        return [f"plugins: {exc}"]
    # kind, the entries' field, the name's key, look the name up, check the params, error
    lookups: list[
        tuple[str, str, str, Callable[[str], Any], Callable[..., Any], type[Exception]]
    ] = [
        ("tasks", "feed.tasks.{}", "task", get_task, _takes_none, TaskError),
        (
            "rewards",
            "scorer.rewards.{}",
            "name",
            reward_object,
            check_reward_params,
            RewardConfigError,
        ),
        (
            "filters",
            "filter.chain.{}",
            "name",
            filter_class,
            check_filter_params,
            FilterConfigError,
        ),
    ]
    errors = []
    for kind, field, key, look_up, check, error in lookups:
        for i, entry in enumerate(names.get(kind, [])):
            try:
                look_up(entry["name"])
            except error as exc:
                errors.append(f"{field.format(i)}.{key}: {exc}")
                continue
            try:  # the message names the parameter: "params.pattern: ..."
                check(entry["name"], entry.get("params"))
            except error as exc:
                errors.append(f"{field.format(i)}: {exc}")
    return errors


def _takes_none(name: str, params: Any) -> None:
    """A task entry has no params to check."""


def main() -> None:
    errors = unresolved(json.loads(sys.stdin.read()))
    print("\n" + json.dumps(errors), flush=True)
    sys.stderr.flush()
    os._exit(0)  # a user's module may have left a thread or a server running


if __name__ == "__main__":
    main()
