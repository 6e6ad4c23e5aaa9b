"""The filter's faust app: `rollouts.scored` -> `groups.kept`, `groups.dropped`, `prompt.stats`.

Reads `rollouts.scored` (key group_id, so all samples of a group reach one worker). Writes,
keyed by group_id, each kept Group (with advantages) to `groups.kept` and every drop (with its
reason and numbers) to `groups.dropped`; keyed by task_id, each prompt's running pass rate to
`prompt.stats`. Undecodable messages go to `rollouts.scored.dlq`. Follows `control` (stage
"filter": FilterConfig fields and filter params, applied live onto the run's config through
LiveKnobs, see config.py) and `weights` (the learner's version, for the stale filter).

State, in faust tables (changelogged; a restarted worker rebuilds them): the samples of
pending groups (one entry a sample, keyed group_id and rollout_id: tables.PendingTable) and
finished group ids (keyed by group_id), partitioned like the source, so assembly survives
restarts and a redelivered sample of a finished group is ignored instead of emitting
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
(start, restart, rebalance) it reads back the output partitions for the groups touched since
the last commit, and for every group with a sample past it (a table write lost with a dead
worker leaves no trace in the tables, while its outputs may be out), and sends only what is
missing (reconcile.py): a worker killed at any point loses no group and emits none twice. The
internal pass-rate observation of such a group is sent again only when one of its outputs was
missing.

What each event does is FilterWorker's (worker.py, no faust in it); this module wires it into
faust: the agents, timers and rebalance callbacks, faust's committed offsets and partitioner,
and the `filter.before_outputs` and `filter.outputs_without_state` failpoints
(runtime/failpoints.py).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Iterable
from typing import Any

from rollstream.schemas.topics import dlq_name, qualified
from rollstream.services.filter.config import FilterConfig
from rollstream.services.filter.core import Outcome
from rollstream.services.filter.metrics import FilterMetrics
from rollstream.services.filter.reconcile import read_back, replayed_groups
from rollstream.services.filter.tables import event_partition
from rollstream.services.filter.worker import SOURCE, FilterWorker, OutputTopics
from rollstream.services.filter.worker import FilterStage as FilterStage  # re-exported
from rollstream.services.runtime import failpoints
from rollstream.services.runtime.faust.app import consumer_lag, make_app, send_dead_letter
from rollstream.services.runtime.faust.sender import Sender
from rollstream.services.runtime.metrics import BusMetrics
from rollstream.services.runtime.settings import KafkaSettings

log = logging.getLogger("rollstream.filter")

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


def committed_offset(app: Any, topic: str, part: int) -> int:
    """The committed offset of `topic` partition `part` on the app's consumer (0 if none);
    faust keeps it in a private field."""
    from faust.types import TP

    return int(app.consumer._committed_offset.get(TP(topic, part)) or 0)


async def output_partitions(
    app: Any, topics: Iterable[str], keys: Iterable[str]
) -> dict[tuple[str, int], set[bytes]]:
    """(topic, partition) -> the keys that land there, as faust's producer places them."""
    wanted: dict[tuple[str, int], set[bytes]] = {}
    for name in topics:
        # key_partition needs the topic's metadata in the (aiokafka) producer
        await app.producer._ensure_producer().partitions_for(name)
        for key in keys:
            tp = app.producer.key_partition(name, key.encode())
            wanted.setdefault((tp.topic, tp.partition), set()).add(key.encode())
    return wanted


async def reconcile(app: Any, worker: FilterWorker, kafka: KafkaSettings, part: int) -> None:
    """First event of source partition `part` since it was assigned: look the groups touched
    after the last commit, and those with samples past it, up on the output topics
    (reconcile.py) and let the worker send what is missing (FilterWorker.plan_reconcile,
    .settle)."""
    if failpoints.armed("filter.slow_reconcile"):  # tests: the agent is busy for a while
        await asyncio.sleep(1.5)
    committed = committed_offset(app, qualified(SOURCE, kafka.namespace), part)
    await app.producer.flush()  # our own sends before a rebalance must count as sent
    loop = asyncio.get_running_loop()
    try:
        replayed = await loop.run_in_executor(None, replayed_groups, kafka, SOURCE, part, committed)
    except Exception as exc:  # then only the stamps tell which groups are unsure
        log.warning("partition %d: reading the source past the commit failed (%s)", part, exc)
        replayed = {}
    plan = worker.plan_reconcile(part, committed, replayed)
    if not plan.unsure:
        return
    outputs = (worker.topics.kept, worker.topics.dropped)
    wanted = await output_partitions(app, outputs, plan.unsure)
    since_ms = int((min(plan.unsure.values()) - 60.0) * 1000)  # clock-skew margin
    try:
        found = await loop.run_in_executor(None, read_back, kafka, wanted, since_ms)
    except Exception as exc:  # better twice than never: send the finished ones again
        log.warning("partition %d: reading outputs back failed (%s)", part, exc)
        found = {}
    worker.settle(plan, found, time.time())


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
    observations = app.topic(qualified(OBSERVATIONS, ns), partitions=partitions, internal=True)
    topics = OutputTopics(
        kept=app.topic(qualified("groups.kept", ns)).get_topic_name(),
        dropped=app.topic(qualified("groups.dropped", ns)).get_topic_name(),
        observations=observations.get_topic_name(),
        stats=app.topic(qualified("prompt.stats", ns)).get_topic_name(),
    )
    raw = {"partitions": partitions, "key_type": bytes, "value_type": bytes}  # raw changelogs
    tables = tuple(app.Table(name, **raw) for name in ("pending", "done", "passrates"))
    for table in tables:
        sender.redirect_changelog(table)
    worker = FilterWorker(
        config, sender, topics, bus, metrics, tables=tables, partition=event_partition
    )
    worker.stage.knobs.follower = control
    add_agents(app, worker, sender, kafka, bus, partitions, observations, weights)
    return app


def add_agents(
    app: Any,
    worker: FilterWorker,
    sender: Sender,
    kafka: KafkaSettings,
    bus: BusMetrics,
    partitions: int,
    observations: Any,
    weights: Any,
) -> None:
    """The agents, timers and rebalance callbacks of the filter app, each a call of `worker`."""
    ns = kafka.namespace
    ticks_name, source_name = qualified(TICKS, ns), qualified(SOURCE, ns)
    source = app.topic(source_name, ticks_name)
    ticks = app.topic(ticks_name, partitions=partitions, internal=True)
    dlq = app.topic(qualified(dlq_name(SOURCE), ns))
    group_id = qualified("rollstream-filter", ns)
    positions: dict[Any, int] = {}  # tp -> next offset to read

    async def emit(outcomes: Iterable[Outcome], part: int) -> None:
        for outcome in outcomes:
            if failpoints.reached("filter.before_outputs"):
                await app.producer.flush()  # the state reaches the changelog, the outputs never
                log.warning("failpoint filter.before_outputs: exiting before %s", outcome.group_id)
                os._exit(9)
            if sender.losing_changelog:  # filter.outputs_without_state: outputs, no state
                worker.emit(outcome, part)
                await app.producer.flush()
                gid = outcome.group_id
                log.warning("failpoint filter.outputs_without_state: exiting after %s", gid)
                os._exit(9)
            worker.emit(outcome, part)

    @app.on_partitions_revoked.connect
    async def on_revoked(_app: Any, revoked: Any, **kwargs: Any) -> None:
        # the state of a partition that moves must be on its changelog before the next
        # owner reads it
        await app.producer.flush()
        worker.forget_cache()

    @app.on_partitions_assigned.connect
    async def on_assigned(_app: Any, assigned: Any, **kwargs: Any) -> None:
        worker.assigned()

    @app.on_rebalance_complete.connect
    async def on_recovered(_app: Any, **kwargs: Any) -> None:
        # the tables are whole now: a partition reconciles again on its next event, and the
        # views read the recovered tables (nothing read during the recovery is trusted)
        worker.assigned()

    @app.agent(source, name="assemble", concurrency=1)
    async def assemble(stream: Any) -> None:
        async for event in stream.events():
            m, now = event.message, time.time()
            if m.partition not in worker.reconciled:
                await reconcile(app, worker, kafka, m.partition)
                worker.reconciled.add(m.partition)
            if weights is not None and weights.latest is not None:
                worker.follow(weights.latest.version)
            if m.topic == ticks_name:
                await emit(worker.expire(m.partition, now), m.partition)
                committed = committed_offset(app, source_name, m.partition)
                worker.forget_committed(m.partition, committed)
                continue
            if failpoints.reached("filter.outputs_without_state"):
                sender.lose_changelog()  # this event's table writes never reach the broker
            positions[m.tp] = m.offset + 1
            outcome, error = worker.read(m.partition, m.offset, m.value, now)
            if error:
                await send_dead_letter(dlq, bus, SOURCE, m, error, group_id, log)
            elif outcome is not None:
                await emit([outcome], m.partition)

    @app.agent(observations, name="pass_rates", concurrency=1)
    async def pass_rates(stream: Any) -> None:
        async for event in stream.events():
            worker.observe(event.message.value, time.time())

    @app.timer(interval=worker.core.config.tick_s)
    async def tick() -> None:
        for p in range(partitions):
            await ticks.send(value=b"tick", partition=p)

    @app.timer(interval=1.0)
    async def follow() -> None:
        worker.poll_knobs()

    @app.timer(interval=5.0)
    async def lag() -> None:
        bus.consumer_lag.labels(SOURCE).set(consumer_lag(app, positions))
