"""Where replay picks up after a restart, read back from its own output on `batches.train`.

Replay keeps no state outside Kafka. Every TrainBatch it sends carries a Kafka header
`replay-resume`, JSON written in the same record as the batch (so the two always agree):

    {"groups.kept": {partition: offset}, "learner.feedback": {partition: offset},
     "since_ms": t}

- groups.kept: per partition, the offset of the oldest group still in the buffer once this
  batch is sent, or the next unread offset where none is. Everything older has left the buffer
  (trained to its reuse cap, or expired / evicted and reported), so nothing older is needed.
- learner.feedback: the next unread offsets (credits are cumulative, so re-reading is safe).
- since_ms: the arrival time (wall clock, ms) of the oldest group that was in the buffer just
  before this batch was built, minus a margin. Any batch holding a group at or after the
  groups.kept offsets was sent after that group arrived, so its record timestamp is >= since_ms.

Restart (`Replay.rebuild`): find the newest batch of this learner and its header; re-read
`batches.train` from `since_ms` (Kafka's offsets-for-times) and re-apply every batch of this
learner to an empty buffer (`ReplayBuffer.mark_emitted`: uses, idempotent) and to the credits
(`observe_sent`); then consume groups.kept and learner.feedback from the header's offsets.
`add` is idempotent by group_id, so re-read groups that were handed out to their cap are
skipped and the others come back with their use counts: no group lost, none sent twice.

This reads positions directly with confluent-kafka (the bus Consumer has no seek by offset
or time, and its Record carries no headers).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from rollstream.schemas import SchemaError, TrainBatch, decode
from rollstream.schemas.topics import qualified
from rollstream.services.runtime.settings import KafkaSettings

log = logging.getLogger(__name__)

HEADER = "replay-resume"
MARGIN_MS = 60_000  # clock slack between arrival stamps and record timestamps


@dataclass
class Resume:
    """Read positions after the newest batch (empty dicts: from the beginning)."""

    groups: dict[int, int] = field(default_factory=dict)
    feedback: dict[int, int] = field(default_factory=dict)
    since_ms: int | None = None  # None: no batch of ours, nothing to re-apply

    def header(self) -> tuple[str, bytes]:
        body = {
            "groups.kept": {str(p): o for p, o in self.groups.items()},
            "learner.feedback": {str(p): o for p, o in self.feedback.items()},
            "since_ms": self.since_ms,
        }
        return HEADER, json.dumps(body, separators=(",", ":")).encode()

    @classmethod
    def parse(cls, raw: bytes) -> Resume:
        body = json.loads(raw)
        return cls(
            groups={int(p): int(o) for p, o in body["groups.kept"].items()},
            feedback={int(p): int(o) for p, o in body["learner.feedback"].items()},
            since_ms=body.get("since_ms"),
        )


def _consumer(kafka: KafkaSettings) -> Consumer:
    cfg = kafka.client_config("replay")
    cfg.update(
        {
            "group.id": "rollstream-nogroup-replay-resume",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "enable.partition.eof": False,
        }
    )
    return Consumer(cfg)


def _partitions(c: Consumer, real: str) -> list[int]:
    md = c.list_topics(real, timeout=10)
    if real not in md.topics or md.topics[real].error is not None:
        raise RuntimeError(f"topic {real!r} does not exist; run `rollstream topics create`")
    return sorted(md.topics[real].partitions)


def _read(c: Consumer, start: TopicPartition, end: int, timeout_s: float) -> Iterator[Any]:
    """Raw records of one partition from `start` up to (not including) offset `end`."""
    if start.offset >= end:
        return
    c.assign([start])
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for m in c.consume(500, 0.5):
            if m.error() is not None:
                continue
            if m.offset() >= end:
                return
            yield m
            if m.offset() + 1 >= end:
                return
    raise TimeoutError(f"reading {start.topic}[{start.partition}] to offset {end} timed out")


def _ours(m: Any, learner_id: str) -> TrainBatch | None:
    try:
        batch = decode(m.value() or b"", TrainBatch)
    except SchemaError:
        return None
    return batch if batch.learner_id == learner_id else None


def last_resume(kafka: KafkaSettings, learner_id: str, timeout_s: float = 60.0) -> Resume:
    """The header of the newest batch for `learner_id` (scanning back from the end), or an
    empty Resume when there is none."""
    real = qualified("batches.train", kafka.namespace)
    c = _consumer(kafka)
    best: tuple[int, Resume] | None = None  # (timestamp, resume)
    try:
        for p in _partitions(c, real):
            low, high = c.get_watermark_offsets(TopicPartition(real, p), timeout=10)
            end, window = high, 16
            while end > low:
                start = max(low, end - window)
                found = None
                for m in _read(c, TopicPartition(real, p, start), end, timeout_s):
                    headers = dict(m.headers() or [])
                    if HEADER in headers and _ours(m, learner_id) is not None:
                        found = (m.timestamp()[1], Resume.parse(headers[HEADER]))
                if found is not None:
                    if best is None or found[0] > best[0]:
                        best = found
                    break
                end, window = start, window * 4
    finally:
        c.close()
    return best[1] if best else Resume()


def sent_batches(
    kafka: KafkaSettings, learner_id: str, since_ms: int, timeout_s: float = 60.0
) -> Iterator[TrainBatch]:
    """Every batch of `learner_id` on batches.train with a timestamp >= since_ms - margin."""
    real = qualified("batches.train", kafka.namespace)
    c = _consumer(kafka)
    try:
        for p in _partitions(c, real):
            low, high = c.get_watermark_offsets(TopicPartition(real, p), timeout=10)
            if high <= low:
                continue
            ts = max(0, since_ms - MARGIN_MS)
            (found,) = c.offsets_for_times([TopicPartition(real, p, ts)], timeout=10)
            start = found.offset if found.offset >= 0 else high
            if start == OFFSET_BEGINNING:
                start = low
            for m in _read(c, TopicPartition(real, p, start), high, timeout_s):
                batch = _ours(m, learner_id)
                if batch is not None:
                    yield batch
    finally:
        c.close()
