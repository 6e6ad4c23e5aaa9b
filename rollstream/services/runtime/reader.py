"""Stored records of chosen partitions, read by assignment (the bus's third client, beside the
Producer and Consumer of runtime/bus.py): a topic live (tap, record), a range [start, end) of
some partitions (the read-backs of replay, feed and filter after a restart), the end offsets as
a fetch reports them, offsets for times, a group's committed offsets. No group is joined and
nothing is committed, so no stage's position moves."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator, Mapping
from types import TracebackType

from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_END,
    OFFSET_INVALID,
    KafkaError,
    TopicPartition,
)
from confluent_kafka import Consumer as _KConsumer

from rollstream.schemas.topics import qualified, unqualified
from rollstream.services.runtime.bus import (
    BusError,
    Record,
    consumer_config,
    headers_of,
    take,
    topic_partitions,
)
from rollstream.services.runtime.settings import KafkaSettings

log = logging.getLogger(__name__)


class Reader:
    """Stored records of chosen partitions, read by assignment: no group is joined and nothing
    is committed, so no stage's position moves. Topics are registry names; values are the
    bytes as stored (never decoded, never dead-lettered). Use it as a context manager.

    `group` only names the group whose commits `committed` reads (never joined); by default a
    private name. `fetch_wait_ms` bounds how long a fetch that finds nothing new waits (each
    end-of-partition answer takes that long)."""

    def __init__(
        self,
        kafka: KafkaSettings,
        stage: str,
        *,
        group: str | None = None,
        fetch_wait_ms: int = 100,
    ) -> None:
        self.kafka = kafka
        cfg = consumer_config(kafka, stage, group, fetch_wait_ms)
        cfg["enable.partition.eof"] = True
        self._c = _KConsumer(cfg)

    def __enter__(self) -> Reader:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._c.close()

    def _tp(self, topic: str, partition: int, offset: int = OFFSET_INVALID) -> TopicPartition:
        return TopicPartition(qualified(topic, self.kafka.namespace), partition, offset)

    def partitions(self, topic: str, timeout_s: float = 10.0) -> list[int]:
        """The partition numbers of `topic`; BusError if it does not exist."""
        real = qualified(topic, self.kafka.namespace)
        return topic_partitions(self._c.list_topics(timeout=timeout_s), real, self.kafka.bootstrap)

    def watermarks(self, topic: str, partition: int, timeout_s: float = 10.0) -> tuple[int, int]:
        """(low, high) offsets of one partition as ListOffsets answers them (on Tansu the high
        one can be short of the end: see `ends`)."""
        low, high = self._c.get_watermark_offsets(self._tp(topic, partition), timeout=timeout_s)
        return int(low), int(high)

    def offsets_for_times(
        self, times_ms: Mapping[tuple[str, int], int], timeout_s: float = 10.0
    ) -> dict[tuple[str, int], int | None]:
        """Per (topic, partition), the offset of its first record with a timestamp at or after
        the time given (ms); None where there is no such record."""
        tps = [self._tp(t, p, ms) for (t, p), ms in times_ms.items()]
        return self._offsets(self._c.offsets_for_times(tps, timeout=timeout_s))

    def committed(
        self, partitions: Iterable[tuple[str, int]], timeout_s: float = 10.0
    ) -> dict[tuple[str, int], int | None]:
        """The offsets `group` has committed on these partitions (None: nothing committed)."""
        tps = [self._tp(t, p) for t, p in partitions]
        return self._offsets(self._c.committed(tps, timeout=timeout_s))

    def _offsets(self, tps: list[TopicPartition]) -> dict[tuple[str, int], int | None]:
        """{(registry topic, partition): offset} of the client's answer; None: no offset."""
        ns = self.kafka.namespace
        return {
            (unqualified(tp.topic, ns), tp.partition): tp.offset if tp.offset >= 0 else None
            for tp in tps
        }

    def ends(
        self, partitions: Iterable[tuple[str, int]], timeout_s: float = 10.0
    ) -> dict[tuple[str, int], int]:
        """The end offset (high watermark) of each partition, as a fetch response reports it.

        ListOffsets(latest) (`watermarks`), which the embedded broker (Tansu) answers with the
        last record batch's base offset + 1, is short of the end whenever that batch holds
        several records. A fetch response carries the true high watermark, so this assigns
        every partition at that (possibly short) end and reads until each one reports
        end-of-partition; on any other Kafka that is one empty fetch. A partition with no
        answer in `timeout_s` gets what ListOffsets says. Leaves the reader unassigned."""
        todo = set(partitions)
        out: dict[tuple[str, int], int] = {}
        if not todo:
            return out
        # a fresh client assigned at once waits out a 500 ms fetch backoff before its first
        # fetch; one ListOffsets first connects it (~3 ms)
        self.watermarks(*min(todo), timeout_s)
        self._c.assign([self._tp(t, p, OFFSET_END) for t, p in todo])
        deadline = time.monotonic() + timeout_s
        try:
            while todo and time.monotonic() < deadline:
                for topic, part, off, rec in self._fetch(0.05):
                    if rec is None:
                        out[(topic, part)] = off
                        todo.discard((topic, part))
        finally:
            self._c.unassign()
        for t, p in todo:
            out[(t, p)] = self.watermarks(t, p, timeout_s)[1]
        return out

    def read(
        self,
        ranges: Mapping[tuple[str, int], tuple[int, int]],
        timeout_s: float = 60.0,
        *,
        strict: bool = False,
    ) -> Iterator[Record[bytes]]:
        """The records of each `(topic, partition): (start, end)` from offset `start` up to, not
        including, `end` (each partition in order, the partitions together); TimeoutError when
        they are not all read within `timeout_s`. Client errors the client retries by itself
        are skipped, unless `strict`: then any error raises BusError (fatal ones always do)."""
        todo = {tp: end for tp, (start, end) in ranges.items() if start < end}
        if not todo:
            return
        self._c.assign([self._tp(t, p, ranges[(t, p)][0]) for t, p in todo])
        deadline = time.monotonic() + timeout_s
        while todo:
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"could not read {sorted(todo)} to their end in {timeout_s:.0f} s"
                )
            for topic, part, off, rec in self._fetch(0.1, strict):
                end = todo.get((topic, part))
                if end is None:
                    continue
                if rec is not None and off < end:
                    yield rec
                if rec is None or off + 1 >= end:
                    del todo[(topic, part)]

    def tail(self, topic: str, *, from_beginning: bool, follow: bool) -> Iterator[Record[bytes]]:
        """Every record of `topic` in arrival order, from its oldest one or (`from_beginning`
        false) those after the end at the time of the call. Without `follow` it returns once
        every partition has reached its end. BusError if the topic does not exist."""
        parts = self.partitions(topic)
        start = OFFSET_BEGINNING if from_beginning else OFFSET_END
        self._c.assign([self._tp(topic, p, start) for p in parts])
        at_end: set[int] = set()
        # From the end: skip what arrives before a partition's first end-of-partition. The
        # start offset comes from ListOffsets, which Tansu answers short of the real end
        # (see `ends`); the fetch that reports end-of-partition is exact.
        skipping = set() if from_beginning else set(parts)
        while True:
            for _, part, _, rec in self._fetch(0.5):
                if rec is None:
                    at_end.add(part)
                    skipping.discard(part)
                    continue
                at_end.discard(part)
                if part not in skipping:
                    yield rec
            if not follow and len(at_end) == len(parts):
                return

    def _fetch(
        self, wait_s: float, strict: bool = False
    ) -> Iterator[tuple[str, int, int, Record[bytes] | None]]:
        """One batch from the client, in order: (topic, partition, offset, record), where the
        record is None when the partition has reached its end (offset: the end)."""
        for m in take(self._c, 1000, wait_s):
            topic = unqualified(str(m.topic()), self.kafka.namespace)
            part, off = int(m.partition() or 0), int(m.offset() or 0)
            err = m.error()
            if err is None:
                value = m.value() or b""
                rec = Record(topic, part, off, m.key(), value, m.timestamp()[1], headers_of(m))
                yield topic, part, off, rec
            elif err.code() == KafkaError._PARTITION_EOF:
                yield topic, part, off, None
            elif err.fatal() or strict:
                raise BusError(f"reading {topic}[{part}]: {err}")
            # other errors are transient: the client retries by itself
