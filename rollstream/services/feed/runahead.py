"""The run-ahead bound: how many prompts the generators have not consumed yet, and whether the
feed may send another. Pure: no I/O (rollstream/services/feed/offsets.py measures the offsets).

"Un-consumed" counts, per partition of `prompts`, the messages between the generator group's
committed offset and the end of the log. A partition the group has never committed counts
from the start of the log (the generators read from the earliest offset). Between two
measurements the feed adds every prompt it sends, so the estimate never undercounts: prompts
only leave the count when a later measurement sees them committed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


def unconsumed(
    ends: Mapping[int, int], committed: Mapping[int, int], starts: Mapping[int, int]
) -> int:
    """Sum over partitions of end - max(committed, start), never negative per partition.

    `ends`/`starts`: each partition's end (next offset) and first retained offset;
    `committed`: the group's committed offset per partition (absent = none)."""
    total = 0
    for part, end in ends.items():
        start = starts.get(part, 0)
        done = max(committed.get(part, start), start)
        total += max(0, end - done)
    return total


@dataclass
class RunAhead:
    """The feed's view of its lead over the generators."""

    max_ahead: int
    ahead: int = 0
    """Un-consumed prompts at the last measurement plus every prompt sent since."""

    def measured(self, count: int) -> None:
        """A fresh measurement (taken after every sent prompt was acknowledged)."""
        self.ahead = count

    def sent(self, count: int = 1) -> None:
        self.ahead += count

    @property
    def room(self) -> int:
        """How many more prompts may go out before the next measurement."""
        return max(0, self.max_ahead - self.ahead)
