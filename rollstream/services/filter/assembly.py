"""Group assembly: collect the scored samples of each group until all `group_size` arrived.

State lives in two mappings that the caller owns, so the faust app can back them with tables
(changelogged, recovered after a restart) and the tests with dicts:
- `pending`: group_id -> PendingGroup (the samples so far, keyed by rollout_id, so a
  redelivered sample is counted once);
- `done`: group_id -> time the group was finished, so a sample that arrives after its group
  was emitted or dropped (a redelivery, a straggler after a timeout) is ignored instead of
  starting a new group. `prune_done` forgets entries older than a TTL.

With `keep_finished`, a finished group stays in `pending` (complete, and marked in `done`) until
the caller calls `forget`: the faust app keeps it until the source offset that finished it is
committed, so that after a crash it can re-send a group whose outputs never reached the broker.

A pending group whose first sample is older than the timeout is handed back by `expire`; the
caller then drops it or emits what arrived (FilterConfig.timeout_policy). Pure: time is an
argument. The faust app stores pending groups one sample per table entry (tables.PendingTable).
"""

from __future__ import annotations

from collections.abc import MutableMapping
from dataclasses import dataclass
from typing import Literal

import msgspec

from rollstream.schemas import ScoredRollout


class PendingGroup(msgspec.Struct, kw_only=True):
    """The samples of one group seen so far."""

    group_id: str
    task_id: str
    task: str
    group_size: int
    first_seen: float
    samples: dict[str, ScoredRollout] = {}  # rollout_id -> sample

    @property
    def complete(self) -> bool:
        return len(self.samples) >= self.group_size

    def ordered(self) -> list[ScoredRollout]:
        """Samples in sample_index order (then rollout_id), whatever order they arrived in."""
        return sorted(
            self.samples.values(), key=lambda s: (s.rollout.sample_index, s.rollout.rollout_id)
        )


@dataclass(frozen=True)
class Added:
    """What adding one sample did. `group` is set when status is "complete"."""

    status: Literal["pending", "complete", "duplicate", "late"]
    group: PendingGroup | None = None


class GroupAssembler:
    """Adds samples to pending groups; reports complete and expired ones."""

    def __init__(
        self,
        pending: MutableMapping[str, PendingGroup] | None = None,
        done: MutableMapping[str, float] | None = None,
        keep_finished: bool = False,
    ) -> None:
        self.pending: MutableMapping[str, PendingGroup] = {} if pending is None else pending
        self.done: MutableMapping[str, float] = {} if done is None else done
        self.keep_finished = keep_finished

    def add(self, sample: ScoredRollout, now: float) -> Added:
        """Add one sample. A complete group leaves `pending` and is marked done."""
        r = sample.rollout
        if r.group_id in self.done:
            return Added("late")
        group = self.pending.get(r.group_id)
        if group is None:
            group = PendingGroup(
                group_id=r.group_id,
                task_id=r.task_id,
                task=r.task,
                group_size=r.group_size,
                first_seen=now,
                samples={},
            )
        elif r.rollout_id in group.samples:
            return Added("duplicate")
        group.samples[r.rollout_id] = sample
        if group.complete:
            self._finished(group, now)
            return Added("complete", group)
        self.pending[r.group_id] = group  # re-assign: a table only persists on set
        return Added("pending")

    def expire(self, now: float, timeout_s: float) -> list[PendingGroup]:
        """Remove and return the pending groups first seen more than `timeout_s` ago."""
        old = [
            g
            for g in self.pending.values()
            if now - g.first_seen > timeout_s and g.group_id not in self.done
        ]
        for group in old:
            self._finished(group, now)
        return old

    def _finished(self, group: PendingGroup, now: float) -> None:
        if self.keep_finished:
            self.pending[group.group_id] = group
        else:
            self.pending.pop(group.group_id, None)
        self.done[group.group_id] = now

    def forget(self, group_id: str) -> None:
        """Drop a kept finished group's samples (its id stays in `done`)."""
        self.pending.pop(group_id, None)

    def prune_done(self, now: float, ttl_s: float) -> int:
        """Forget finished group ids older than `ttl_s`; returns how many were forgotten."""
        stale = [gid for gid, at in self.done.items() if now - at > ttl_s]
        for gid in stale:
            del self.done[gid]
            self.pending.pop(gid, None)
        return len(stale)
