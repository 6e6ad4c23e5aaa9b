"""The run-ahead bound: how many prompts the generators have not consumed yet, and whether the
feed may send another. Pure: no I/O (rollstream/services/feed/offsets.py measures the offsets).

"Un-consumed" counts, per partition of `prompts`, the messages between the generator group's
committed offset and the end of the log. A partition the group has never committed counts
from the start of the log (the generators read from the earliest offset). Between two
measurements the feed adds every prompt it sends, so the estimate never undercounts: prompts
only leave the count when a later measurement sees them committed.
"""

from __future__ import annotations

import math
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
    """The feed's view of its lead over the generators.

    The bound is `max_ahead`, or more when the generators consume faster: `lead_polls` poll
    intervals of their measured rate. A fixed bound measured every `poll_s` caps what the feed
    can send at `max_ahead` prompts a poll interval (64 a 0.5 s: 128 prompts a second), and a
    GPU generator that consumed ~100 a second waited for prompts 12-14 % of its time. With a
    lead of more than one poll interval the cap grows with the rate it allows, until the
    generators, not the feed, set the pace; when they slow down the bound shrinks back."""

    max_ahead: int
    lead_polls: float = 0.0
    """Poll intervals of the generators' measured consumption the bound grows to; 0 = fixed."""
    poll_s: float = 0.5
    """Seconds between two measurements (the feed's `poll_s`)."""
    ahead: int = 0
    """Un-consumed prompts at the last measurement plus every prompt sent since."""
    rate: float = 0.0
    """Prompts the generators consumed a second, smoothed over the last measurements."""
    _measured_at: float | None = None

    SMOOTHING = 0.5  # weight of the newest measurement in `rate`

    def measured(self, count: int, now: float | None = None) -> None:
        """A fresh measurement (taken after every sent prompt was acknowledged) at monotonic
        time `now`: what was sent and is no longer un-consumed was consumed since the last."""
        if now is not None:
            if self._measured_at is not None and now > self._measured_at:
                consumed = max(0, self.ahead - count)
                latest = consumed / (now - self._measured_at)
                self.rate += self.SMOOTHING * (latest - self.rate)
            self._measured_at = now
        self.ahead = count

    def sent(self, count: int = 1) -> None:
        self.ahead += count

    @property
    def bound(self) -> int:
        """Most un-consumed prompts allowed now."""
        lead = self.rate * self.lead_polls * self.poll_s
        return max(self.max_ahead, math.ceil(lead))

    @property
    def room(self) -> int:
        """How many more prompts may go out before the next measurement."""
        return max(0, self.bound - self.ahead)
