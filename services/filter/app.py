"""The filter's faust app: `rollouts.scored` -> `groups.kept`, `groups.dropped`, `prompt.stats`.

Reads `rollouts.scored` (key group_id, so all samples of a group reach one worker). Writes,
keyed by group_id, each kept Group (with advantages) to `groups.kept` and every drop (with its
reason and numbers) to `groups.dropped`; keyed by task_id, each prompt's running pass rate to
`prompt.stats`. Undecodable messages go to `rollouts.scored.dlq`. Follows `control` (stage
"filter": FilterConfig fields and filter params, applied live) and `weights` (the learner's
version, for the stale filter).

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

Delivery: one agent per input (concurrency=1, acks in order); faust flushes the producer
before each offset commit, so outputs are at least once. A crash between sending a group and
the commit of its table update can emit that group again; replay and learner drop repeats by
group_id.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import msgspec

from rollstream.schemas import SchemaError, ScoredRollout, decode, encode
from rollstream.schemas.topics import dlq_name, qualified
from rollstream.services.filter.assembly import PendingGroup
from rollstream.services.filter.chain import FilterConfigError
from rollstream.services.filter.config import FilterConfig
from rollstream.services.filter.core import FilterCore, Outcome
from rollstream.services.filter.metrics import FilterMetrics
from rollstream.services.filter.pass_rate import PassObservation, PassRateTracker, PassRecord
from rollstream.services.filter.tables import TableView, event_partition
from rollstream.services.runtime.faust_app import consumer_lag, make_app, send_dead_letter
from rollstream.services.runtime.metrics import BusMetrics
from rollstream.services.runtime.service import apply_control
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
    """Glue between decoded messages and the pure FilterCore; counts what happened."""

    def __init__(self, core: FilterCore, metrics: FilterMetrics | None = None) -> None:
        self.core = core
        self.metrics = metrics
        self.groups_seen = 0
        self.zero_var = dict.fromkeys(ZERO_VARIANCE_KINDS.values(), 0)

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

    def apply_control(self, params: dict[str, Any]) -> bool:
        """Apply live knobs; False (and a log line) when they are invalid."""
        counter = self.metrics.control if self.metrics is not None else None
        return apply_control("filter", self.core.update, params, counter, (FilterConfigError,))


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
    ticks_name = qualified(TICKS, ns)
    source = app.topic(qualified(SOURCE, ns), ticks_name)
    ticks = app.topic(ticks_name, partitions=partitions, internal=True)
    observations = app.topic(qualified(OBSERVATIONS, ns), partitions=partitions, internal=True)
    kept = app.topic(qualified("groups.kept", ns))
    dropped = app.topic(qualified("groups.dropped", ns))
    stats_topic = app.topic(qualified("prompt.stats", ns))
    dlq = app.topic(qualified(dlq_name(SOURCE), ns))
    raw = {"partitions": partitions, "key_type": bytes, "value_type": bytes}  # raw changelogs
    pending_table = app.Table("pending", **raw)
    done_table = app.Table("done", **raw)
    pass_table = app.Table("passrates", **raw)

    core = FilterCore(
        config,
        pending=TableView(pending_table, PendingGroup, event_partition),
        done=TableView(done_table, float, event_partition),
        track_pass_rates=False,
    )
    stage = FilterStage(core, metrics)
    tracker = PassRateTracker(
        config.pass_rate_alpha,
        config.pass_rate_recent,
        TableView(pass_table, PassRecord, event_partition),
    )
    obs_decoder = msgspec.msgpack.Decoder(PassObservation)
    group_id = qualified("rollstream-filter", ns)
    last_prune: dict[int, float] = {}

    async def emit(outcome: Outcome) -> None:
        key = outcome.group_id.encode()
        # the state change is queued before the outputs (see Delivery in the docstring)
        if outcome.group is not None:
            await kept.send(key=key, value=encode(outcome.group), headers=outcome.group.headers())
            bus.messages_out.labels("groups.kept").inc()
        for drop in outcome.drops:
            await dropped.send(key=key, value=encode(drop), headers=drop.headers())
            bus.messages_out.labels("groups.dropped").inc()
        if outcome.pass_rate is not None:
            obs = PassObservation(
                task_id=outcome.task_id,
                task=outcome.task,
                pass_rate=outcome.pass_rate,
                policy_version=outcome.policy_version,
            )
            await observations.send(key=outcome.task_id.encode(), value=msgspec.msgpack.encode(obs))
        stage.count(outcome)

    positions: dict[Any, int] = {}  # tp -> next offset to read
    messages_in = bus.messages_in.labels(SOURCE)

    @app.agent(source, name="assemble", concurrency=1)
    async def assemble(stream: Any) -> None:
        async for event in stream.events():
            m = event.message
            now = time.time()
            if weights is not None and weights.latest is not None:
                core.learner_version = weights.latest.version
            if m.topic == ticks_name:
                due = now - last_prune.get(m.partition, 0.0) > PRUNE_EVERY_S
                if due:
                    last_prune[m.partition] = now
                for outcome in core.expire(now, prune=due):
                    await emit(outcome)
                if metrics is not None:
                    metrics.pending.set(len(core.assembler.pending))
                continue
            messages_in.inc()
            positions[m.tp] = m.offset + 1
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
            await stats_topic.send(
                key=obs.task_id.encode(), value=encode(msg), headers=msg.headers()
            )
            bus.messages_out.labels("prompt.stats").inc()

    @app.timer(interval=config.tick_s)
    async def tick() -> None:
        for p in range(partitions):
            await ticks.send(value=b"tick", partition=p)

    seen = {"control": 0}

    @app.timer(interval=1.0)
    async def follow() -> None:
        if control is not None and control.latest is not None and control.seq != seen["control"]:
            seen["control"] = control.seq
            if stage.apply_control(dict(control.latest.params)):
                tracker.alpha = core.config.pass_rate_alpha
                tracker.keep = core.config.pass_rate_recent
        if metrics is not None and core.learner_version is not None:
            metrics.version.set(core.learner_version)

    @app.timer(interval=5.0)
    async def lag() -> None:
        bus.consumer_lag.labels(SOURCE).set(consumer_lag(app, positions))

    return app
