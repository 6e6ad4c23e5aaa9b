"""Crash on purpose at a named point, for the tests that prove a stage loses nothing.

`ROLLSTREAM_FAILPOINTS="filter.before_outputs=5"` makes the 5th call of
`reached("filter.before_outputs")` return True; the stage then kills its own process at the
worst moment (state written, outputs not). A point armed for a delay (`armed`, e.g.
`faust.slow_seek`) slows a step down on every call to widen a race window. Unset (always,
outside tests) it costs one dict lookup per call.
"""

from __future__ import annotations

import os

_counts: dict[str, int] = {}


def _armed() -> dict[str, int]:
    spec = os.environ.get("ROLLSTREAM_FAILPOINTS", "")
    points = {}
    for item in filter(None, (s.strip() for s in spec.split(","))):
        name, _, n = item.partition("=")
        points[name] = int(n or 1)
    return points


ARMED = _armed()


def reached(name: str) -> bool:
    """True on the Nth call for an armed point `name=N`; False otherwise."""
    if name not in ARMED:
        return False
    _counts[name] = _counts.get(name, 0) + 1
    return _counts[name] == ARMED[name]


def armed(name: str) -> bool:
    """True when `name` is armed at all (for points that delay every call)."""
    return name in ARMED
