"""The faust app factory for the two stream processors (scorer, filter).

How we run faust safely (every patch and why: patches.py): at-least-once (never
`exactly_once`), `concurrency=1` on agents whose offsets matter, dedupe by id in table state,
topics created explicitly with the registry's partition counts, raw bytes in and out (decoded
with rollstream.schemas, so bad messages reach the DLQ), a short session timeout for fast joins
on the embedded broker, static membership (`consumer_group_instance_id`) where asked for and
the session timeout is 10 s or more, so a restart of the same instance does not trigger a
rebalance, and `rocksdb://` as table store for real deployments (the default `memory://`
rebuilds tables from the changelog at start).

Speed: faust's per-message machinery cost more than the stages' work (benchmarks/RESULTS.md).
Three changes take most of it away: the fetch loop delivers each fetched batch in one task
(`deliver_fetches_in_one_task`), the Monitor sensor skips its per-message bookkeeping
(monitor.py), and the stages send outputs and changelogs through librdkafka
(sender.py), flushed whenever faust flushes its producer.
"""

from __future__ import annotations

import logging
import os
import ssl
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from typing import Any

from rollstream.schemas import DeadLetter, encode
from rollstream.schemas.topics import qualified
from rollstream.services.runtime import failpoints
from rollstream.services.runtime.settings import KafkaSettings

log = logging.getLogger("rollstream.faust")


STATIC_MIN_SESSION_MS = 10_000
STOP_TIMEOUT_S = 20.0  # see run_worker; env ROLLSTREAM_STOP_TIMEOUT_S


def static_membership(kafka: KafkaSettings) -> bool:
    """Whether faust stages join with their instance id as group.instance.id: asked for, and
    with a session timeout of at least STATIC_MIN_SESSION_MS (see KafkaSettings)."""
    return kafka.static_membership and kafka.session_timeout_ms >= STATIC_MIN_SESSION_MS


def broker_urls(kafka: KafkaSettings) -> list[str]:
    return [f"kafka://{hp.strip()}" for hp in kafka.bootstrap.split(",") if hp.strip()]


def credentials(kafka: KafkaSettings) -> Any:
    """faust credentials from librdkafka-style security settings (SASL and/or TLS)."""
    sec = kafka.security
    proto = sec.get("security.protocol", "PLAINTEXT").upper()
    if proto == "PLAINTEXT":
        return None
    import faust

    ctx = None
    if "SSL" in proto:
        ctx = ssl.create_default_context(cafile=sec.get("ssl.ca.location"))
        if sec.get("ssl.certificate.location"):
            ctx.load_cert_chain(sec["ssl.certificate.location"], sec.get("ssl.key.location"))
    if proto.startswith("SASL"):
        mech = sec.get("sasl.mechanism", "PLAIN").upper()
        if mech.startswith("SCRAM") or mech == "PLAIN":
            return faust.SASLCredentials(
                username=sec.get("sasl.username"),
                password=sec.get("sasl.password"),
                ssl_context=ctx,
                mechanism=mech,
            )
        raise ValueError(f"kafka.security: sasl.mechanism {mech} not supported by faust stages")
    return faust.SSLCredentials(ctx)


def make_app(
    stage: str,
    kafka: KafkaSettings,
    *,
    instance: str | None = None,
    store: str = "memory://",
    data_dir: str | None = None,
    **extra: Any,
) -> Any:
    """A faust.App whose group id is `rollstream-<stage>` (namespaced), raw serializers."""
    import faust

    timeout_s = kafka.session_timeout_ms / 1000
    conf: dict[str, Any] = dict(
        broker=broker_urls(kafka),
        broker_credentials=credentials(kafka),
        store=store,
        key_serializer="raw",
        value_serializer="raw",
        topic_allow_declare=True,  # its own changelog topics; ours exist already
        topic_disable_leader=True,
        broker_session_timeout=timeout_s,
        broker_heartbeat_interval=max(0.1, timeout_s / 10),
        broker_rebalance_timeout=max(timeout_s * 2, 10.0),
        broker_request_timeout=max(timeout_s * 3, 30.0),
        consumer_auto_offset_reset="earliest",
        stream_wait_empty=True,
        web_enabled=False,
        processing_guarantee="at_least_once",
        table_standby_replicas=0,
        topic_replication_factor=kafka.replication,
        producer_linger_ms=kafka.linger_ms,
        producer_max_request_size=8 * 1024 * 1024,
        consumer_max_fetch_size=16 * 1024 * 1024,
        autodiscover=False,
        # A broker can report a partition's end short (see fetched_ends); faust's recovery
        # check then raises ConsistencyError on a rebalance. Tables are deduplicated by id, so
        # a replayed changelog entry is harmless: skip the check rather than crash the worker.
        recovery_consistency_check=False,
        Monitor="rollstream.services.runtime.faust.monitor:QuietMonitor",
    )
    from rollstream.services.runtime.faust import patches as faust_patches

    faust_patches.apply()  # checks the faust / aiokafka versions and attributes first
    if instance and static_membership(kafka):
        conf["consumer_group_instance_id"] = instance
    elif instance and kafka.static_membership:
        log.info(
            "static membership off: kafka.session_timeout_ms %d is under %d (see KafkaSettings)",
            kafka.session_timeout_ms,
            STATIC_MIN_SESSION_MS,
        )
    # faust keeps table files under `datadir` (default: "<app id>-data" in the working
    # directory); without a run folder put it in the temp dir, never in the caller's cwd.
    base = os.path.join(tempfile.gettempdir(), "rollstream-faust")
    os.makedirs(data_dir or base, exist_ok=True)
    conf["datadir"] = data_dir or os.path.join(
        tempfile.gettempdir(),
        "rollstream-faust",
        f"{qualified(stage, kafka.namespace)}-{os.getpid()}",
    )
    conf.update(extra)
    app = faust.App(qualified(f"rollstream-{stage}", kafka.namespace), **conf)
    app.rollstream_fetch_wait_max_ms = kafka.fetch_wait_max_ms  # type: ignore[attr-defined]
    return app


async def fetched_ends(consumer: Any, ends: Mapping[Any, int | None]) -> dict[Any, int | None]:
    """`ends` (from ListOffsets) raised to the high watermark a Fetch reports.

    Table recovery reads each changelog partition up to its end as ListOffsets reports it.
    The embedded broker (Tansu 0.6) answers ListOffsets with the first offset of the last
    record batch + 1, so when the last batch holds several records a restarted worker
    stopped short and forgot the newest state: finished groups came out again, pending
    samples were lost. A Fetch of the last reported offset carries the true high watermark;
    on a conforming broker it equals the ListOffsets end and nothing changes.
    `consumer` is the aiokafka consumer; one Fetch per leader, reading one batch a partition
    (byte limits as the consumer's). Tansu answers a Fetch with max wait 0 with no partitions
    at all, so it may wait 100 ms (data at end-1 answers at once)."""
    from aiokafka.protocol.fetch import FetchRequest

    client = consumer._client
    by_name = {(tp.topic, tp.partition): tp for tp in ends}
    by_node: dict[int, dict[str, list[tuple[int, int, int]]]] = {}
    for tp, end in ends.items():
        node = client.cluster.leader_for_partition(tp) if end else None
        if node is not None and node >= 0:
            by_node.setdefault(node, {}).setdefault(tp.topic, []).append(
                (tp.partition, end - 1, 16 << 20)  # type: ignore[operator]
            )
    out = dict(ends)
    for node, topics in by_node.items():
        response = await client.send(node, FetchRequest(100, 1, 64 << 20, 0, list(topics.items())))
        for topic, partitions in response.topics:
            for partition, error_code, highwater, *_ in partitions:
                tp = by_name.get((topic, partition))
                if tp is not None and error_code == 0 and highwater > (out[tp] or 0):
                    out[tp] = highwater
    return out


def drain_buffer_on_flush() -> None:
    """faust's ProducerBuffer.flush (table changelog writes wait there) returns when a
    message takes over 0.1 s to go out, so a commit could pass changelog writes still in the
    buffer, and a crash then would lose state for committed input. Make it drain fully
    (a patch applied once per process)."""
    from faust.transport.producer import ProducerBuffer

    if getattr(ProducerBuffer, "_rollstream_drains", False):
        return
    flush_atmost = ProducerBuffer.flush_atmost

    async def flush(self: Any) -> None:
        while self.size:
            await flush_atmost(self, None)

    ProducerBuffer.flush = flush  # type: ignore[method-assign]
    ProducerBuffer._rollstream_drains = True  # type: ignore[attr-defined]


def wait_at_most_in_fetches() -> None:
    """Make faust's consumers ask fetches to wait at most the app's kafka.fetch_wait_max_ms
    for data (`make_app` puts it on the app; faust passes a fixed 1500 to aiokafka). Set on the
    consumer before faust starts it, which is when aiokafka hands it to its fetcher."""
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread as thread

    if getattr(thread, "_rollstream_fetch_wait", False):
        return
    create = thread._create_worker_consumer

    def _create_worker_consumer(self: Any, transport: Any) -> Any:
        consumer = create(self, transport)
        ms = getattr(self.app, "rollstream_fetch_wait_max_ms", None)
        if ms is not None:
            consumer._fetch_max_wait_ms = ms
        return consumer

    thread._create_worker_consumer = _create_worker_consumer  # type: ignore[method-assign]
    thread._rollstream_fetch_wait = True  # type: ignore[attr-defined]


def deliver_fetches_in_one_task() -> None:
    """Hand each fetched batch to the streams in one task, not four tasks per message.

    faust's fetch loop (Consumer._drain_messages) races the delivery of every message against
    "flow suspended" (a rebalance), "stopped" and "crashed" with `Service.wait_first`: four
    tasks and an `asyncio.wait` per message, ~0.05 CPU ms, as much as everything else a stage
    does with a message. This version waits for the next fetch as faust does (outside the
    race), then races the delivery of the whole fetched batch against the same three events:
    a rebalance still cancels the delivery at once (the rest of the batch is dropped, as
    faust drops it, and read again from the committed offsets). Read offsets, gaps,
    `commit_every` and the periodic yield are kept as faust has them (a patch applied once per
    process, to the faust-streaming 0.15 loop)."""
    from faust.transport.consumer import Consumer

    if getattr(Consumer, "_rollstream_batch_delivery", False):
        return
    Consumer._drain_messages = _drain_messages  # type: ignore[method-assign]
    Consumer._rollstream_batch_delivery = True  # type: ignore[attr-defined]


async def _drain_messages(self: Any, fetcher: Any) -> None:
    """faust's Consumer._drain_messages, each fetched batch raced as one delivery (see
    deliver_fetches_in_one_task); `self` is the faust Consumer."""
    import asyncio

    from faust.transport.consumer import CONSUMER_FETCHING

    consumer_should_stop = self._stopped.is_set
    fetcher_should_stop = fetcher._stopped.is_set
    getmany = self.getmany
    set_flag = self.diag.set_flag
    unset_flag = self.diag.unset_flag
    try:
        while not (consumer_should_stop() or fetcher_should_stop()):
            set_flag(CONSUMER_FETCHING)
            ait = getmany(timeout=1.0).__aiter__()
            await self.sleep(0)
            if not self.should_stop:
                try:
                    first = await ait.__anext__()  # waits for the fetch, as faust does
                except StopAsyncIteration:
                    first = None
                if first is not None:
                    await self.wait_first(_deliver(self, first, ait), self.suspend_flow.wait())
                unset_flag(CONSUMER_FETCHING)
    except self.consumer_stopped_errors:
        if self.transport.app.should_stop:
            self.log.info("Broker stopped consumer, shutting down...")
            return
        raise
    except asyncio.CancelledError:
        if self.transport.app.should_stop:
            self.log.info("Consumer shutting down for user cancel.")
            return
        raise
    except Exception as exc:
        self.log.exception("Drain messages raised: %r", exc)
        raise
    finally:
        unset_flag(CONSUMER_FETCHING)


async def _deliver(self: Any, first: tuple[Any, Any], ait: Any) -> None:
    """Hand `first` and the rest of the fetched batch `ait` ((tp, message) pairs) to the
    streams as faust's loop does: read offsets and gaps kept, `commit_every` honoured, a yield
    to the event loop every 100 messages."""
    import asyncio

    callback = self.callback
    get_read_offset = self._read_offset.__getitem__
    set_read_offset = self._read_offset.__setitem__
    acks_enabled_for = self.app.topics.acks_enabled_for
    yield_every = 100
    sleep = asyncio.sleep
    num_since_yield = 0
    item = first
    while True:
        tp, message = item
        num_since_yield += 1
        if num_since_yield > yield_every:
            await sleep(0)
            num_since_yield = 0
        offset = message.offset
        r_offset = get_read_offset(tp)
        if r_offset is None or offset >= r_offset:
            gap = offset - (r_offset or 0)
            if gap > 1 and r_offset and acks_enabled_for(message.topic):
                await self._add_gap(tp, r_offset + 1, offset)
            commit_every = self._commit_every
            if commit_every is not None and self._n_acked >= commit_every:
                self._n_acked = 0
                await self.commit()
            await callback(message)
            set_read_offset(tp, offset)
        try:
            item = await ait.__anext__()
        except StopAsyncIteration:
            return


async def seek_to_committed_or_reset(consumer: Any, reset: str = "earliest") -> dict[Any, Any]:
    """Seek each assigned partition of the aiokafka `consumer` to its committed offset, and one
    with none to the `reset` point ("earliest": the log start; "latest": the end). Returns the
    committed offsets (None where there is none), as aiokafka's `seek_to_committed` does."""
    committed: dict[Any, Any] = await consumer.seek_to_committed()
    for tp, offset in committed.items():
        if offset == 0:
            consumer.seek(tp, 0)
    unset = [tp for tp, offset in committed.items() if offset is None or offset < 0]
    if unset:
        if reset == "latest":
            await consumer.seek_to_end(*unset)
        else:
            await consumer.seek_to_beginning(*unset)
    return committed


def rewind_uncommitted_partitions() -> None:
    """After a rebalance, faust seeks every assigned partition back to its committed offset
    to read again what it fetched but did not process; aiokafka's `seek_to_committed` skips a
    partition with no committed offset (or 0), leaving it where the fetcher stopped. Records a
    worker fetched in a generation that ended under it (faust drops a fetched batch when the
    generation changes) were then never read, by anyone: seen on the filter when a partition
    that no worker had committed yet moved during two quick rebalances. This version seeks such
    partitions to where a fresh consumer would start (`consumer_auto_offset_reset`: the log
    start for "earliest"); the stages drop what they see twice by id (a patch applied once per
    process)."""
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

    if getattr(AIOKafkaConsumerThread, "_rollstream_rewinds", False):
        return

    async def seek_to_committed(self: Any) -> Any:
        reset = self.app.conf.consumer_auto_offset_reset
        committed = await self.call_thread(
            seek_to_committed_or_reset, self._ensure_consumer(), reset
        )
        if failpoints.armed("faust.slow_seek"):  # tests: widen the window after the seek
            import asyncio

            await asyncio.sleep(3.0)
        return committed

    AIOKafkaConsumerThread.seek_to_committed = seek_to_committed  # type: ignore[method-assign]
    AIOKafkaConsumerThread._rollstream_rewinds = True  # type: ignore[attr-defined]


def stop_fetching_until_streams_resume() -> None:
    """At the end of a rebalance faust seeks every assigned partition back to its committed
    offset and then resumes its stream queues, which clears them (`FlowControlEvent.resume`).
    After a table recovery the fetcher has been running since the recovery began, so records
    fetched from the new positions between the seek and that clear were dropped, never acked
    and never read again (faust-streaming issue #596): a filter worker lost whole groups when
    its partitions moved, and faust could then commit past them. This version stops the
    consumer's flow before the seek, as faust does when a rebalance starts; faust's own code
    resumes it after clearing the queues, and a fetch still in flight when the flow stopped
    is dropped and sought back by faust (a patch applied once per process)."""
    from faust.tables.recovery import Recovery

    if getattr(Recovery, "_rollstream_stops_flow", False):
        return

    def stopping_flow_first(method: Any) -> Any:
        async def resume_streams(self: Any, generation_id: int = 0) -> None:
            self.app.consumer.stop_flow()
            await method(self, generation_id)

        return resume_streams

    # with tables (after recovery) and without (scorer): both seek, then clear the queues
    Recovery.on_recovery_completed = stopping_flow_first(Recovery.on_recovery_completed)  # type: ignore[method-assign]
    Recovery._resume_streams = stopping_flow_first(Recovery._resume_streams)  # type: ignore[method-assign]
    Recovery._rollstream_stops_flow = True  # type: ignore[attr-defined]


def read_changelogs_to_fetched_end() -> None:
    """Make faust's table recovery use `fetched_ends` (a patch of its aiokafka driver,
    applied once per process; falls back to the ListOffsets ends if the Fetch fails)."""
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

    if getattr(AIOKafkaConsumerThread, "_rollstream_fetched_ends", False):
        return
    listed = AIOKafkaConsumerThread._highwaters

    async def _highwaters(self: Any, partitions: Any) -> Any:
        ends = await listed(self, partitions)
        if self.consumer.in_transaction:
            return ends
        try:
            fetched = await fetched_ends(self._ensure_consumer(), ends)
            raised = {tp: v for tp, v in fetched.items() if v != ends.get(tp)}
            if raised:
                log.info("changelog ends raised by Fetch: %s", raised)
            return fetched
        except Exception as exc:
            log.warning("changelog ends from Fetch failed (%s); using ListOffsets", exc)
            return ends

    AIOKafkaConsumerThread._highwaters = _highwaters  # type: ignore[method-assign]
    AIOKafkaConsumerThread._rollstream_fetched_ends = True  # type: ignore[attr-defined]


def run_worker(app: Any, loglevel: str = "WARNING", stop_timeout_s: float | None = None) -> int:
    """Run a faust worker in this thread until SIGTERM/SIGINT; returns its exit code.

    faust's stop waits for the broker (the last commit, leaving the group): with the broker
    gone it hung for minutes. So a worker that has not stopped `stop_timeout_s` after the
    signal (default 20 s, env ROLLSTREAM_STOP_TIMEOUT_S; under Kubernetes' 30 s grace), or
    gets a second signal, exits at once with status 1 and says why. Nothing is lost: what it
    did not commit is read again after a restart, and the stages drop what they already sent.
    """
    import faust

    env_grace = float(os.environ.get("ROLLSTREAM_STOP_TIMEOUT_S", STOP_TIMEOUT_S))
    grace: float = env_grace if stop_timeout_s is None else stop_timeout_s

    def give_up(why: str) -> None:
        print(
            f"rollstream: {why}; exiting without the last commit (is the broker reachable?). "
            "What was not committed is read again after a restart.",
            file=sys.stderr,
            flush=True,
        )
        os._exit(1)

    class Worker(faust.Worker):  # type: ignore[misc]
        def _schedule_shutdown(self, signal: Any) -> None:
            if self._signal_stop_time:
                give_up(f"second {signal.name} while stopping")
            why = f"not stopped {grace:g} s after {signal.name}"
            timer = threading.Timer(grace, give_up, (why,))
            timer.daemon = True
            timer.start()
            super()._schedule_shutdown(signal)

    worker = Worker(app, loglevel=loglevel, quiet=True, redirect_stdouts=False)
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def consumer_lag(app: Any, positions: dict[Any, int]) -> int:
    """Messages between what this worker has read and the end of its assigned partitions."""
    total = 0
    try:
        assigned = app.consumer.assignment()
    except Exception:
        return 0
    for tp, position in list(positions.items()):
        if tp not in assigned:
            continue
        try:
            high = app.consumer.highwater(tp)
        except Exception:  # partition revoked or metadata not there yet
            continue
        if high is not None and high >= 0:
            total += max(0, high - position)
    return total


async def send_dead_letter(
    dlq: Any, bus: Any, source: str, message: Any, error: str, consumer: str, log: logging.Logger
) -> None:
    """Send a faust `message` read from registry topic `source` to `dlq` as a DeadLetter with
    the reason, log it and count it in `bus.dead_letters`."""
    m = message
    log.warning("dead letter %s[%d]@%d: %s", source, m.partition, m.offset, error)
    letter = DeadLetter(
        topic=source,
        partition=m.partition,
        offset=m.offset,
        key=m.key,
        value=bytes(m.value or b""),
        error=error,
        consumer=consumer,
        produced_at=time.time(),
    )
    await dlq.send(key=m.key, value=encode(letter), headers=letter.headers())
    bus.dead_letters.labels(source).inc()
