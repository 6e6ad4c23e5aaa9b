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
    # kind, the entry's field, look its name up, error; then the params of rewards and filters
    lookups: list[tuple[str, str, Callable[[str], Any], type[Exception]]] = [
        ("tasks", "feed.tasks.{}", get_task, TaskError),
        ("rewards", "scorer.rewards.{}", reward_object, RewardConfigError),
        ("filters", "filter.chain.{}", filter_class, FilterConfigError),
    ]
    check_params = {"rewards": check_reward_params, "filters": check_filter_params}
    errors = []
    for kind, field, look_up, error in lookups:
        for i, entry in enumerate(names.get(kind, [])):
            try:
                look_up(entry["name"])
            except error as exc:
                errors.append(f"{field.format(i)}.{'task' if kind == 'tasks' else 'name'}: {exc}")
                continue
            try:  # the message names the parameter: "params.pattern: ..."
                if kind in check_params:
                    check_params[kind](entry["name"], entry.get("params"))
            except error as exc:
                errors.append(f"{field.format(i)}: {exc}")
    return errors


def main() -> None:
    errors = unresolved(json.loads(sys.stdin.read()))
    print("\n" + json.dumps(errors), flush=True)
    sys.stderr.flush()
    os._exit(0)  # a user's module may have left a thread or a server running


if __name__ == "__main__":
    main()
