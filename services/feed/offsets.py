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
import time
from typing import Any

from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, TopicPartition
from confluent_kafka.admin import OffsetSpec

from rollstream.schemas.topics import qualified
from rollstream.services.feed.runahead import unconsumed
from rollstream.services.runtime.admin import admin_client
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
        self.real = qualified(topic, kafka.namespace)
        self.group = qualified(group, kafka.namespace)
        self.timeout_s = timeout_s
        self.admin = admin_client(kafka)
        md = self.admin.list_topics(self.real, timeout=timeout_s)
        meta = md.topics.get(self.real)
        if meta is None or meta.error is not None or not meta.partitions:
            raise RuntimeError(
                f"topic {self.real!r} does not exist; run `rollstream topics create`"
            )
        self.partitions = sorted(meta.partitions)

    def _list(self, spec: OffsetSpec) -> dict[int, int]:
        tps = {TopicPartition(self.real, p): spec for p in self.partitions}
        futs = self.admin.list_offsets(tps, request_timeout=self.timeout_s)
        return {tp.partition: fut.result().offset for tp, fut in futs.items()}

    def ends(self) -> dict[int, int]:
        return self._list(OffsetSpec.latest())

    def starts(self) -> dict[int, int]:
        return self._list(OffsetSpec.earliest())

    def committed(self) -> dict[int, int]:
        """The group's committed offset per partition (partitions never committed are absent)."""
        tps = [TopicPartition(self.real, p) for p in self.partitions]
        futs = self.admin.list_consumer_group_offsets(
            [ConsumerGroupTopicPartitions(self.group, tps)], request_timeout=self.timeout_s
        )
        res = next(iter(futs.values())).result()
        return {tp.partition: tp.offset for tp in res.topic_partitions if tp.offset >= 0}

    def unconsumed(self) -> int:
        """Messages on the topic that the group has not committed yet."""
        return unconsumed(self.ends(), self.committed(), self.starts())

    def last_position(self, fingerprint: str, timeout_s: float = 10.0) -> tuple[int, int] | None:
        """The greatest (epoch, index) among the last messages of every partition that carry
        this pool's feed_pos header; None when there is none (a fresh topic or a new pool)."""
        ends, starts = self.ends(), self.starts()
        tails = {p: end - 1 for p, end in ends.items() if end > starts.get(p, 0)}
        if not tails:
            return None
        c = Consumer(
            {
                **self.kafka.client_config("feed"),
                "group.id": "rollstream-nogroup-feed-resume",
                "enable.auto.commit": False,
                "enable.partition.eof": False,
            }
        )
        best: tuple[int, int] | None = None
        try:
            c.assign([TopicPartition(self.real, p, off) for p, off in tails.items()])
            deadline = time.monotonic() + timeout_s
            while tails and time.monotonic() < deadline:
                for m in c.consume(100, 0.5):
                    part, off = m.partition(), m.offset()
                    if m.error() is not None or part is None or off is None:
                        continue
                    if off >= tails.get(part, off + 1):
                        del tails[part]
                    pos = header_pos(m.headers(), fingerprint)
                    if pos is not None and (best is None or pos > best):
                        best = pos
            if tails:
                log.warning("resume: no tail read from partitions %s in time", sorted(tails))
        finally:
            c.close()
        return best
