"""The outputs and table changelogs of a faust stage, sent through librdkafka.

faust sends through aiokafka in Python: ~0.05 CPU ms per message on this 2-core machine, as
much as the stage's own work several times over (benchmarks/RESULTS.md). `Sender` hands each
message to a confluent-kafka producer instead (batched and sent in C; ~5 us in this thread) and
ties it into faust's delivery contract:

- faust flushes its producer before every offset commit, on partition revoke, and where the
  stages call `app.producer.flush()`; `attach` wraps that flush so it also waits until every
  message given to the Sender is acknowledged. A message the broker refused makes that flush
  raise, so the offsets are not committed and the input is read again after the restart
  (at least once, as before).
- `redirect_changelog` makes a table write its changelog entries through the Sender, to the
  partition faust chose (the current event's). On a table store that keeps the changelog offset
  it has (rocksdb), each acknowledged write records it, as faust's own path does.
- Keyed messages without a partition go where aiokafka would put them (`murmur2_random`, the
  Java client's partitioner, as every rollstream producer: bus.producer_config), so a key lands
  on the same partition whichever producer sent it.
- The producer is idempotent: one partition's messages land in the order they were sent, and a
  retry cannot write one twice.

Delivery reports are served on the event loop's thread (`poll` after sends and while flushing),
so callbacks never race the stage's code.

A flush waits only for the messages sent before it began, not until librdkafka's queue is
empty: the stage keeps sending while faust commits, and under load the queue is seldom empty
(waiting for that made commits take seconds and overlap the next one). Each message carries a
sequence number, given out in order; the Sender keeps the lowest one not acknowledged yet and
the acknowledged ones above it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

from confluent_kafka import KafkaError
from confluent_kafka import Producer as _KProducer

from rollstream.services.runtime.bus import produce, producer_config
from rollstream.services.runtime.settings import KafkaSettings

POLL_EVERY = 64  # serve delivery reports after this many sends


class SendError(RuntimeError):
    """A message the broker did not acknowledge: the offsets must not be committed."""


class Sender:
    """A librdkafka producer for one faust app (see module docstring)."""

    def __init__(self, kafka: KafkaSettings, stage: str) -> None:
        self._p = _KProducer(producer_config(kafka, stage))
        self._errors: list[str] = []
        self._sends = 0  # sequence number of the next message
        self._oldest = 0  # no message below this sequence number is unacknowledged
        self._acked: set[int] = set()  # acknowledged sequence numbers above _oldest
        self.losing_changelog = False  # see lose_changelog

    def _on_delivery(self, err: KafkaError | None, msg: Any) -> None:
        if err is not None:
            self._errors.append(f"{msg.topic()}[{msg.partition()}]: {err}")

    def _oldest_unacked(self) -> int:
        """The lowest sequence number not acknowledged yet (`_sends` when none is left)."""
        oldest, acked = self._oldest, self._acked
        while oldest in acked:
            acked.discard(oldest)
            oldest += 1
        self._oldest = oldest
        return oldest

    def send(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None = None,
        *,
        headers: list[tuple[str, bytes]] | None = None,
        partition: int | None = None,
        on_delivery: Callable[[KafkaError | None, Any], None] | None = None,
    ) -> None:
        """Queue one message for `topic` (a real topic name). Waits (serving delivery reports)
        only while librdkafka's queue is full."""
        seq = self._sends
        then = on_delivery or self._on_delivery
        acked = self._acked

        def delivered(err: KafkaError | None, msg: Any) -> None:
            acked.add(seq)
            then(err, msg)

        kw: dict[str, Any] = {"key": key, "on_delivery": delivered}
        if headers:
            kw["headers"] = headers
        if partition is not None:
            kw["partition"] = partition
        produce(self._p, topic, value, **kw)
        self._sends = seq + 1
        if self._sends % POLL_EVERY == 0:
            self._p.poll(0)
            self._oldest_unacked()  # keeps the acknowledged set to what is above a gap

    def lose_changelog(self) -> None:
        """From now on drop every table changelog write instead of sending it, as a process
        that dies before they leave would (failpoints only: the stage exits soon after)."""
        self.losing_changelog = True

    def pending(self) -> int:
        """Messages queued or in flight (not acknowledged yet)."""
        return len(self._p)

    async def flush(self, timeout_s: float = 60.0) -> None:
        """Wait until every message sent before this call is acknowledged (later sends may
        still be in flight), without blocking the event loop; SendError if one was refused
        or the time ran out."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        upto = self._sends
        self._p.poll(0)
        while self._oldest_unacked() < upto:
            if loop.time() > deadline:
                left = sum(1 for s in range(self._oldest, upto) if s not in self._acked)
                raise SendError(f"{left} messages not acknowledged in {timeout_s} s")
            await asyncio.sleep(0.001)
            self._p.poll(0)
        if self._errors:
            errors, self._errors = self._errors, []
            raise SendError(f"{len(errors)} message(s) refused by the broker: {errors[:3]}")

    def attach(self, app: Any) -> None:
        """Make `app.producer.flush()` (faust's, before each commit) flush this Sender too."""
        producer = app.producer
        flush_faust = producer.flush

        async def flush() -> None:
            await flush_faust()
            await self.flush()

        producer.flush = flush

    def redirect_changelog(self, table: Any) -> None:
        """Send `table`'s changelog writes (raw bytes key and value) through this Sender."""
        faust_send = table.send_changelog
        topic = table.changelog_topic.get_topic_name()

        def recorded(err: KafkaError | None, msg: Any) -> None:
            if err is not None:
                self._on_delivery(err, msg)
                return
            from faust.types import TP

            table.data.set_persisted_offset(TP(msg.topic(), msg.partition()), msg.offset())

        def send_changelog(
            partition: int | None,
            key: Any,
            value: Any,
            key_serializer: Any = None,
            value_serializer: Any = None,
        ) -> Any:
            raw = isinstance(key, bytes) and (value is None or isinstance(value, bytes))
            if partition is None or not raw:
                return faust_send(partition, key, value, key_serializer, value_serializer)
            if not self.losing_changelog:
                self.send(topic, value, key, partition=partition, on_delivery=recorded)
            # what faust's callers read from the FutureMessage they get back
            return SimpleNamespace(message=SimpleNamespace(partition=partition))

        table.send_changelog = send_changelog
