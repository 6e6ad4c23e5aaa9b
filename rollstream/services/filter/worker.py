"""The filter worker without faust: what one filter process does with each event it is handed.

`FilterWorker` owns the pure FilterCore (group assembly, filter chain, advantages), its state
(three bytes-keyed mappings: faust tables in the app, dicts in the tests, seen through
TableViews), the per-partition bookkeeping of finished groups, and the counters. Every method
takes plain values (partition numbers, offsets, message bytes, the committed offset, the
clock) and sends through a `Send`er (`send(topic, value, key, headers=...)`); app.py is the
faust wiring that calls them (agents, timers, rebalance callbacks, reads of faust's state).
See app.py's docstring for the delivery contract these methods implement.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any, Protocol

import msgspec

from rollstream.schemas import DropRecord, SchemaError, ScoredRollout, decode, encode
from rollstream.services.filter.config import LIVE_KNOBS, FilterConfig, validate_control
from rollstream.services.filter.core import FilterCore, Outcome
from rollstream.services.filter.metrics import FilterMetrics
from rollstream.services.filter.pass_rate import PassObservation, PassRecord
from rollstream.services.filter.tables import PendingTable, TableView
from rollstream.services.runtime.knobs import LiveKnobs
from rollstream.services.runtime.metrics import BusMetrics

log = logging.getLogger("rollstream.filter")

SOURCE = "rollouts.scored"
PRUNE_EVERY_S = 60.0
ZERO_VARIANCE_KINDS = {
    "zero_variance_all_correct": "all_correct",
    "zero_variance_all_wrong": "all_wrong",
    "zero_variance": "other",
}


class Send(Protocol):
    """Where the worker's messages go (runtime/faust/sender.py's Sender in the app)."""

    def send(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None = None,
        *,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> Any: ...


@dataclass(frozen=True)
class OutputTopics:
    """The real (namespaced) names of the topics the worker sends to."""

    kept: str
    dropped: str
    observations: str  # internal, keyed by task_id
    stats: str


@dataclass
class Reconcile:
    """A partition just taken over: the groups touched after its last commit, whose outputs
    must be looked up on the output topics (group_id -> when they could first have gone)."""

    part: int
    limit: int  # committed offset - 1
    unsure: dict[str, float]


class FilterStage:
    """Glue between decoded messages and the pure FilterCore; counts what happened. Its live
    knobs apply onto the config the core was built with (the run's); the app sets
    `knobs.follower` and polls them between two events."""

    def __init__(self, core: FilterCore, metrics: FilterMetrics | None = None) -> None:
        self.core = core
        self.metrics = metrics
        self.groups_seen = 0
        self.zero_var = dict.fromkeys(ZERO_VARIANCE_KINDS.values(), 0)
        self.knobs = LiveKnobs(
            "filter",
            core.config,
            validate_control,
            self._use_knobs,
            LIVE_KNOBS,
            counter=metrics.control if metrics is not None else None,
        )

    def _use_knobs(self, config: FilterConfig, changed: frozenset[str]) -> None:
        """LiveKnobs' callback: the core reads its config at every group."""
        self.core.configure(config)

    def add(self, data: bytes, now: float) -> tuple[Outcome | None, str]:
        """(outcome of a completed group or None, "" or why the message is a dead letter)."""
        try:
            sample = decode(data, ScoredRollout)
        except SchemaError as exc:
            return None, str(exc)
        added, outcome = self.core.add(sample, now)
        if added.status in ("duplicate", "late") and self.metrics is not None:
            self.metrics.ignored.labels(added.status).inc()
        return outcome, ""

    def count(self, outcome: Outcome) -> None:
        m = self.metrics
        if m is None:
            return
        self.groups_seen += 1
        kind = None
        for drop in outcome.drops:
            n = len(drop.rollout_ids)
            m.samples_dropped.labels(drop.filter, drop.reason).inc(n)
            if drop.scope == "group":
                m.dropped.labels(drop.filter, drop.reason).inc()
            kind = ZERO_VARIANCE_KINDS.get(drop.reason, kind)
        if kind is not None:
            self.zero_var[kind] += 1
            m.zero_variance.labels(kind).inc()
        for name, value in self.zero_var.items():
            m.zero_variance_ratio.labels(name).set(value / self.groups_seen)
        if outcome.group is not None:
            m.kept.inc()
            m.samples_kept.inc(len(outcome.group.samples))
            for a in outcome.group.advantages:
                m.advantage_abs.observe(abs(a))
        if outcome.partial:
            m.timed_out.labels(self.core.config.timeout_policy).inc()
        m.assembly.observe(outcome.assembly_s)


def drop_id(drop: DropRecord) -> tuple[str, str, str]:
    return drop.filter, drop.reason, drop.scope


def _no_partition() -> int | None:
    return None


class FilterWorker:
    """One filter worker's state and steps (see module docstring). `tables` are the raw
    pending, done and pass-rate mappings (dicts when not given); `partition` names the source
    partition of the event being handled (faust's current event in the app), which table
    writes are tagged with."""

    def __init__(
        self,
        config: FilterConfig,
        sender: Send,
        topics: OutputTopics,
        bus: BusMetrics,
        metrics: FilterMetrics | None = None,
        *,
        tables: tuple[MutableMapping[bytes, bytes], ...] | None = None,
        partition: Callable[[], int | None] = _no_partition,
    ) -> None:
        pending_table, done_table, pass_table = tables or ({}, {}, {})
        self.sender, self.topics, self.bus, self.metrics = sender, topics, bus, metrics
        self.partition = partition
        self.last_read: dict[int, int] = {}  # partition -> last source offset read
        self.done = TableView(done_table, float, partition, self._stamp)
        self.pending = PendingTable(pending_table, partition, self._stamp)
        self.pass_rates = TableView(pass_table, PassRecord, partition)
        self.core = FilterCore(
            config,
            pending=self.pending,
            done=self.done,
            pass_rates=self.pass_rates,
            track_pass_rates=False,
            keep_finished=True,
        )
        self.stage = FilterStage(self.core, metrics)
        self.finished: dict[int, deque[tuple[int, str]]] = {}  # partition -> (stamp, group_id)
        self.reconciled: set[int] = set()  # partitions reconciled since the last assignment
        self.last_prune: dict[int, float] = {}
        self._obs_decoder = msgspec.msgpack.Decoder(PassObservation)
        self._messages_in = bus.messages_in.labels(SOURCE)

    def _stamp(self) -> int:
        part = self.partition()
        return self.last_read.get(-1 if part is None else part, -1)

    # -- the source: samples and ticks ---------------------------------------------------

    def read(self, part: int, offset: int, value: bytes, now: float) -> tuple[Outcome | None, str]:
        """One `rollouts.scored` message: (outcome of the group it completed or None, "" or
        why it is a dead letter). The outcome is not sent yet: call `emit`."""
        self._messages_in.inc()
        self.last_read[part] = offset
        return self.stage.add(value, now)

    def expire(self, part: int, now: float) -> list[Outcome]:
        """A tick for `part`: the outcomes of its overdue groups (to `emit`); finished ids
        older than done_ttl_s are pruned at most every PRUNE_EVERY_S."""
        due = now - self.last_prune.get(part, 0.0) > PRUNE_EVERY_S
        if due:
            self.last_prune[part] = now
        return self.core.expire(now, prune=due)

    def forget_committed(self, part: int, committed: int) -> None:
        """Drop the samples of finished groups whose outputs a commit has flushed: finished
        when the last source offset read was below the `committed` offset - 1."""
        queue = self.finished.get(part)
        limit = committed - 1
        while queue and queue[0][0] < limit:
            self.core.assembler.forget(queue.popleft()[1])
        if self.metrics is not None:
            self.metrics.pending.set(len(self.core.assembler.pending))

    def follow(self, learner_version: int | None) -> None:
        """The newest policy version the learner published (for the stale filter)."""
        if learner_version is not None:
            self.core.learner_version = learner_version

    def poll_knobs(self) -> None:
        """Apply a new control revision, if any; export the policy version."""
        self.stage.knobs.poll()
        if self.metrics is not None and self.core.learner_version is not None:
            self.metrics.version.set(self.core.learner_version)

    # -- outputs -------------------------------------------------------------------------

    def emit(
        self, outcome: Outcome, part: int | None, seen: Mapping[str, list[bytes]] | None = None
    ) -> None:
        """Send an outcome's messages (finished on source partition `part`); with `seen`
        (what reconcile found of this group on the output topics: "kept" and "dropped"
        values) only the missing ones, and nothing at all when none is missing."""
        if seen is None and part is not None:
            self.finished.setdefault(part, deque()).append((self._stamp(), outcome.group_id))
        key = outcome.group_id.encode()
        missing = False
        if outcome.group is not None and not (seen and seen["kept"]):
            missing = True
            group = outcome.group
            self.sender.send(self.topics.kept, encode(group), key, headers=group.headers())
            self.bus.messages_out.labels("groups.kept").inc()
        there = {drop_id(decode(v, DropRecord)) for v in seen["dropped"]} if seen else set()
        for drop in outcome.drops:
            if drop_id(drop) in there:
                continue
            missing = True
            self.sender.send(self.topics.dropped, encode(drop), key, headers=drop.headers())
            self.bus.messages_out.labels("groups.dropped").inc()
        if seen is not None and not missing:
            return
        if outcome.pass_rate is not None:
            obs = PassObservation(
                task_id=outcome.task_id,
                task=outcome.task,
                pass_rate=outcome.pass_rate,
                policy_version=outcome.policy_version,
            )
            value = msgspec.msgpack.encode(obs)
            self.sender.send(self.topics.observations, value, outcome.task_id.encode())
        self.stage.count(outcome)

    def observe(self, value: bytes, now: float) -> None:
        """One pass-rate observation (internal topic, keyed by task_id): update the prompt's
        running pass rate and publish its PromptStats."""
        obs = self._obs_decoder.decode(value)
        tracker = self.core.tracker  # fed here, not by the core; follows the knobs
        record = tracker.update(obs.task_id, obs.task, obs.pass_rate)
        msg = tracker.message(obs.task_id, record, obs.policy_version, now)
        key = obs.task_id.encode()
        self.sender.send(self.topics.stats, encode(msg), key, headers=msg.headers())
        self.bus.messages_out.labels("prompt.stats").inc()

    # -- partitions taken over -----------------------------------------------------------

    def assigned(self) -> None:
        """Partitions were assigned: each reconciles on its first event, the tables are
        recovered from their changelogs."""
        self.reconciled.clear()
        self.forget_cache()

    def forget_cache(self) -> None:
        for view in (self.done, self.pending, self.pass_rates):
            view.forget_cache()

    def plan_reconcile(
        self, part: int, committed: int, replayed: Mapping[str, float] | None = None
    ) -> Reconcile:
        """First event of `part` since it was assigned, `committed` its committed offset,
        `replayed` the groups with a sample at or past it (group_id -> when the first such
        sample was written). Unsure, so their outputs must be looked up (`settle` then acts on
        what was found): the groups touched after the last commit (stamp >= committed - 1),
        and the unfinished or unknown groups about to be read again. A table write lost with a
        dead worker leaves no stamp, while its outputs may have reached the broker: without the
        second set, the group's samples read again would finish it a second time."""
        limit = committed - 1
        self.last_read[part] = limit
        pending, done = self.core.assembler.pending, self.done
        queue: list[tuple[int, str]] = []
        unsure: dict[str, float] = {}  # group_id -> when its outputs could first have gone
        for gid in list(pending):
            if gid in done:
                at = done.stamp_of(gid)
                queue.append((at, gid))
                if at >= limit:
                    unsure[gid] = done[gid]
            elif pending[gid].complete:  # finished, its `done` entry lost
                unsure[gid] = pending[gid].first_seen
            elif self.pending.stamp_of(gid) >= limit:
                unsure[gid] = pending[gid].first_seen
        for gid, written in (replayed or {}).items():
            if gid not in unsure and gid not in done:
                unsure[gid] = pending[gid].first_seen if gid in pending else written
        self.finished[part] = deque(sorted(queue))
        return Reconcile(part, limit, unsure)

    def settle(
        self, plan: Reconcile, found: Mapping[tuple[str, bytes], list[bytes]], now: float
    ) -> None:
        """Act on what the output topics hold of `plan.unsure` (`found`: values by (topic,
        key)): a finished group that is not there is sent again; an unfinished one that is
        there (its `done` entry was lost with the dead worker) is marked done, so its replayed
        samples are ignored."""
        part, limit, core, done = plan.part, plan.limit, self.core, self.done
        names = {"kept": self.topics.kept, "dropped": self.topics.dropped}
        resent: list[str] = []
        marked = reopened = 0
        for gid in plan.unsure:
            key = gid.encode()
            seen = {k: list(found.get((name, key), [])) for k, name in names.items()}
            there = bool(seen["kept"] or seen["dropped"])
            group = core.assembler.pending.get(gid)  # None: seen only past the commit
            if group is None or (gid not in done and not group.complete):
                if there:  # unfinished here, yet out: the dead worker finished it
                    marked += 1
                    done[gid] = now
                    self.finished[part].append((limit, gid))
                continue
            expired = gid in done and done[gid] - group.first_seen > core.config.group_timeout_s
            if gid in done and not group.complete and not expired:
                # finished, but the write of its last sample(s) was lost (changelog partitions
                # are not written in order): that sample comes again from the source (its
                # offset is past the commit), so a group not sent yet is simply reopened
                if not there:
                    reopened += 1
                    del done[gid]
            else:
                if not there:
                    resent.append(gid)
                if gid not in done:
                    done[gid] = now
                    self.finished[part].append((limit, gid))
                self.emit(core.decide(group, now), part, seen)
        self.finished[part] = deque(e for e in self.finished[part] if e[1] in done)
        log.info(
            "partition %d: %d group(s) touched after the last commit; %d finished ones sent "
            "again %s, %d reopened, %d already on the output topics marked done",
            part,
            len(plan.unsure),
            len(resent),
            sorted(resent)[:20],
            reopened,
            marked,
        )
