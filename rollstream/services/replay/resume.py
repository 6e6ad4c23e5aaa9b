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

Both reads go through a reader.Reader (offsets for times, ranges of a partition, headers): no
group joined, nothing committed.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field

from rollstream.schemas import SchemaError, TrainBatch, decode
from rollstream.services.runtime.bus import Record
from rollstream.services.runtime.reader import Reader
from rollstream.services.runtime.settings import KafkaSettings

log = logging.getLogger(__name__)

TOPIC = "batches.train"
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


def _ours(m: Record[bytes], learner_id: str) -> TrainBatch | None:
    try:
        batch = decode(m.value, TrainBatch)
    except SchemaError:
        return None
    return batch if batch.learner_id == learner_id else None


def last_resume(kafka: KafkaSettings, learner_id: str, timeout_s: float = 60.0) -> Resume:
    """The header of the newest batch for `learner_id` (scanning back from the end), or an
    empty Resume when there is none."""
    best: tuple[int, Resume] | None = None  # (timestamp, resume)
    with Reader(kafka, "replay") as reader:
        for p in reader.partitions(TOPIC):
            low, high = reader.watermarks(TOPIC, p)
            end, window = high, 16
            while end > low:
                start = max(low, end - window)
                found = None
                for m in reader.read({(TOPIC, p): (start, end)}, timeout_s):
                    headers = dict(m.headers)
                    raw = headers.get(HEADER)
                    if raw is not None and _ours(m, learner_id) is not None:
                        found = (m.timestamp_ms, Resume.parse(raw))
                if found is not None:
                    if best is None or found[0] > best[0]:
                        best = found
                    break
                end, window = start, window * 4
    return best[1] if best else Resume()


def sent_batches(
    kafka: KafkaSettings, learner_id: str, since_ms: int, timeout_s: float = 60.0
) -> Iterator[TrainBatch]:
    """Every batch of `learner_id` on batches.train with a timestamp >= since_ms - margin."""
    with Reader(kafka, "replay") as reader:
        for p in reader.partitions(TOPIC):
            low, high = reader.watermarks(TOPIC, p)
            if high <= low:
                continue
            ts = max(0, since_ms - MARGIN_MS)
            start = reader.offsets_for_times({(TOPIC, p): ts})[(TOPIC, p)]
            for m in reader.read({(TOPIC, p): (high if start is None else start, high)}, timeout_s):
                batch = _ours(m, learner_id)
                if batch is not None:
                    yield batch
