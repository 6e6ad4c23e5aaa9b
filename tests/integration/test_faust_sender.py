"""The faust stages' librdkafka sender against the real embedded broker."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from rollstream.schemas.topics import qualified
from rollstream.services.runtime.faust.sender import Sender, SendError
from rollstream.services.runtime.settings import KafkaSettings

pytestmark = [pytest.mark.kafka]


def read_all(kafka: KafkaSettings, topic: str, want: int) -> list[Any]:
    """Every message of `topic` (a real name) from the beginning, up to `want` of them."""
    c = Consumer({**kafka.client_config("test"), "group.id": "t-nogroup"})
    parts = c.list_topics(topic, timeout=10).topics[topic].partitions
    c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
    got: list[Any] = []
    try:
        for _ in range(100):
            got += [m for m in c.consume(1000, 0.1) if m.error() is None]
            if len(got) >= want:
                break
    finally:
        c.close()
    return got


def test_keys_land_where_aiokafka_puts_them_and_flush_returns_when_all_are_acked(kafka) -> None:
    """The filter looks its outputs up on the partition faust's (aiokafka's) partitioner
    gives a key; the sender must put them there."""
    from aiokafka.partitioner import DefaultPartitioner

    topic = qualified("groups.kept", kafka.namespace)
    sender = Sender(kafka, "test")
    keys = [f"g{i}".encode() for i in range(300)]

    async def main() -> int:
        for k in keys:
            sender.send(topic, b"v-" + k, k, headers=[("schema", b"Group")])
        await sender.flush()
        return sender.pending()

    assert asyncio.run(main()) == 0
    got = read_all(kafka, topic, len(keys))
    parts = sorted({m.partition() for m in got})
    assert len(got) == len(keys) and len(parts) > 1
    partitioner = DefaultPartitioner()
    all_parts = list(range(max(parts) + 1))
    for m in got:
        assert m.value() == b"v-" + m.key()
        assert m.headers() == [("schema", b"Group")]
        assert m.partition() == partitioner(m.key(), all_parts, all_parts)


def test_flush_waits_for_earlier_sends_only_while_the_stage_keeps_sending(kafka) -> None:
    """faust commits while the stage keeps working; a flush that waited for an empty queue
    would not return while messages keep coming (commits took seconds under load)."""
    topic = qualified("groups.kept", kafka.namespace)
    sender = Sender(kafka, "test")
    before = [f"before-{i}".encode() for i in range(200)]

    async def main() -> tuple[bool, int]:
        for v in before:
            sender.send(topic, v, v)
        stop = asyncio.Event()

        async def keep_sending() -> int:
            n = 0
            while not stop.is_set():  # one message every ~millisecond: never an empty queue
                sender.send(topic, b"after", b"after-%d" % n)
                n += 1
                await asyncio.sleep(0.001)
            return n

        busy = asyncio.create_task(keep_sending())
        await asyncio.sleep(0.05)
        try:
            await sender.flush(timeout_s=5.0)
            in_flight_after = sender.pending() > 0
        finally:
            stop.set()
        await busy
        await sender.flush()
        return in_flight_after, await busy

    in_flight_after, n_after = asyncio.run(main())
    assert in_flight_after  # the later messages were still going out when flush returned
    got = read_all(kafka, topic, len(before) + n_after)
    assert sorted(m.value() for m in got if m.value() != b"after") == sorted(before)


def test_flush_raises_when_a_message_is_refused(kafka) -> None:
    """A refused message must stop faust's commit (flush runs before it)."""
    topic = qualified("groups.kept", kafka.namespace)
    sender = Sender(kafka, "test")

    async def main() -> None:
        sender.send(topic, b"fine", b"k")
        sender.send(topic, b"nowhere", b"k", partition=999)  # no such partition
        await sender.flush()

    with pytest.raises(SendError, match="refused"):
        asyncio.run(main())


def test_a_redirected_table_writes_its_changelog_to_the_events_partition(kafka) -> None:
    """Changelog entries go to the partition faust chose, tombstones included, and each
    acknowledged one is recorded as the store's persisted offset (what rocksdb keeps)."""
    topic = qualified("rollouts.scored", kafka.namespace)
    persisted: dict[Any, int] = {}
    faust_sends: list[Any] = []

    def faust_send(*args: Any) -> Any:
        faust_sends.append(args)
        return None

    table = SimpleNamespace(
        send_changelog=faust_send,
        changelog_topic=SimpleNamespace(get_topic_name=lambda: topic),
        data=SimpleNamespace(set_persisted_offset=persisted.__setitem__),
    )
    sender = Sender(kafka, "test")
    sender.redirect_changelog(table)

    async def main() -> list[int]:
        parts = [table.send_changelog(1, b"a", b"1").message.partition]
        parts.append(table.send_changelog(1, b"a", b"2").message.partition)
        parts.append(table.send_changelog(2, b"b", None).message.partition)  # a delete
        table.send_changelog(None, b"c", b"3")  # no partition: faust's own path
        await sender.flush()
        return parts

    assert asyncio.run(main()) == [1, 1, 2]
    got = read_all(kafka, topic, 3)
    assert sorted((m.partition(), m.key(), m.value()) for m in got) == [
        (1, b"a", b"1"),
        (1, b"a", b"2"),
        (2, b"b", None),
    ]
    assert {(tp.partition, off) for tp, off in persisted.items()} == {(1, 1), (2, 0)}
    assert [a[:3] for a in faust_sends] == [(None, b"c", b"3")]
