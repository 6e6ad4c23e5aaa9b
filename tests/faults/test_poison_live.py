"""The fault suite of issue 16: poison records on every consumed topic, interleaved with the
real traffic of a live `rollstream up` on an embedded broker that this test starts.

Pass: `up` ends normally and no stage was restarted; every injected record is in its topic's
dead-letter topic (eval.results has only read-only readers, which skip), and on the followed
topics (control, weights) exactly once although every stage follows them; the ledger balances
exactly; the learner published versions and held-out accuracy rose.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from chaos_bench import chaos
from confluent_kafka import Producer as RawProducer
from poison import CONSUMED, bad_records

from rollstream.schemas.topics import qualified, unqualified
from rollstream.services.runtime.broker import EmbeddedBroker
from rollstream.services.runtime.settings import KafkaSettings
from rollstream.services.up.ledger import read_all

pytestmark = [pytest.mark.slow, pytest.mark.kafka]

PER_TOPIC = 1000
OVERSIZED = 3
ROUNDS = 10
RUN = ["--set", "target.minutes=3", "--set", "evaluator.min_interval_s=15"]
RUN += ["--set", "evaluator.items_per_task=50"]
RUN += ["--set", "feed.curriculum.policy=band"]  # so the feed reads prompt.stats too
READ_ONLY = {"eval.results"}  # read by `up` and UIs only: skipped, never dead-lettered
FOLLOWED = {"control", "weights"}  # read by many processes, dead-lettered by one


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[EmbeddedBroker]:
    with EmbeddedBroker(log_path=tmp_path / "broker.log") as b:
        yield b


class Injector:
    """Writes bad records as any Kafka client could and remembers where each one landed."""

    def __init__(self, kafka: KafkaSettings) -> None:
        self.kafka = kafka
        self.p = RawProducer(
            {"bootstrap.servers": kafka.bootstrap, "linger.ms": 20, "message.max.bytes": 8 << 20}
        )
        self.landed: dict[str, set[tuple[int, int]]] = {t: set() for t in CONSUMED}
        self.failed: list[str] = []

    def _done(self, err: Any, msg: Any) -> None:
        if err is not None:
            self.failed.append(f"{msg.topic()}: {err}")
            return
        topic = unqualified(msg.topic(), self.kafka.namespace)
        self.landed[topic].add((msg.partition(), msg.offset()))

    def send(self, topic: str, values: list[bytes | None]) -> None:
        for v in values:
            key = uuid.uuid4().hex.encode()
            real = qualified(topic, self.kafka.namespace)
            self.p.produce(real, v, key=key, on_delivery=self._done)
            self.p.poll(0)
        assert self.p.flush(60) == 0


def test_poison_on_every_topic_stops_nothing_and_every_record_is_dead_lettered(
    rollstream_home: Path, tmp_path: Path, broker: EmbeddedBroker
) -> None:
    ns = "poison" + uuid.uuid4().hex[:6]
    kafka = KafkaSettings(bootstrap=broker.bootstrap, namespace=ns)
    env = {**os.environ, "ROLLSTREAM_HOME": str(rollstream_home), "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "rollstream.services.cli", "up", "--no-view", *RUN]
    cmd += ["--bootstrap", broker.bootstrap, "--namespace", ns, "--name", "poison"]
    proc = subprocess.Popen(
        cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    with chaos.output_of(proc) as lines:
        time.sleep(30)  # the stages are up and traffic flows
        assert proc.poll() is None, "".join(lines)[-3000:]
        bad = {t: bad_records(t, PER_TOPIC + OVERSIZED, oversized=OVERSIZED) for t in CONSUMED}
        inj = Injector(kafka)
        step = (PER_TOPIC + OVERSIZED + ROUNDS - 1) // ROUNDS
        for r in range(ROUNDS):
            for topic in CONSUMED:
                inj.send(topic, bad[topic][r * step : (r + 1) * step])
            time.sleep(3)
        proc.wait(timeout=420)
    out = "".join(lines)
    assert proc.returncode == 0, out[-4000:]
    assert "restarting" not in out, [x for x in lines if "restarting" in x]
    for topic in CONSUMED:
        assert len(inj.landed[topic]) >= PER_TOPIC, (topic, len(inj.landed[topic]), inj.failed)

    dlq_counts: dict[str, int] = {}
    missing: dict[str, int] = {}
    for topic in CONSUMED:
        letters = read_all(kafka, topic + ".dlq", timeout_s=60)
        dlq_counts[topic] = len(letters)
        assert all(d.error for d in letters)
        if topic not in READ_ONLY:
            got = {(d.partition, d.offset) for d in letters if d.topic == topic}
            missing[topic] = len(inj.landed[topic] - got)
        if topic in FOLLOWED:  # one dead letter per bad record, not one per follower
            assert len(letters) == len(inj.landed[topic]), (topic, len(letters))
    print("records injected per topic:", {t: len(v) for t, v in inj.landed.items()})
    print("dead letters per topic:", dlq_counts)
    assert not any(missing.values()), missing

    run = next(p for p in (tmp_path / "runs").iterdir() if p.is_dir())
    ledger = json.loads((run / "ledger.json").read_text())["ledger"]
    print("ledger:", ledger)
    assert ledger["balanced"], ledger
    for topic in ("rollouts.raw", "groups.kept", "learner.feedback"):  # what status reads
        assert ledger["skipped_records"][topic] == len(inj.landed[topic]), ledger
    assert ledger["trained"] > 0 and ledger["learner_version"] >= 2, ledger
    evals = [json.loads(x) for x in (run / "eval.jsonl").read_text().splitlines()]
    assert evals[-1]["version"] > 0
    assert evals[-1]["accuracy"] > evals[0]["accuracy"], evals
