"""The filter's faust app: `rollouts.scored` -> `groups.kept`, `groups.dropped`, `prompt.stats`.

Reads `rollouts.scored` (key group_id, so all samples of a group reach one worker). Writes,
keyed by group_id, each kept Group (with advantages) to `groups.kept` and every drop (with its
reason and numbers) to `groups.dropped`; keyed by task_id, each prompt's running pass rate to
`prompt.stats`. Undecodable messages go to `rollouts.scored.dlq`. Follows `control` (stage
"filter": FilterConfig fields and filter params, applied live onto the run's config through
LiveKnobs, see config.py) and `weights` (the learner's version, for the stale filter).

State, in faust tables (changelogged; a restarted worker rebuilds them): pending groups and
finished group ids, both keyed by group_id and partitioned like the source, so assembly
survives restarts and a redelivered sample of a finished group is ignored instead of emitting
the group twice; and the pass-rate records, keyed by task_id. Because groups of one prompt land
on any partition, each finished group's pass rate is sent to an internal topic keyed by
task_id, whose consumer (one per task) keeps the running average and publishes PromptStats.

Timeouts: a timer on every worker sends a tick to each partition of an internal ticks topic
with the source's partition count; faust assigns co-partitioned topics together, so the owner
of source partition p receives tick p and expires that partition's overdue groups. Table
writes happen only while processing an event of the entry's own partition.

Delivery: one agent per input (concurrency=1, acks in order). Outputs and table changelogs go
out through librdkafka (runtime/faust/sender.py), whose flush is part of faust's producer flush,
and faust flushes the producer before each offset commit. A finished group keeps its samples in
the pending table until the source offset that finished it is committed (each `done` entry is
stamped with the last source offset read on its partition). When a worker takes a partition over
(start, restart, rebalance) it reads back the output partitions for the groups finished since
the last commit (reconcile.py) and sends only what is missing: a worker killed at any point
loses no group and emits none twice. The internal pass-rate observation of such a group is sent
again only when one of its outputs was missing.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import deque
from typing import Any

import msgspec

from rollstream.schemas import DropRecord, SchemaError, ScoredRollout, decode, encode
from rollstream.schemas.topics import dlq_name, qualified
from rollstream.services.filter.assembly import PendingGroup
from rollstream.services.filter.config import LIVE_KNOBS, FilterConfig, validate_control
from rollstream.services.filter.core import FilterCore, Outcome
from rollstream.services.filter.metrics import FilterMetrics
from rollstream.services.filter.pass_rate import PassObservation, PassRecord
from rollstream.services.filter.reconcile import read_back
from rollstream.services.filter.tables import TableView, event_partition
from rollstream.services.runtime import failpoints
from rollstream.services.runtime.faust.app import consumer_lag, make_app, send_dead_letter
from rollstream.services.runtime.faust.sender import Sender
from rollstream.services.runtime.knobs import LiveKnobs
from rollstream.services.runtime.metrics import BusMetrics
from rollstream.services.runtime.settings import KafkaSettings

log = logging.getLogger("rollstream.filter")

SOURCE = "rollouts.scored"
PRUNE_EVERY_S = 60.0
ZERO_VARIANCE_KINDS = {
    "zero_variance_all_correct": "all_correct",
    "zero_variance_all_wrong": "all_wrong",
    "zero_variance": "other",
}


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


TICKS = "rollstream-filter-ticks"
OBSERVATIONS = "rollstream-filter-passrate"


def prepare_topics(kafka: KafkaSettings) -> int:
    """Partition count of `rollouts.scored`; creates the two internal topics with as many
    partitions (the ticks must be co-partitioned with the source). faust does not declare
    topics it only sends to, and a broker that auto-creates topics would make them with one."""
    from confluent_kafka.admin import NewTopic

    from rollstream.services.runtime.admin import admin_client

    admin = admin_client(kafka)
    md = admin.list_topics(timeout=30)
    real = qualified(SOURCE, kafka.namespace)
    topic = md.topics.get(real)
    if topic is None or topic.error is not None or not topic.partitions:
        raise RuntimeError(f"topic {real!r} does not exist; run `rollstream topics create`")
    partitions = len(topic.partitions)
    missing = []
    retention = {TICKS: str(3600 * 1000), OBSERVATIONS: str(24 * 3600 * 1000)}
    for name in (TICKS, OBSERVATIONS):
        internal = qualified(name, kafka.namespace)
        have = md.topics.get(internal)
        if have is None or have.error is not None:
            config = {"retention.ms": retention[name]}
            missing.append(NewTopic(internal, partitions, replication_factor=1, config=config))
        elif len(have.partitions) != partitions:
            raise RuntimeError(
                f"internal topic {internal!r} has {len(have.partitions)} partitions, "
                f"{real!r} has {partitions}; delete it so the filter can recreate it"
            )
    for name, fut in admin.create_topics(missing).items() if missing else []:
        try:
            fut.result()
        except Exception as exc:  # created meanwhile by another worker
            if "exist" not in str(exc).lower():
                raise RuntimeError(f"cannot create {name!r}: {exc}") from exc
    return partitions


def build_app(
    kafka: KafkaSettings,
    config: FilterConfig,
    metrics: FilterMetrics | None,
    bus: BusMetrics,
    *,
    partitions: int,
    instance: str | None = None,
    data_dir: str | None = None,
    control: Any = None,
    weights: Any = None,
) -> Any:
    """The faust app (see module docstring). `control`/`weights` are runtime Followers."""
    ns = kafka.namespace
    app = make_app("filter", kafka, instance=instance, store=config.table_store, data_dir=data_dir)
    sender = Sender(kafka, "filter")  # outputs and changelogs through librdkafka (see there)
    sender.attach(app)
    ticks_name = qualified(TICKS, ns)
    source = app.topic(qualified(SOURCE, ns), ticks_name)
    ticks = app.topic(ticks_name, partitions=partitions, internal=True)
    observations = app.topic(qualified(OBSERVATIONS, ns), partitions=partitions, internal=True)
    kept = app.topic(qualified("groups.kept", ns))
    dropped = app.topic(qualified("groups.dropped", ns))
    stats_topic = app.topic(qualified("prompt.stats", ns))
    dlq = app.topic(qualified(dlq_name(SOURCE), ns))
    kept_name, dropped_name = kept.get_topic_name(), dropped.get_topic_name()
    observations_name, stats_name = observations.get_topic_name(), stats_topic.get_topic_name()
    raw = {"partitions": partitions, "key_type": bytes, "value_type": bytes}  # raw changelogs
    pending_table = app.Table("pending", **raw)
    done_table = app.Table("done", **raw)
    pass_table = app.Table("passrates", **raw)
    for table in (pending_table, done_table, pass_table):
        sender.redirect_changelog(table)
    source_name = qualified(SOURCE, ns)
    last_read: dict[int, int] = {}  # partition -> last source offset read

    def stamp() -> int:
        part = event_partition()
        return last_read.get(-1 if part is None else part, -1)

    done = TableView(done_table, float, event_partition, stamp)
    pending = TableView(pending_table, PendingGroup, event_partition, stamp)
    pass_rates_view = TableView(pass_table, PassRecord, event_partition)
    core = FilterCore(
        config,
        pending=pending,
        done=done,
        pass_rates=pass_rates_view,
        track_pass_rates=False,
        keep_finished=True,
    )
    stage = FilterStage(core, metrics)
    stage.knobs.follower = control
    tracker = core.tracker  # fed by the pass_rates agent, not by the core; follows the knobs
    views = (done, pending, pass_rates_view)
    obs_decoder = msgspec.msgpack.Decoder(PassObservation)
    group_id = qualified("rollstream-filter", ns)
    last_prune: dict[int, float] = {}

    finished: dict[int, deque[tuple[int, str]]] = {}  # partition -> (stamp, group_id)
    reconciled: set[int] = set()

    async def emit(outcome: Outcome, seen: dict[str, list[bytes]] | None = None) -> None:
        """Send an outcome's messages; with `seen` (what reconcile found of this group on the
        output topics) only the missing ones."""
        key = outcome.group_id.encode()
        part = event_partition()
        if seen is None and part is not None:
            finished.setdefault(part, deque()).append((stamp(), outcome.group_id))
        if seen is None and failpoints.reached("filter.before_outputs"):
            await app.producer.flush()  # the state reaches the changelog, the outputs never
            log.warning("failpoint filter.before_outputs: exiting before %s", outcome.group_id)
            os._exit(9)
        missing = False
        if outcome.group is not None and not (seen and seen["kept"]):
            missing = True
            sender.send(kept_name, encode(outcome.group), key, headers=outcome.group.headers())
            bus.messages_out.labels("groups.kept").inc()
        there = {drop_id(decode(v, DropRecord)) for v in seen["dropped"]} if seen else set()
        for drop in outcome.drops:
            if drop_id(drop) in there:
                continue
            missing = True
            sender.send(dropped_name, encode(drop), key, headers=drop.headers())
            bus.messages_out.labels("groups.dropped").inc()
        if seen is not None and not missing:
            return
        if outcome.pass_rate is not None:
            obs = PassObservation(
                task_id=outcome.task_id,
                task=outcome.task,
                pass_rate=outcome.pass_rate,
                policy_version=outcome.policy_version,
            )
            sender.send(observations_name, msgspec.msgpack.encode(obs), outcome.task_id.encode())
        stage.count(outcome)

    def committed(part: int) -> int:
        """The committed offset of source partition `part` (0 if none)."""
        from faust.types import TP

        return int(app.consumer._committed_offset.get(TP(source_name, part)) or 0)

    def forget_committed(part: int) -> None:
        """Drop the samples of finished groups whose outputs a commit has flushed: finished
        when the last source offset read was below the committed offset - 1."""
        queue = finished.get(part)
        limit = committed(part) - 1
        while queue and queue[0][0] < limit:
            core.assembler.forget(queue.popleft()[1])

    async def reconcile(part: int) -> None:
        """First event of `part` since it was assigned. Groups touched after the last commit
        (stamp >= committed - 1) are looked up on the output topics: a finished one that is
        not there is sent again; an unfinished one that is there (its `done` entry was lost
        with the dead worker) is marked done, so its replayed samples are ignored."""
        limit = committed(part) - 1
        last_read[part] = limit
        await app.producer.flush()  # our own sends before a rebalance must count as sent
        queue: list[tuple[int, str]] = []
        unsure: dict[str, float] = {}  # group_id -> when its outputs could first have gone
        for gid in list(core.assembler.pending):
            if gid in done:
                at = done.stamp_of(gid)
                queue.append((at, gid))
                if at >= limit:
                    unsure[gid] = done[gid]
            elif core.assembler.pending[gid].complete:  # finished, its `done` entry lost
                unsure[gid] = core.assembler.pending[gid].first_seen
            elif pending.stamp_of(gid) >= limit:
                unsure[gid] = core.assembler.pending[gid].first_seen
        finished[part] = deque(sorted(queue))
        if not unsure:
            return
        wanted: dict[tuple[str, int], set[bytes]] = {}
        for topic in (kept, dropped):
            # key_partition needs the topic's metadata in the (aiokafka) producer
            await app.producer._ensure_producer().partitions_for(topic.get_topic_name())
            for gid in unsure:
                tp = app.producer.key_partition(topic.get_topic_name(), gid.encode())
                wanted.setdefault((tp.topic, tp.partition), set()).add(gid.encode())
        since_ms = int((min(unsure.values()) - 60.0) * 1000)  # clock-skew margin
        loop = asyncio.get_running_loop()
        try:
            found = await loop.run_in_executor(None, read_back, kafka, wanted, since_ms)
        except Exception as exc:  # better twice than never: send the finished ones again
            log.warning("partition %d: reading outputs back failed (%s)", part, exc)
            found = {}
        names = {"kept": kept_name, "dropped": dropped_name}
        resent = marked = reopened = 0
        now = time.time()
        for gid in unsure:
            key = gid.encode()
            seen = {k: found.get((name, key), []) for k, name in names.items()}
            there = bool(seen["kept"] or seen["dropped"])
            group = core.assembler.pending[gid]
            expired = gid in done and done[gid] - group.first_seen > core.config.group_timeout_s
            if gid in done and not group.complete and not expired:
                # finished, but the write of its last sample(s) was lost (changelog partitions
                # are not written in order): that sample comes again from the source (its
                # offset is past the commit), so a group not sent yet is simply reopened
                if not there:
                    reopened += 1
                    del done[gid]
            elif gid in done or group.complete:
                resent += not there
                if gid not in done:
                    done[gid] = now
                    finished[part].append((limit, gid))
                await emit(core.decide(group, now), seen)
            elif there:
                marked += 1
                done[gid] = now
                finished[part].append((limit, gid))
        finished[part] = deque(e for e in finished[part] if e[1] in done)
        log.info(
            "partition %d: %d group(s) touched after the last commit; %d finished ones sent "
            "again, %d reopened, %d already on the output topics marked done",
            part,
            len(unsure),
            resent,
            reopened,
            marked,
        )

    positions: dict[Any, int] = {}  # tp -> next offset to read
    messages_in = bus.messages_in.labels(SOURCE)

    @app.on_partitions_revoked.connect
    async def on_revoked(_app: Any, revoked: Any, **kwargs: Any) -> None:
        # the state of a partition that moves must be on its changelog before the next
        # owner reads it
        await app.producer.flush()
        for view in views:
            view.forget_cache()

    @app.on_partitions_assigned.connect
    async def on_assigned(_app: Any, assigned: Any, **kwargs: Any) -> None:
        reconciled.clear()  # each partition reconciles on its first event
        for view in views:
            view.forget_cache()  # the tables are recovered from their changelogs

    @app.agent(source, name="assemble", concurrency=1)
    async def assemble(stream: Any) -> None:
        async for event in stream.events():
            m = event.message
            now = time.time()
            if m.partition not in reconciled:
                await reconcile(m.partition)
                reconciled.add(m.partition)
            if weights is not None and weights.latest is not None:
                core.learner_version = weights.latest.version
            if m.topic == ticks_name:
                due = now - last_prune.get(m.partition, 0.0) > PRUNE_EVERY_S
                if due:
                    last_prune[m.partition] = now
                for outcome in core.expire(now, prune=due):
                    await emit(outcome)
                forget_committed(m.partition)
                if metrics is not None:
                    metrics.pending.set(len(core.assembler.pending))
                continue
            messages_in.inc()
            positions[m.tp] = m.offset + 1
            last_read[m.partition] = m.offset
            outcome, error = stage.add(m.value, now)
            if error:
                await send_dead_letter(dlq, bus, SOURCE, m, error, group_id, log)
            elif outcome is not None:
                await emit(outcome)

    @app.agent(observations, name="pass_rates", concurrency=1)
    async def pass_rates(stream: Any) -> None:
        async for event in stream.events():
            obs = obs_decoder.decode(event.message.value)
            record = tracker.update(obs.task_id, obs.task, obs.pass_rate)
            msg = tracker.message(obs.task_id, record, obs.policy_version, time.time())
            sender.send(stats_name, encode(msg), obs.task_id.encode(), headers=msg.headers())
            bus.messages_out.labels("prompt.stats").inc()

    @app.timer(interval=config.tick_s)
    async def tick() -> None:
        for p in range(partitions):
            await ticks.send(value=b"tick", partition=p)

    @app.timer(interval=1.0)
    async def follow() -> None:
        stage.knobs.poll()
        if metrics is not None and core.learner_version is not None:
            metrics.version.set(core.learner_version)

    @app.timer(interval=5.0)
    async def lag() -> None:
        bus.consumer_lag.labels(SOURCE).set(consumer_lag(app, positions))

    return app
