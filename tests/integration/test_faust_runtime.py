"""The faust runtime's workarounds against the real embedded broker."""

from __future__ import annotations

import asyncio

import pytest

from rollstream.services.runtime.faust.app import fetched_ends

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


@pytest.mark.parametrize(
    ("asked", "timeout_ms", "instance_id"),
    [(False, 10_000, None), (True, 6_000, None), (True, 10_000, "A")],
)
def test_static_membership_only_when_asked_for_and_the_session_outlasts_a_restart(
    asked: bool, timeout_ms: int, instance_id: str | None
) -> None:
    from rollstream.services.runtime.faust.app import make_app
    from rollstream.services.runtime.settings import KafkaSettings

    kafka = KafkaSettings(static_membership=asked, session_timeout_ms=timeout_ms)
    app = make_app("scorer", kafka, instance="A")
    assert app.conf.consumer_group_instance_id == instance_id
    assert app.conf.broker_session_timeout == timeout_ms / 1000


@pytest.mark.parametrize("wait_ms", [37, 800])
def test_faust_consumers_wait_in_fetches_as_long_as_configured(wait_ms: int) -> None:
    """faust passes aiokafka a fixed 1500 ms; on the embedded broker that put ~0.7 s on a
    rollout's way from publish to group (benchmarks/RESULTS.md)."""
    from rollstream.services.runtime.faust.app import make_app
    from rollstream.services.runtime.settings import KafkaSettings

    async def main() -> int:
        app = make_app("scorer", KafkaSettings(fetch_wait_max_ms=wait_ms))
        thread = app.consumer._thread
        consumer = thread._create_worker_consumer(app.transport)
        await consumer.stop()  # never started: closes it
        thread.thread_loop.close()  # the consumer thread's own loop, never run
        return consumer._fetch_max_wait_ms

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)  # the one faust's app takes
    try:
        assert loop.run_until_complete(main()) == wait_ms
    finally:
        asyncio.set_event_loop(None)
        loop.close()


def test_a_partition_without_a_committed_offset_is_read_again_from_the_start(kafka) -> None:
    """After a rebalance faust seeks back to the committed offsets to read again what it
    fetched but dropped; aiokafka alone leaves a partition with no committed offset (or 0)
    where its fetcher stopped, and those records were never read."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from aiokafka.structs import OffsetAndMetadata, TopicPartition

    from rollstream.schemas.topics import qualified
    from rollstream.services.runtime.faust.app import seek_to_committed_or_reset

    topic = qualified("rollouts.raw", kafka.namespace)
    tps = [TopicPartition(topic, p) for p in (0, 1, 2)]

    async def main() -> tuple[list[int], list[int]]:
        producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap)
        consumer = AIOKafkaConsumer(
            bootstrap_servers=kafka.bootstrap,
            group_id=f"{kafka.namespace}.rewind",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        await producer.start()
        await consumer.start()
        try:
            for p in (0, 1, 2):
                for _ in range(10):
                    await producer.send(topic, b"x", partition=p)
            await producer.flush()
            consumer.assign(tps)
            await consumer.commit(
                {tps[1]: OffsetAndMetadata(0, ""), tps[2]: OffsetAndMetadata(4, "")}
            )
            read = 0
            for _ in range(30):  # read to the end (10 + 10 + 6 from the commit at 4)
                batch = await consumer.getmany(timeout_ms=500)
                read += sum(len(v) for v in batch.values())
                if read == 26:
                    break
            before = [await consumer.position(tp) for tp in tps]
            await seek_to_committed_or_reset(consumer, "earliest")
            return before, [await consumer.position(tp) for tp in tps]
        finally:
            await producer.stop()
            await consumer.stop()

    before, after = asyncio.run(main())
    assert before == [10, 10, 10]
    assert after == [0, 0, 4]
