"""The bus on the real embedded broker: keyed round trips, dead letters, at-least-once delivery
across crashes, third-party writers, lag and counters."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import msgpack
import msgspec
import pytest
from confluent_kafka import Producer as RawProducer
from golden import make_golden  # tests/golden/make_golden.py

from rollstream.schemas import DeadLetter, PromptTask, Rollout, encode
from rollstream.schemas.topics import qualified
from rollstream.services.runtime.bus import Consumer, Producer, Record
from rollstream.services.runtime.metrics import BusMetrics, StageMetrics
from rollstream.services.runtime.reader import Reader
from rollstream.services.runtime.settings import KafkaSettings

pytestmark = pytest.mark.kafka


def prompt(task_id: str) -> PromptTask:
    return msgspec.structs.replace(make_golden.examples()["PromptTask"], task_id=task_id)


def poll_until(consumer: Consumer, n: int, timeout_s: float = 30.0) -> list[Record[Any]]:
    """Poll until `n` records arrived (fails the test after `timeout_s`)."""
    got: list[Record[Any]] = []
    deadline = time.monotonic() + timeout_s
    while len(got) < n:
        assert time.monotonic() < deadline, f"only {len(got)} of {n} records in {timeout_s}s"
        got += consumer.poll(500, 0.2)
    return got


def sample(registry: Any, name: str, topic: str) -> float | None:
    return registry.get_sample_value(name, {"topic": topic})


def test_poll_hands_on_a_record_as_soon_as_it_is_there(kafka: KafkaSettings) -> None:
    """poll(500, 5 s) with one record on the topic returns it without waiting out the 5 s
    (librdkafka's consume(n, timeout) alone waits for n records or the timeout); `fill`
    waits for the batch, which is what a generator filling a batch of prompts wants."""
    producer = Producer(kafka, "test")
    consumer = Consumer(kafka, "test", ["prompts"], group=None)
    try:
        consumer.poll(10, 2.0)  # assignment done
        producer.send("prompts", prompt("t1"), key="t1")
        producer.flush()
        t0 = time.monotonic()
        got = consumer.poll(500, 5.0)
        assert [r.value.task_id for r in got] == ["t1"]
        assert time.monotonic() - t0 < 2.5
        producer.send("prompts", prompt("t2"), key="t2")
        producer.flush()
        t0 = time.monotonic()
        got = consumer.poll(2, 3.0, fill=True)  # one record of the two asked for
        assert [r.value.task_id for r in got] == ["t2"]
        assert time.monotonic() - t0 >= 2.9
    finally:
        consumer.close()
        producer.close()


def test_keyed_messages_round_trip_and_share_a_partition(kafka: KafkaSettings) -> None:
    base = make_golden.rollout()
    sent = [msgspec.structs.replace(base, rollout_id=f"g1-{i}", sample_index=i) for i in range(4)]
    other = msgspec.structs.replace(base, rollout_id="g2-0", group_id="g2")
    producer = Producer(kafka, "test")
    for r in sent:
        producer.send("rollouts.raw", r, key="g1")
    producer.send("rollouts.raw", other, key="g2")
    producer.flush()

    consumer = Consumer(kafka, "test", ["rollouts.raw"], group=None)
    try:
        got = poll_until(consumer, 5)
    finally:
        consumer.close()
    g1 = [r for r in got if r.key == b"g1"]
    assert [r.value for r in g1] == sent  # decoded, in order
    assert len({r.partition for r in g1}) == 1
    assert [r.offset for r in g1] == [0, 1, 2, 3]
    assert all(isinstance(r.value, Rollout) and r.topic == "rollouts.raw" for r in got)
    assert [r.value for r in got if r.key == b"g2"] == [other]


def test_a_key_lands_where_the_java_client_and_faust_would_put_it(kafka: KafkaSettings) -> None:
    """A group's samples written by our producer and by another client (a Java producer,
    faust's aiokafka) must meet on one partition: murmur2 of the key, not librdkafka's CRC32."""
    from aiokafka.partitioner import murmur2

    producer = Producer(kafka, "test")
    base = make_golden.rollout()
    keys = [f"g{i}" for i in range(32)]
    for key in keys:
        producer.send("rollouts.raw", msgspec.structs.replace(base, group_id=key), key=key)
    producer.flush()
    consumer = Consumer(kafka, "test", ["rollouts.raw"], group=None)
    try:
        got = poll_until(consumer, len(keys))
    finally:
        consumer.close()
    with Reader(kafka, "test") as reader:
        count = len(reader.partitions("rollouts.raw"))
    placed = {r.key: r.partition for r in got}
    assert placed == {k.encode(): (murmur2(k.encode()) & 0x7FFFFFFF) % count for k in keys}
    assert len(set(placed.values())) > 1


def test_garbage_goes_to_the_dlq_and_the_good_messages_around_it_are_processed(
    kafka: KafkaSettings,
) -> None:
    out_stage, in_stage = StageMetrics("testout"), StageMetrics("testin")
    out_metrics, in_metrics = BusMetrics(out_stage), BusMetrics(in_stage)
    producer = Producer(kafka, "test", metrics=out_metrics)
    producer.send("prompts", prompt("a"), key="k")
    producer.send_raw("prompts", b"\x92\xc1garbage", key="k")
    producer.send("prompts", prompt("b"), key="k")
    producer.flush()

    dlq_producer = Producer(kafka, "gen", metrics=in_metrics)
    consumer = Consumer(
        kafka, "gen", ["prompts"], group=None, producer=dlq_producer, metrics=in_metrics
    )
    try:
        got = poll_until(consumer, 2)
        consumer.commit()  # flushes the dead letter
    finally:
        consumer.close()
    assert [r.value.task_id for r in got] == ["a", "b"]
    assert [r.offset for r in got] == [0, 2]

    reader = Consumer(kafka, "test", ["prompts.dlq"], group=None)
    try:
        (dead,) = poll_until(reader, 1)
    finally:
        reader.close()
    dl = dead.value
    assert isinstance(dl, DeadLetter)
    assert dl.value == b"\x92\xc1garbage"
    assert (dl.topic, dl.partition, dl.offset, dl.key) == ("prompts", got[0].partition, 1, b"k")
    assert "malformed" in dl.error and "PromptTask" in dl.error
    assert dead.key == b"k"

    reg_out, reg_in = out_stage.registry, in_stage.registry
    assert sample(reg_out, "rollstream_testout_messages_out_total", "prompts") == 3
    assert sample(reg_in, "rollstream_testin_messages_in_total", "prompts") == 3
    assert sample(reg_in, "rollstream_testin_dead_letters_total", "prompts") == 1
    assert sample(reg_in, "rollstream_testin_messages_out_total", "prompts.dlq") == 1


def test_a_third_party_writer_is_decoded_and_its_garbage_dead_lettered(
    kafka: KafkaSettings,
) -> None:
    """No rollstream code on the writing side: plain msgpack.packb of the documented map."""
    documented = {
        "schema": "PromptTask",
        "v": 1,
        "task_id": "ext-1",
        "task": "add",
        "prompt": "1+1=",
        "n": 4,
        "produced_at": 1.5,
        "some_future_field": [1, 2],
    }
    raw = RawProducer({"bootstrap.servers": kafka.bootstrap})
    topic = qualified("prompts", kafka.namespace)
    raw.produce(topic, msgpack.packb(documented), key=b"ext-1")
    raw.produce(topic, b"definitely not msgpack", key=b"ext-1")
    assert raw.flush(10) == 0

    consumer = Consumer(kafka, "gen", ["prompts"], group=None, producer=Producer(kafka, "gen"))
    try:
        (rec,) = poll_until(consumer, 1)
        consumer.commit()
    finally:
        consumer.close()
    assert rec.value == PromptTask(task_id="ext-1", task="add", prompt="1+1=", n=4, produced_at=1.5)
    reader = Consumer(kafka, "test", ["prompts.dlq"], group=None)
    try:
        (dead,) = poll_until(reader, 1)
    finally:
        reader.close()
    assert dead.value.value == b"definitely not msgpack"
    assert dead.value.offset == 1


def test_uncommitted_messages_are_read_again_and_committed_ones_are_not(
    kafka: KafkaSettings,
) -> None:
    producer = Producer(kafka, "test")
    producer.send("prompts", prompt("first"), key="k")
    producer.flush()

    c1 = Consumer(kafka, "gen", ["prompts"], group="generator")
    assert [r.value.task_id for r in poll_until(c1, 1)] == ["first"]
    c1.close()  # consumed, never committed

    c2 = Consumer(kafka, "gen", ["prompts"], group="generator")
    (again,) = poll_until(c2, 1)
    assert (again.value.task_id, again.offset) == ("first", 0)  # nothing lost
    c2.commit()
    c2.close()

    producer.send("prompts", prompt("second"), key="k")
    producer.flush()
    c3 = Consumer(kafka, "gen", ["prompts"], group="generator")
    try:
        (nxt,) = poll_until(c3, 1)
    finally:
        c3.close()
    assert (nxt.value.task_id, nxt.offset) == ("second", 1)  # "first" was not read again


KILLED_CONSUMER = textwrap.dedent("""
    import sys, time
    from rollstream.services.runtime.bus import Consumer
    from rollstream.services.runtime.settings import KafkaSettings

    kafka = KafkaSettings(bootstrap=sys.argv[1], namespace=sys.argv[2], session_timeout_ms=6000)
    c = Consumer(kafka, "gen", ["prompts"], group="generator")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # gives up (and the test fails) rather than hang
        recs = c.poll(500, 0.2)
        if recs:
            print("consumed", recs[0].value.task_id, recs[0].offset, flush=True)
            time.sleep(600)  # SIGKILL arrives here, before any commit
""")


def test_a_consumer_killed_before_committing_loses_nothing(
    kafka: KafkaSettings, tmp_path: Path
) -> None:
    producer = Producer(kafka, "test")
    producer.send("prompts", prompt("precious"), key="k")
    producer.flush()
    script = tmp_path / "consumer.py"
    script.write_text(KILLED_CONSUMER)
    proc = subprocess.Popen(
        [sys.executable, str(script), kafka.bootstrap, str(kafka.namespace)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().split() == ["consumed", "precious", "0"]
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        proc.stdout.close()  # type: ignore[union-attr]
    assert proc.returncode == -signal.SIGKILL

    restarted = Consumer(kafka, "gen", ["prompts"], group="generator")
    try:
        (rec,) = poll_until(restarted, 1, timeout_s=60)  # waits out the dead member's session
    finally:
        restarted.close()
    assert (rec.value.task_id, rec.offset) == ("precious", 0)


def test_consumer_lag_counts_what_is_left_and_reaches_zero(kafka: KafkaSettings) -> None:
    stage = StageMetrics("lagtest")
    metrics = BusMetrics(stage)
    producer = Producer(kafka, "test")
    for i in range(5):  # one batch: the broker's ListOffsets may answer short of the end
        producer.send("prompts", prompt(f"p{i}"), key="k")
    producer.flush()

    consumer = Consumer(kafka, "lagtest", ["prompts"], group=None, metrics=metrics)
    try:
        first: list[Record[Any]] = []
        while not first:
            first = consumer.poll(max_messages=2, timeout_s=0.5)
        assert consumer.lag() == {"prompts": 5 - len(first)}  # 3 or 4 left
        assert sample(stage.registry, "rollstream_lagtest_consumer_lag_messages", "prompts") == (
            5 - len(first)
        )
        poll_until(consumer, 5 - len(first))
        assert consumer.lag() == {"prompts": 0}
    finally:
        consumer.close()
    gauge = stage.registry
    assert sample(gauge, "rollstream_lagtest_consumer_lag_messages", "prompts") == 0
    assert sample(gauge, "rollstream_lagtest_messages_in_total", "prompts") == 5


def test_encode_is_what_goes_on_the_wire(kafka: KafkaSettings) -> None:
    """A record read with a plain confluent consumer carries exactly encode(msg) and the
    schema/v headers."""
    from confluent_kafka import Consumer as RawConsumer
    from confluent_kafka import TopicPartition

    producer = Producer(kafka, "test")
    producer.send("weights", make_golden.examples()["WeightUpdate"], key="policy")
    producer.flush()
    raw = RawConsumer({"bootstrap.servers": kafka.bootstrap, "group.id": "unused"})
    topic = qualified("weights", kafka.namespace)
    raw.assign([TopicPartition(topic, 0, 0)])
    try:
        m = None
        deadline = time.monotonic() + 20
        while m is None or m.error() is not None:
            assert time.monotonic() < deadline
            m = raw.poll(0.5)
    finally:
        raw.close()
    assert m.value() == encode(make_golden.examples()["WeightUpdate"])
    assert m.key() == b"policy"
    assert m.headers() == [("schema", b"WeightUpdate"), ("v", b"1")]
