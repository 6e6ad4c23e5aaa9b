"""`python -m rollstream.services.up.names`: resolve the names a run's stages will look up -
the feed's tasks, the scorer's rewards, the filter chain's filters - in a process of its own,
started as the supervisor starts a stage (`python -m` from up's directory, so that directory
is first on the import path, then the run's plugin folders), and print what does not resolve.

Why a process of its own: resolving a user's `package.module:object` imports the module, and
a module may do anything at import (load a model onto a GPU, start a thread or a server).
Inside `up`, which lives as long as the run, that would last the whole run. Nothing is built
here, only looked up.

Reads JSON on stdin: {"plugins": [folder, ...], "tasks": [name, ...], "rewards": [...],
"filters": [...]}. Writes the errors as one JSON list on the last line of stdout, each naming
its config field (`scorer.rewards.1.name: unknown reward 'formt'; ...`), and exits 0 whatever
a user's module left running.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from typing import Any


def unresolved(names: dict[str, Any]) -> list[str]:
    """What does not resolve, each message naming its field."""
    from rollstream.services.filter.chain import FilterConfigError, filter_class
    from rollstream.services.runtime.plugins import PluginError, add_plugin_dirs
    from rollstream.services.scorer.reward import RewardConfigError, reward_object
    from rollstream.services.tasks import get_task
    from rollstream.services.tasks.base import TaskError

    try:
        add_plugin_dirs(names.get("plugins", []))
    except PluginError as exc:
        return [f"plugins: {exc}"]
    lookups: list[tuple[str, str, Callable[[str], Any], type[Exception]]] = [
        ("tasks", "feed.tasks.{}.task", get_task, TaskError),
        ("rewards", "scorer.rewards.{}.name", reward_object, RewardConfigError),
        ("filters", "filter.chain.{}.name", filter_class, FilterConfigError),
    ]
    errors = []
    for kind, field, look_up, error in lookups:
        for i, name in enumerate(names.get(kind, [])):
            try:
                look_up(name)
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
