"""A broker pause longer than the group session (issue 16 D8), on a real embedded broker that
this test starts and SIGSTOPs itself: a group consumer's commit is refused, it rejoins and
goes on instead of raising (the generator and learner exited 1 here), and no record is lost."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest
from golden import make_golden  # tests/golden/make_golden.py

from rollstream.services.runtime.admin import create_topics
from rollstream.services.runtime.broker import EmbeddedBroker
from rollstream.services.runtime.bus import Consumer, Producer
from rollstream.services.runtime.settings import KafkaSettings

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


SESSION_MS = 6000


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[EmbeddedBroker]:
    """A broker of this test alone (pausing the session broker would stall other tests)."""
    broker = EmbeddedBroker(log_path=tmp_path / "broker.log").start()
    try:
        yield broker
    finally:
        assert broker.proc is not None
        os.kill(broker.proc.pid, signal.SIGCONT)  # never leave it stopped
        broker.stop()


def send(producer: Producer, ids: list[str]) -> None:
    base = make_golden.examples()["PromptTask"]
    for i in ids:
        producer.send("prompts", msgspec.structs.replace(base, task_id=i), key=i)
    producer.flush()


def read(consumer: Consumer, want: set[str], timeout_s: float = 60.0) -> list[str]:
    got: list[str] = []
    deadline = time.monotonic() + timeout_s
    while not want <= set(got):
        assert time.monotonic() < deadline, f"missing {sorted(want - set(got))}"
        got += [r.value.task_id for r in consumer.poll(100, 0.5)]
    return got


def test_a_commit_after_the_session_expired_rejoins_instead_of_raising(
    own_broker: EmbeddedBroker,
) -> None:
    kafka = KafkaSettings(bootstrap=own_broker.bootstrap, session_timeout_ms=SESSION_MS)
    create_topics(kafka)
    producer = Producer(kafka, "test")
    consumer = Consumer(kafka, "gen", ["prompts"], group="pause-test", producer=producer)
    try:
        send(producer, ["a0", "a1", "a2"])
        read(consumer, {"a0", "a1", "a2"})
        consumer.commit()
        send(producer, ["b0", "b1"])
        read(consumer, {"b0", "b1"})  # handed out, not committed yet

        assert own_broker.proc is not None
        os.kill(own_broker.proc.pid, signal.SIGSTOP)
        time.sleep(2.5 * SESSION_MS / 1000)
        os.kill(own_broker.proc.pid, signal.SIGCONT)
        time.sleep(SESSION_MS / 1000)  # the broker notices the missed heartbeats

        refused = 0
        for _ in range(3):
            refused += consumer.commit() is False  # raised KafkaException(UNKNOWN_MEMBER_ID)
            consumer.poll(100, 0.5)
        assert refused >= 1, "the broker pause did not expire the session; test proves nothing"

        # still a working member: new records arrive, and b0/b1 (whose commit was refused)
        # come again or were committed; nothing is lost
        send(producer, ["c0", "c1"])
        got = read(consumer, {"c0", "c1"})
        consumer.commit()
        assert set(got) <= {"b0", "b1", "c0", "c1"}
    finally:
        consumer.close()

    after = Consumer(kafka, "gen", ["prompts"], group="pause-test")
    try:
        time.sleep(1)
        leftover = [r.value.task_id for r in after.poll(100, 3.0)]
        assert "c0" not in leftover and "c1" not in leftover  # committed: not read again
    finally:
        after.close()


def test_a_reader_started_while_the_broker_is_paused_waits_for_it_instead_of_exiting(
    own_broker: EmbeddedBroker,
) -> None:
    """A follower (no group: `weights`, `control`, the evaluator's readers) that starts during
    a broker pause used to raise "Failed to get metadata" and exit; it now waits and reads."""
    import threading

    kafka = KafkaSettings(bootstrap=own_broker.bootstrap, session_timeout_ms=SESSION_MS)
    create_topics(kafka)
    producer = Producer(kafka, "test")
    send(producer, ["p0", "p1"])
    assert own_broker.proc is not None
    os.kill(own_broker.proc.pid, signal.SIGSTOP)
    resume = threading.Timer(15.0, os.kill, (own_broker.proc.pid, signal.SIGCONT))
    resume.start()
    try:
        reader = Consumer(kafka, "eval", ["prompts"], group=None, from_beginning=True)
    finally:
        resume.join()
    try:
        assert {"p0", "p1"} <= set(read(reader, {"p0", "p1"}))
    finally:
        reader.close()
