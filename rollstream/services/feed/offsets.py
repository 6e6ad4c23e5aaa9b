"""Kafka-side measurements of the feed: the generator group's progress on `prompts`, and where
the feed left off before a restart.

Reads (admin APIs, no consumer group joined): end and start offsets of every partition of
`prompts`, the committed offsets of the generator group, and the last message of each
partition with its `feed_pos` header. Writes nothing.

Note on the embedded broker (Tansu): it reports a partition's end as the base offset of the
last record batch + 1, so a batch of several records is under-counted. The feed's producer
therefore sends one record per batch (`batch.num.messages=1`, see FEED_PRODUCER), which keeps
the ends exact there; on Kafka it changes nothing but batching.
"""

from __future__ import annotations

import logging
from typing import Any

from rollstream.schemas.topics import qualified
from rollstream.services.feed.runahead import unconsumed
from rollstream.services.runtime.admin import (
    admin_client,
    committed_offsets,
    listed_offsets,
    partitions,
)
from rollstream.services.runtime.reader import Reader
from rollstream.services.runtime.settings import KafkaSettings

log = logging.getLogger(__name__)

POS_HEADER = "feed_pos"
# Producer settings of the feed: one record per batch keeps end offsets exact on Tansu.
FEED_PRODUCER = {"batch.num.messages": 1}


def pos_header(fingerprint: str, epoch: int, index: int) -> tuple[str, bytes]:
    """The header that marks a prompt's place in the feed's walk over its pool."""
    return POS_HEADER, f"{fingerprint}:{epoch}:{index}".encode()


def parse_pos(value: bytes | str, fingerprint: str) -> tuple[int, int] | None:
    """(epoch, index) from a feed_pos header of this pool, else None."""
    text = value.decode(errors="replace") if isinstance(value, bytes) else value
    try:
        fp, epoch, index = text.split(":")
        return (int(epoch), int(index)) if fp == fingerprint else None
    except ValueError:
        return None


def header_pos(headers: Any, fingerprint: str) -> tuple[int, int] | None:
    """The feed_pos of a message's headers (a list of (key, value) pairs, or None)."""
    for key, value in headers or []:
        if key == POS_HEADER and value:
            return parse_pos(value, fingerprint)
    return None


class OffsetProbe:
    """Offsets of `topic` and a consumer group's commits on it, through the admin client."""

    def __init__(
        self,
        kafka: KafkaSettings,
        topic: str = "prompts",
        group: str = "generator",
        timeout_s: float = 5.0,
    ) -> None:
        self.kafka = kafka
        self.topic = topic
        self.real = qualified(topic, kafka.namespace)
        self.group = qualified(group, kafka.namespace)
        self.timeout_s = timeout_s
        self.admin = admin_client(kafka)
        self.partitions = partitions(kafka, topic, timeout_s, self.admin)

    def _list(self, earliest: bool) -> dict[int, int]:
        return listed_offsets(
            self.admin, self.real, self.partitions, earliest=earliest, timeout_s=self.timeout_s
        )

    def ends(self) -> dict[int, int]:
        return self._list(earliest=False)

    def starts(self) -> dict[int, int]:
        return self._list(earliest=True)

    def committed(self) -> dict[int, int]:
        """The group's committed offset per partition (partitions never committed are absent)."""
        tps = [(self.real, p) for p in self.partitions]
        return {
            p: o
            for (_, p), o in committed_offsets(self.admin, self.group, tps, self.timeout_s).items()
        }

    def unconsumed(self) -> int:
        """Messages on the topic that the group has not committed yet."""
        return unconsumed(self.ends(), self.committed(), self.starts())

    def last_position(self, fingerprint: str, timeout_s: float = 10.0) -> tuple[int, int] | None:
        """The greatest (epoch, index) among the last messages of every partition that carry
        this pool's feed_pos header; None when there is none (a fresh topic or a new pool)."""
        ends, starts = self.ends(), self.starts()
        tails = {
            (self.topic, p): (end - 1, end) for p, end in ends.items() if end > starts.get(p, 0)
        }
        if not tails:
            return None
        best: tuple[int, int] | None = None
        with Reader(self.kafka, "feed") as reader:
            try:
                for m in reader.read(tails, timeout_s):
                    pos = header_pos(m.headers, fingerprint)
                    if pos is not None and (best is None or pos > best):
                        best = pos
            except TimeoutError as exc:
                log.warning("resume: no tail read in time: %s", exc)
        return best
