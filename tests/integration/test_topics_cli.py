"""`rollstream topics create|list` as a user runs them, checked against the broker's own view."""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import yaml
from confluent_kafka.admin import AdminClient, ConfigResource
from rollstream_cli import ROLLSTREAM, rollstream  # tests/integration/rollstream_cli.py

from rollstream.schemas import PromptTask
from rollstream.schemas.topics import all_topics, qualified
from rollstream.services.runtime.broker import free_port
from rollstream.services.runtime.bus import Consumer, Producer
from rollstream.services.runtime.settings import KafkaSettings

pytestmark = pytest.mark.kafka


def test_topics_create_is_idempotent_and_matches_the_registry(bootstrap: str) -> None:
    kafka = KafkaSettings(bootstrap=bootstrap, namespace="t" + uuid.uuid4().hex[:10])
    n = len(all_topics())
    assert n == 22  # 11 topics and their dead-letter topics

    first = rollstream(kafka, "topics", "create")
    assert first.returncode == 0, first.stderr
    assert f"{n} created, 0 already there" in first.stdout
    second = rollstream(kafka, "topics", "create")
    assert second.returncode == 0, second.stderr
    assert f"0 created, {n} already there" in second.stdout
    assert "exists   weights" in second.stdout

    admin = AdminClient({"bootstrap.servers": bootstrap})
    md = admin.list_topics(timeout=10)
    reals = {t.name: qualified(t.name, kafka.namespace) for t in all_topics()}
    for t in all_topics():
        assert len(md.topics[reals[t.name]].partitions) == t.partitions, t.name
    futures = admin.describe_configs(
        [ConfigResource(ConfigResource.Type.TOPIC, real) for real in reals.values()]
    )
    policy = {
        res.name.split(".", 1)[1]: fut.result()["cleanup.policy"].value
        for res, fut in futures.items()
    }
    compacted = {name for name, p in policy.items() if p == "compact"}
    assert compacted == {"weights", "control"}
    assert set(policy.values()) == {"compact", "delete"}
    assert len(md.topics[reals["prompts"]].partitions) == 8
    assert len(md.topics[reals["batches.train"]].partitions) == 1


def test_topics_list_shows_partitions_messages_and_group_lag(kafka: KafkaSettings) -> None:
    producer = Producer(kafka, "test")

    def send(n: int, start: int) -> None:
        for i in range(start, start + n):  # one batch, one partition (same key)
            producer.send(
                "prompts",
                PromptTask(task_id=f"p{i}", task="add", prompt="1+1=", n=2, produced_at=0.0),
                key="k",
            )
        producer.flush()

    send(3, 0)
    consumer = Consumer(kafka, "gen", ["prompts"], group="generator")
    try:
        got: list = []
        deadline = time.monotonic() + 30
        while len(got) < 3:
            assert time.monotonic() < deadline
            got += consumer.poll(500, 0.2)
        consumer.commit()
    finally:
        consumer.close()
    send(2, 3)  # not consumed: the group is 2 behind

    out = rollstream(kafka, "topics", "list")
    assert out.returncode == 0, out.stderr
    rows = {
        line.split("│")[1].strip(): [c.strip() for c in line.split("│")[2:-1]]
        for line in out.stdout.splitlines()
        if line.count("│") >= 5
    }
    partitions, messages, ends, lag = rows["prompts"]
    assert (partitions, messages, lag) == ("8", "5", "generator=2")
    assert sorted(ends.split()) == ["0"] * 7 + ["5"]
    assert rows["weights"][:2] == ["1", "0"] and rows["weights"][3] == "-"
    assert rows["rollouts.raw.dlq"][0] == "1"


def test_kafka_partitions_sets_every_multi_partition_topic_and_leaves_single_ones(
    bootstrap: str,
) -> None:
    """`kafka.partitions` (what `rollstream up` sets on its own broker to the most replicas any
    stage runs): every topic the registry spreads over several partitions gets that many, the
    single-partition ones (weights, control, batches, feedback) stay single."""
    from rollstream.services.runtime.admin import create_topics

    kafka = KafkaSettings(bootstrap=bootstrap, namespace="p" + uuid.uuid4().hex[:10], partitions=2)
    create_topics(kafka)
    md = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10)
    for t in all_topics():
        want = 2 if t.partitions > 1 else 1
        assert len(md.topics[qualified(t.name, kafka.namespace)].partitions) == want, t.name


def test_tools_find_the_broker_of_the_run_in_this_folder(bootstrap: str, tmp_path: Path) -> None:
    """`rollstream up` starts its broker on a free port in a namespace of its own: `tap`,
    `topics`, `record`, `control` in the run's folder find them without flags, and say so;
    once that broker is gone they say what to do instead of retrying a dead port."""
    kafka = KafkaSettings(bootstrap=bootstrap, namespace="t" + uuid.uuid4().hex[:10])
    assert rollstream(kafka, "topics", "create").returncode == 0
    run = tmp_path / "runs" / "r1"
    run.mkdir(parents=True)
    saved = {"kafka": {"bootstrap": bootstrap, "namespace": kafka.namespace}}
    (run / "config.yaml").write_text(yaml.safe_dump(saved))
    (run / "run.json").write_text('{"embedded_broker": true}')  # a stream run (sync has none)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROLLSTREAM_")}
    env["COLUMNS"] = "200"

    def tool(*args: str) -> subprocess.CompletedProcess[str]:
        cmd = [ROLLSTREAM, *args]
        return subprocess.run(
            cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
        )

    listed = tool("topics", "list")
    assert listed.returncode == 0, listed.stderr
    assert "groups.kept" in listed.stdout and "learner.feedback" in listed.stdout
    assert f"Kafka of the run runs/r1: {bootstrap}, namespace {kafka.namespace}" in listed.stderr

    saved["kafka"]["bootstrap"] = f"127.0.0.1:{free_port()}"  # the run stopped: nothing there
    (run / "config.yaml").write_text(yaml.safe_dump(saved))
    t0 = time.monotonic()
    tapped = tool("tap", "prompts", "-n", "1")
    assert tapped.returncode == 2, tapped.stderr
    assert "no Kafka answers at 127.0.0.1:9092 (the newest run, runs/r1, has stopped)" in (
        tapped.stderr
    )
    assert "FAIL" not in tapped.stderr  # no stream of the client's connection errors
    assert time.monotonic() - t0 < 30


def test_a_named_kafka_that_does_not_answer_is_refused_not_retried(tmp_path: Path) -> None:
    """`--bootstrap` naming a dead address: `control` used to retry it for ever and `tap` to
    print a screen of client errors, and `status` showed the saved ledger of the newest local
    run instead; each now says that Kafka does not answer and exits 2."""
    run = tmp_path / "runs" / "r1"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump({"kafka": {"bootstrap": "127.0.0.1:1"}}))
    (run / "run.json").write_text('{"embedded_broker": true}')
    saved_ledger = {"text": "ledger BALANCED (saved)", "ledger": {"balanced": True}}
    (run / "ledger.json").write_text(json.dumps(saved_ledger))
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROLLSTREAM_")}
    dead = f"127.0.0.1:{free_port()}"
    for args in (
        ["control", "replay", "batch_groups=32"],
        ["tap", "prompts", "-n", "1"],
        ["topics", "list"],
        ["status"],
    ):
        t0 = time.monotonic()
        res = subprocess.run(
            [ROLLSTREAM, *args, "--bootstrap", dead],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert res.returncode == 2, (args, res.stdout, res.stderr)
        assert f"no Kafka answers at {dead} (named by --bootstrap" in res.stderr, args
        assert "FAIL" not in res.stderr and "saved ledger" not in res.stdout, args
        assert time.monotonic() - t0 < 30, args


def test_tap_of_a_misspelt_topic_names_the_close_ones(kafka: KafkaSettings) -> None:
    rollstream(kafka, "topics", "create")
    res = rollstream(kafka, "tap", "rollouts.scord", "-n", "1")
    assert res.returncode == 2
    assert "'rollouts.scord' is not one of rollstream's topics; did you mean rollouts.scored" in (
        res.stderr
    ), res.stderr
    other = rollstream(kafka, "tap", "zzz", "-n", "1")
    assert other.returncode == 2
    assert "'zzz' is not one of rollstream's topics: `rollstream topics list`" in other.stderr
