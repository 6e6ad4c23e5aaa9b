"""The faust runtime's workarounds against the real embedded broker."""

from __future__ import annotations

import asyncio

import pytest

from rollstream.services.runtime.faust_app import fetched_ends

pytestmark = [pytest.mark.kafka]


def test_fetched_ends_give_the_true_end_where_list_offsets_falls_short(kafka) -> None:
    """Table recovery reads changelogs to these ends: the embedded broker's ListOffsets says 1
    for a partition whose only batch holds 10 records; a Fetch's high watermark says 10."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from aiokafka.structs import TopicPartition

    from rollstream.schemas.topics import qualified

    topic = qualified("rollouts.raw", kafka.namespace)

    async def main() -> tuple[dict, dict]:
        producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap, linger_ms=50)
        consumer = AIOKafkaConsumer(bootstrap_servers=kafka.bootstrap)
        await producer.start()
        await consumer.start()
        try:
            for _ in range(10):  # one batch of 40 KB
                await producer.send(topic, b"x" * 4000, partition=0)
            await producer.send(topic, b"y", partition=1)
            await producer.flush()
            tps = [TopicPartition(topic, p) for p in range(3)]
            listed = await consumer.end_offsets(tps)
            return listed, await fetched_ends(consumer, listed)
        finally:
            await producer.stop()
            await consumer.stop()

    listed, fetched = asyncio.run(main())
    by_partition = {tp.partition: end for tp, end in fetched.items()}
    assert by_partition == {0: 10, 1: 1, 2: 0}
    assert all(fetched[tp] >= listed[tp] for tp in listed)
