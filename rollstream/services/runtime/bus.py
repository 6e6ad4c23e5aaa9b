"""Every Kafka client outside the faust stages: producer, consumer with dead-letter topics, and
a reader of raw partition ranges (runtime/admin.py is the admin-client half).

Client choice. Measured here on the embedded broker, 8 KB messages, producer msgs/s:
kafka-python 3.0 823 without `crc32c` and 10,800 with it; aiokafka ~23,000; confluent-kafka
~29,000-30,000 (benchmarks/RESULTS.md). The bus uses confluent-kafka (librdkafka): fastest,
idempotent producer, batching in C, and a poll loop that does not need asyncio. faust stages
use aiokafka because faust is built on it. kafka-python is not used anywhere, so `crc32c` is
not needed; if you add it, add `crc32c` with it.

Reads: any registry topics, decoded with rollstream.schemas. A message that fails to decode or
validate (a null value included) goes to `<topic>.dlq` as a DeadLetter (raw bytes, error,
original coordinates) and the consumer goes on with the rest of the fetched batch. A consumer
built without a producer opens one for its dead letters on the first bad record; a read-only
one (`dead_letters=False`: status, the eval reader) skips the record, logs it and counts it in
`skipped`. A dead letter that cannot be sent is logged and counted, never a lost batch.
Writes: registry topics, keyed, with `schema`/`v` headers.

`Reader` (runtime/reader.py) reads stored bytes by partition assignment, never joining a group
or committing.

Delivery: at least once. `Consumer.commit()` first flushes the producer (every output and
dead letter is acknowledged by the broker), then commits the offsets of the records handed out
so far. A process that dies between the two re-reads those records on restart; consumers drop
duplicates by id. Back-pressure: `send` blocks (polling) while librdkafka's queue is full.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_END,
    KafkaError,
    KafkaException,
    TopicPartition,
)
from confluent_kafka import Consumer as _KConsumer
from confluent_kafka import Producer as _KProducer

from rollstream.schemas import DeadLetter, Message, SchemaError, decode, encode
from rollstream.schemas.topics import dlq_name, lookup, qualified, unqualified
from rollstream.services.runtime.metrics import BusMetrics, StageMetrics
from rollstream.services.runtime.settings import KafkaSettings

log = logging.getLogger(__name__)

V = TypeVar("V")

# Commit errors that mean "this member is no longer (or not yet again) in the group".
REJOIN_ERRORS = frozenset(
    {
        KafkaError.UNKNOWN_MEMBER_ID,
        KafkaError.ILLEGAL_GENERATION,
        KafkaError.REBALANCE_IN_PROGRESS,
        KafkaError._ASSIGNMENT_LOST,
    }
)


class BusError(RuntimeError):
    """A produce that the broker did not acknowledge, or a fatal client error."""


@dataclass(frozen=True)
class Record(Generic[V]):
    """One Kafka record: `value` is the decoded message (Consumer) or the stored bytes (Reader,
    and the records of a recording, tools/record.py)."""

    topic: str  # registry name (namespace stripped)
    partition: int
    offset: int
    key: bytes | None
    value: V
    timestamp_ms: int
    headers: list[tuple[str, bytes | None]] = field(default_factory=list)


def headers_of(m: Any) -> list[tuple[str, bytes | None]]:
    """A message's headers as a list of (name, value) pairs (the value bytes, or None)."""
    return m.headers() or []


def take(client: _KConsumer, max_messages: int, timeout_s: float) -> list[Any]:
    """Up to `max_messages` of the client's messages (and events), returned as soon as there
    is one. librdkafka's consume(n, timeout) alone waits out the whole timeout unless n come
    (measured: 3 records in exactly 1.0 s from consume(500, 1.0)), which added half a poll's
    timeout to every hop; so wait for the first, then take what is already fetched."""
    first = client.poll(timeout_s)
    if first is None:
        return []
    return [first, *(client.consume(max_messages - 1, 0) if max_messages > 1 else [])]


def consumer_config(
    kafka: KafkaSettings, stage: str, group: str | None, fetch_wait_ms: int
) -> dict[str, Any]:
    """librdkafka settings every bus consumer starts from (the Consumer's, the Reader's):
    the real name of `group`, or a private one never joined; nothing committed or stored
    behind the caller's back; large fetches."""
    cfg = kafka.client_config(stage)
    cfg.update(
        {
            "group.id": qualified(group, kafka.namespace)
            if group
            else f"rollstream-nogroup-{stage}",  # librdkafka wants one; never joined
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "fetch.wait.max.ms": fetch_wait_ms,
            "fetch.max.bytes": 64 * 1024 * 1024,
            "max.partition.fetch.bytes": 16 * 1024 * 1024,
        }
    )
    return cfg


def topic_partitions(md: Any, real: str, bootstrap: str) -> list[int]:
    """The partition numbers of topic `real` in cluster metadata `md`; BusError if missing."""
    meta = md.topics.get(real)
    if meta is None or meta.error is not None or not meta.partitions:
        raise BusError(
            f"topic {real!r} does not exist at {bootstrap}; "
            f"run `rollstream topics create` (or check --namespace)"
        )
    return sorted(meta.partitions)


def producer_config(
    kafka: KafkaSettings,
    stage: str,
    idempotent: bool = True,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """librdkafka producer settings of every rollstream producer (the bus's, the faust
    stages' Sender): batched, idempotent, no compression, 8 MiB messages; a keyed message goes
    where the Java client, aiokafka (faust) and Kafka Streams put it (`murmur2_random`, not
    librdkafka's default CRC32), so one key lands on one partition whoever writes it."""
    cfg = kafka.client_config(stage)
    cfg.update(
        {
            "linger.ms": kafka.linger_ms,
            "enable.idempotence": idempotent,
            "compression.type": "none",
            "message.max.bytes": 8 * 1024 * 1024,
            "queue.buffering.max.kbytes": 256 * 1024,
            "partitioner": "murmur2_random",
        }
    )
    cfg.update(extra or {})
    return cfg


def produce(producer: _KProducer, topic: str, value: bytes | None, **kw: Any) -> None:
    """`producer.produce(topic, value, **kw)`, serving delivery reports while librdkafka's
    local queue is full (back-pressure instead of BufferError)."""
    while True:
        try:
            producer.produce(topic, value, **kw)
            return
        except BufferError:
            producer.poll(0.05)


class Producer:
    """Keyed, batched, idempotent producer of registry messages."""

    def __init__(
        self,
        kafka: KafkaSettings,
        stage: str,
        metrics: BusMetrics | None = None,
        *,
        idempotent: bool = True,
        extra: dict[str, Any] | None = None,
    ) -> None:
        self.kafka = kafka
        self.metrics = metrics or BusMetrics(StageMetrics(stage))
        self._p = _KProducer(producer_config(kafka, stage, idempotent, extra))
        self._errors: list[str] = []

    def _on_delivery(self, err: KafkaError | None, msg: Any) -> None:
        if err is not None:
            self._errors.append(f"{msg.topic()}: {err}")

    def send(self, topic: str, msg: Message, key: str | bytes | None) -> None:
        """Queue `msg` for registry topic `topic`; blocks while the local queue is full."""
        self.send_raw(topic, encode(msg), key, msg.headers())

    def send_raw(
        self,
        topic: str,
        value: bytes,
        key: str | bytes | None,
        headers: list[tuple[str, bytes]] | list[tuple[str, bytes | None]] | None = None,
        partition: int | None = None,
    ) -> None:
        """Queue bytes as they are; `partition` None: the key picks it."""
        real = qualified(topic, self.kafka.namespace)
        kw: dict[str, Any] = {} if partition is None else {"partition": partition}
        produce(self._p, real, value, key=key, headers=headers, on_delivery=self._on_delivery, **kw)
        self._p.poll(0)
        self.metrics.messages_out.labels(topic).inc()

    def flush(self, timeout_s: float = 30.0) -> None:
        """Wait until every queued message is acknowledged; BusError if any failed."""
        left = self._p.flush(timeout_s)
        if left:
            raise BusError(f"{left} messages not acknowledged within {timeout_s}s")
        if self._errors:
            errs, self._errors = self._errors, []
            raise BusError(f"{len(errs)} messages failed: {errs[:3]}")

    def close(self) -> None:
        try:
            self.flush(10.0)
        finally:
            self._p = None  # type: ignore[assignment]


class Consumer:
    """Consumes registry topics as decoded messages; bad input goes to the topic's DLQ.

    `group=None` reads without joining or committing to any consumer group (like tap): it
    assigns every partition itself, from the beginning or the end.
    """

    def __init__(
        self,
        kafka: KafkaSettings,
        stage: str,
        topics: Iterable[str],
        *,
        group: str | None,
        producer: Producer | None = None,
        metrics: BusMetrics | None = None,
        from_beginning: bool = True,
        extra: dict[str, Any] | None = None,
        dead_letters: bool = True,
    ) -> None:
        self.kafka = kafka
        self.stage = stage
        self.topics = list(topics)
        self.types = {t: lookup(t).message for t in self.topics}
        self.group = group
        self.metrics = metrics or BusMetrics(StageMetrics(stage))
        self.producer = producer
        self.dead_letters = dead_letters
        self._own_producer: Producer | None = None  # opened for dead letters when needed
        self.skipped = 0  # bad records not dead-lettered (dead_letters=False)
        self.skipped_last: list[str] = []  # the last 100 of them: "topic[p]@offset: why"
        cfg = consumer_config(kafka, stage, group, kafka.fetch_wait_max_ms)
        cfg.update(
            {
                "auto.offset.reset": "earliest" if from_beginning else "latest",
                "session.timeout.ms": kafka.session_timeout_ms,
                "heartbeat.interval.ms": max(100, kafka.session_timeout_ms // 10),
                "enable.partition.eof": False,
            }
        )
        cfg.update(extra or {})
        self._c = _KConsumer(cfg)
        self._pending: dict[tuple[str, int], int] = {}  # real topic, partition -> next offset
        real = [qualified(t, kafka.namespace) for t in self.topics]
        if group:
            self._c.subscribe(real)
        else:
            self._assign_all(real, OFFSET_BEGINNING if from_beginning else OFFSET_END)

    def _assign_all(self, real_topics: list[str], start: int, wait_s: float = 120.0) -> None:
        md = self._metadata(wait_s)
        tps = []
        for t in real_topics:
            tps += [
                TopicPartition(t, p, start) for p in topic_partitions(md, t, self.kafka.bootstrap)
            ]
        self._c.assign(tps)

    def _metadata(self, wait_s: float) -> Any:
        """The cluster's metadata; while the broker cannot be reached (down, paused, still
        starting) keep asking for up to `wait_s`, as a group member would keep rejoining,
        instead of failing the process at start."""
        deadline = time.monotonic() + wait_s
        while True:
            try:
                return self._c.list_topics(timeout=10)
            except KafkaException as exc:
                if exc.args[0].fatal() or time.monotonic() >= deadline:
                    raise
                log.warning("no metadata from the broker yet (%s); retrying", exc.args[0])
                time.sleep(1.0)

    def poll(
        self, max_messages: int = 500, timeout_s: float = 1.0, *, fill: bool = False
    ) -> list[Record[Any]]:
        """Up to `max_messages` decoded records, returned as soon as there is one (`fill`:
        wait up to `timeout_s` for `max_messages` of them); undecodable ones are
        dead-lettered."""
        out: list[Record[Any]] = []
        if fill:
            got = self._c.consume(max_messages, timeout_s)
        else:
            got = take(self._c, max_messages, timeout_s)
        for m in got:
            err = m.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    continue
                if err.fatal():
                    raise BusError(str(err))
                log.warning("consumer error: %s", err)
                continue
            real, part, off = str(m.topic()), int(m.partition() or 0), int(m.offset() or 0)
            topic = unqualified(real, self.kafka.namespace)
            self._pending[(real, part)] = off + 1
            self.metrics.messages_in.labels(topic).inc()
            value = m.value() or b""
            try:
                msg = decode(m.value(), self.types[topic])
            except SchemaError as exc:
                try:
                    self.dead_letter(topic, part, off, m.key(), value, str(exc))
                except Exception as dl_exc:  # the rest of the batch still counts
                    log.error("dead letter %s[%d]@%d not sent: %s", topic, part, off, dl_exc)
                continue
            ts = m.timestamp()[1]
            out.append(Record(topic, part, off, m.key(), msg, ts, headers_of(m)))
        if self._own_producer is not None:
            try:  # dead letters are acknowledged before the records after them are used
                self._own_producer.flush(10.0)
            except BusError as exc:
                log.error("%s: dead letters not acknowledged: %s", self.stage, exc)
        return out

    def dead_letter(
        self, topic: str, partition: int, offset: int, key: bytes | None, value: bytes, error: str
    ) -> None:
        """Send a message this consumer cannot use to `<topic>.dlq`, with the reason."""
        log.warning("dead letter %s[%d]@%d: %s", topic, partition, offset, error)
        if not self.dead_letters:
            self.metrics.skipped.labels(topic).inc()
            self.skipped += 1
            self.skipped_last.append(f"{topic}[{partition}]@{offset}: {error}")
            del self.skipped_last[:-100]
            return
        self.metrics.dead_letters.labels(topic).inc()
        producer = self.producer
        if producer is None:
            if self._own_producer is None:
                self._own_producer = Producer(self.kafka, self.stage, self.metrics)
            producer = self._own_producer
        dl = DeadLetter(
            topic=topic,
            partition=partition,
            offset=offset,
            key=key,
            value=value,
            error=error,
            consumer=self.group or self.stage,
            produced_at=time.time(),
        )
        producer.send(dlq_name(topic), dl, key)

    def commit(self) -> bool:
        """Make every output durable, then commit what was handed out (no-op without group).

        False when the group refused the commit because this member's session expired (a
        broker pause, a long stall) or a rebalance is under way: librdkafka rejoins by itself,
        the records since the last commit are read again by whoever owns their partitions, and
        consumers drop them by id. The process goes on; it does not exit."""
        if self.producer is not None:
            self.producer.flush()
        if not self.group or not self._pending:
            return True
        offsets = [TopicPartition(t, p, o) for (t, p), o in self._pending.items()]
        try:
            self._c.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            err = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
            if err is None or not (err.code() in REJOIN_ERRORS or err.retriable()):
                raise
            log.warning(
                "%s: commit refused (%s); rejoining the group, records since the last commit"
                " will be read again and dropped by id",
                self.stage,
                err.str(),
            )
            self.metrics.commits_refused.labels(err.name()).inc()
            if err.code() in REJOIN_ERRORS:
                self._pending.clear()  # no longer ours to commit
            return False
        self._pending.clear()
        return True

    def lag(self) -> dict[str, int]:
        """Messages between this consumer's position and the end, per registry topic."""
        lags: dict[str, int] = {}
        try:
            assignment = self._c.assignment()
            positions = self._c.position(assignment)
        except Exception:
            return lags
        for tp in positions:
            try:
                # The end as the last fetch response reported it; ask the broker (ListOffsets)
                # only before the first fetch. Tansu answers ListOffsets(latest) with the last
                # record batch's base offset + 1, short of the end when that batch holds
                # several records, while its fetch responses carry the true high watermark.
                _, high, _ = self._watermarks(tp, timeout=1.0)
            except Exception:
                continue
            pos = tp.offset if tp.offset >= 0 else 0
            topic = unqualified(tp.topic, self.kafka.namespace)
            lags[topic] = lags.get(topic, 0) + max(0, high - pos)
        for topic, value in lags.items():
            self.metrics.consumer_lag.labels(topic).set(value)
        return lags

    def _watermarks(self, tp: Any, timeout: float = 5.0) -> tuple[int, int, bool]:
        """(low, high, fetched) of a partition: as the last fetch response reported them
        (fetched), else as the broker answers ListOffsets (Tansu's latest can be short of the
        end, see `lag`)."""
        low, high = self._c.get_watermark_offsets(tp, cached=True)
        if high >= 0:
            return low, high, True
        low, high = self._c.get_watermark_offsets(tp, timeout=timeout, cached=False)
        return low, high, False

    def ends(self) -> dict[tuple[str, int], int | None]:
        """Per assigned partition, its end offset as the last fetch response reported it; an
        empty partition answers 0; None while a partition with data has not been fetched yet
        (Tansu's ListOffsets(latest) can be short of the end, see `lag`)."""
        out: dict[tuple[str, int], int | None] = {}
        for tp in self._c.assignment():
            key = (unqualified(tp.topic, self.kafka.namespace), tp.partition)
            try:
                _, high, fetched = self._watermarks(tp)
                if not fetched:
                    high = 0 if high == 0 else -1
            except Exception:
                high = -1
            out[key] = high if high >= 0 else None
        return out

    def at_end(self) -> bool:
        """Whether every assigned partition has been read up to the end its last fetch
        reported. A partition with nothing to read counts (never written, or every record
        deleted or compacted away: its low watermark is its end); one with records not yet
        fetched does not."""
        parts = self._c.assignment()
        if not parts:
            return False
        for tp in self._c.position(parts):
            low, high, fetched = self._watermarks(tp)
            if not fetched:  # the broker's answer: is there anything to read at all?
                if low < high:
                    return False
            elif not (tp.offset >= high or 0 <= high <= low):
                return False
        return True

    def positions(self) -> dict[tuple[str, int], int]:
        """Per assigned partition, the offset of the next record this consumer will return."""
        out: dict[tuple[str, int], int] = {}
        for tp in self._c.position(self._c.assignment()):
            key = (unqualified(tp.topic, self.kafka.namespace), tp.partition)
            out[key] = max(tp.offset, 0)
        return out

    def seek(self, topic: str, offsets: dict[int, int]) -> None:
        """(A consumer without a group.) Read `topic` from these offsets, per partition, and
        its other partitions from the beginning; the other topics go on where they are."""
        real = qualified(topic, self.kafka.namespace)
        parts = topic_partitions(self._metadata(120.0), real, self.kafka.bootstrap)
        others = [tp for tp in self._c.assignment() if tp.topic != real]
        kept = self._c.position(others) if others else []
        moved = [TopicPartition(real, p, offsets.get(p, OFFSET_BEGINNING)) for p in parts]
        self._c.assign([*kept, *moved])
        for p in parts:
            self._pending.pop((real, p), None)

    def assignment(self) -> list[tuple[str, int]]:
        return [
            (unqualified(tp.topic, self.kafka.namespace), tp.partition)
            for tp in self._c.assignment()
        ]

    def close(self) -> None:
        """Leave the group cleanly (uncommitted records will be re-read by the next owner)."""
        if self._own_producer is not None:
            try:
                self._own_producer.close()
            except BusError as exc:
                log.error("%s: dead letters not acknowledged: %s", self.stage, exc)
        self._c.close()


def join_group(
    kafka: KafkaSettings, stage: str, topics: list[str], group: str, metrics: BusMetrics
) -> tuple[Producer, Consumer]:
    """A stage's producer, and its consumer of `topics` in `group` (dead letters through that
    producer). A stage that loads a model makes them first thing: a new member's first join
    takes seconds (Kafka holds a new group's first rebalance for
    group.initial.rebalance.delay.ms, 3 s by default; the embedded broker half the session
    timeout), which librdkafka's own thread then spends while the model loads instead of after
    it. Measured with `rollstream up` here: the first rollouts 3 s sooner."""
    producer = Producer(kafka, stage, metrics)
    consumer = Consumer(kafka, stage, topics, group=group, producer=producer, metrics=metrics)
    return producer, consumer
