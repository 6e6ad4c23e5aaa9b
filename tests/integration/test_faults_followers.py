"""Bad records on the compacted `control` / `weights` topics and under read-only readers, on the
real embedded broker (issue 16: D1 followers, D7 readers). A follower still applies every valid
record fetched with a bad one; the bad record is dead-lettered once, by the one stage named for
the topic (runtime/stage.py DEAD_LETTERED_BY), and skipped and counted by every other
follower; a reader skips and reports it."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import msgspec
import pytest
from confluent_kafka import Producer as RawProducer
from golden import make_golden  # tests/golden/make_golden.py

from rollstream.schemas import DeadLetter, encode
from rollstream.schemas.topics import qualified
from rollstream.services.runtime.bus import Consumer
from rollstream.services.runtime.settings import KafkaSettings
from rollstream.services.runtime.stage import follow_control, follow_weights
from rollstream.services.up.ledger import compute, read_all

pytestmark = pytest.mark.kafka

EXAMPLES = make_golden.examples()


def write(kafka: KafkaSettings, topic: str, records: list[tuple[bytes, bytes | None]]) -> None:
    """Write (key, value) records as any Kafka client could, in one batch, in order."""
    p = RawProducer({"bootstrap.servers": kafka.bootstrap, "linger.ms": 50})
    for key, value in records:
        p.produce(qualified(topic, kafka.namespace), value, key=key, partition=0)
    assert p.flush(30) == 0


def dead_letters(
    kafka: KafkaSettings, topic: str, n: int, timeout_s: float = 30.0
) -> list[DeadLetter]:
    c = Consumer(kafka, "test", [topic + ".dlq"], group=None)
    got: list[Any] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(got) < n and time.monotonic() < deadline:
            got += c.poll(100, 0.2)
    finally:
        c.close()
    return [r.value for r in got]


def weights(version: int) -> bytes:
    return encode(msgspec.structs.replace(EXAMPLES["WeightUpdate"], version=version))


def test_weights_followers_apply_the_updates_around_bad_records_dead_lettered_once(
    kafka: KafkaSettings,
) -> None:
    write(
        kafka,
        "weights",
        [
            (b"policy", weights(1)),
            (b"policy", b"\x92\xc1garbage"),
            (b"policy", None),  # a tombstone
            (b"policy", weights(2)),
        ],
    )
    followers = [follow_weights(kafka, s, "policy") for s in ("generator", "evaluator", "filter")]
    try:
        for f in followers:
            assert f.caught_up.wait(30)
        time.sleep(0.5)
        assert all(f.latest is not None and f.latest.version == 2 for f in followers)
    finally:
        for f in followers:
            f.stop()
            f.join(10)
    letters = dead_letters(kafka, "weights", 6, timeout_s=8)
    assert sorted(d.offset for d in letters) == [1, 2]  # once, not once per follower
    reasons = {d.offset: d.error for d in letters}
    assert "malformed" in reasons[1] and "null value" in reasons[2]
    assert all(d.topic == "weights" and d.consumer == "evaluator" for d in letters)
    assert [f.consumer.skipped for f in followers] == [2, 0, 2]


def test_a_control_follower_keeps_applying_after_a_garbage_record(kafka: KafkaSettings) -> None:
    good = msgspec.structs.replace(EXAMPLES["ControlUpdate"], revision=3)
    write(kafka, "control", [(b"generator", b"\x00"), (b"generator", encode(good))])
    stages = ("generator", "replay", "scorer")
    followers = [follow_control(kafka, s) for s in stages]
    try:
        for f in followers:
            assert f.caught_up.wait(30)
        time.sleep(0.5)
        assert [f.latest.revision if f.latest else None for f in followers] == [3, None, None]
    finally:
        for f in followers:
            f.stop()
            f.join(10)
    (letter,) = dead_letters(kafka, "control", 3, timeout_s=8)  # once, by replay
    assert letter.offset == 0 and "ControlUpdate" in letter.error
    assert letter.consumer == "replay"
    assert [f.consumer.skipped for f in followers] == [1, 0, 1]


def test_status_skips_and_reports_bad_records_without_dead_lettering(
    kafka: KafkaSettings,
) -> None:
    raw = EXAMPLES["Rollout"]
    write(
        kafka,
        "rollouts.raw",
        [(b"g1", encode(raw)), (b"g1", None), (b"g1", b"\xff\xff"), (b"g1", encode(raw))],
    )
    skipped: Counter[str] = Counter()
    got = read_all(kafka, "rollouts.raw", timeout_s=20, skipped=skipped)
    assert [r.rollout_id for r in got] == [raw.rollout_id] * 2
    assert skipped == Counter({"rollouts.raw": 2})
    led = compute(kafka)
    assert led.generated == 1 and led.skipped_records == {"rollouts.raw": 2}
    assert dead_letters(kafka, "rollouts.raw", 1, timeout_s=3) == []  # a reader never writes
