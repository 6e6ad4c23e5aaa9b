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

import sys
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

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
