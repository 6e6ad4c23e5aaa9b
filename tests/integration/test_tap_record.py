"""`rollstream tap`, `record` and `replay` as a user runs them: the console script, as a
subprocess, against the real broker."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import msgpack
import msgspec
import pytest
from golden import make_golden  # tests/golden/make_golden.py
from rollstream_cli import rollstream  # tests/integration/rollstream_cli.py

from rollstream.schemas import ScoredRollout, decode
from rollstream.services.runtime.admin import create_topics
from rollstream.services.runtime.bus import Producer
from rollstream.services.runtime.reader import Reader
from rollstream.services.runtime.settings import KafkaSettings
from rollstream.services.tools.record import iter_recording

pytestmark = pytest.mark.kafka


def json_lines(out: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def scored(reward: float, task: str, version: int, rid: str) -> ScoredRollout:
    s = make_golden.scored()
    r = msgspec.structs.replace(s.rollout, rollout_id=rid, task=task, policy_version=version)
    return msgspec.structs.replace(s, rollout=r, reward=reward)


# What `tap --json` prints for tests/golden's ScoredRollout, worked out by hand: token ids as
# ints, logprobs as floats, nested structs as objects, plus where it was read from.
EXPECTED_SCORED_JSON = {
    "schema": "ScoredRollout",
    "v": 1,
    "rollout": {
        "schema": "Rollout",
        "v": 1,
        "rollout_id": "g1-0",
        "group_id": "g1",
        "task_id": "add-17",
        "task": "add",
        "sample_index": 0,
        "group_size": 2,
        "prompt": "2+3=",
        "completion": "5",
        "prompt_ids": [1, 23, 16, 24, 34],
        "completion_ids": [26, 2],
        "logprobs": [-0.25, -1.5],
        "finish_reason": "stop",
        "policy_version": 3,
        "sampling": {"n": 2, "temperature": 1.0, "top_p": 1.0, "max_tokens": 16, "seed": 7},
        "answer": "5",
        "reference": {"kind": "int"},
        "generator_id": "gen-0",
        "queued_s": 0.5,
        "generate_s": 1.25,
        "produced_at": 1700000000.25,
    },
    "reward": 1.0,
    "rewards": {"correct": 1.0, "format": 0.5},
    "correct": True,
    "timed_out": [],
    "score_s": 0.125,
    "produced_at": 1700000001.25,
    "_topic": "rollouts.scored",
    "_offset": 0,
    "_key": "g1",
}


def test_tap_json_prints_a_known_message(kafka: KafkaSettings) -> None:
    p = Producer(kafka, "test")
    p.send("rollouts.scored", make_golden.scored(), key="g1")
    p.flush()
    out = rollstream(kafka, "tap", "rollouts.scored", "--from-beginning", "--json", "--limit", "1")
    assert out.returncode == 0, out.stderr
    (line,) = json_lines(out.stdout)
    assert line.pop("_partition") in range(8)
    assert line == EXPECTED_SCORED_JSON


def test_tap_survives_garbage_and_shows_it_as_an_error(kafka: KafkaSettings) -> None:
    p = Producer(kafka, "test")
    task = make_golden.examples()["PromptTask"]
    p.send("prompts", msgspec.structs.replace(task, task_id="before"), key="k")
    p.send_raw("prompts", b"\xc1\xc1 not a message", key="k")
    p.send("prompts", msgspec.structs.replace(task, task_id="after"), key="k")
    p.flush()

    out = rollstream(kafka, "tap", "prompts", "--from-beginning", "--json")
    assert out.returncode == 0, out.stderr
    lines = json_lines(out.stdout)
    assert [ln.get("task_id") for ln in lines] == ["before", None, "after"]
    err = lines[1]
    assert err["_offset"] == 1 and err["_partition"] == lines[0]["_partition"]
    assert "malformed" in err["_error"] and err["_key"] == "k" and err["_size"] == 16

    human = rollstream(kafka, "tap", "prompts", "--from-beginning")
    assert human.returncode == 0, human.stderr
    rows = human.stdout.splitlines()
    assert len(rows) == 3
    assert "task_id='before'" in rows[0] and "task_id='after'" in rows[2]
    assert rows[1].startswith(f"{err['_partition']}@1 ") and "ERROR" in rows[1]


def test_tap_where_and_fields_select_messages_and_columns(kafka: KafkaSettings) -> None:
    p = Producer(kafka, "test")
    for reward, task, version, rid in [
        (1.0, "add", 3, "a"),
        (0.0, "add", 4, "b"),
        (1.0, "mul", 5, "c"),
        (0.75, "add", 5, "d"),
    ]:
        p.send("rollouts.scored", scored(reward, task, version, rid), key="g1")
    p.flush()

    out = rollstream(
        kafka,
        "tap",
        "rollouts.scored",
        "--from-beginning",
        "--json",
        "--where",
        'reward > 0.5 and task == "add"',
        "--fields",
        "reward,rollout_id,rollout.policy_version",
    )
    assert out.returncode == 0, out.stderr
    rows = [{k: v for k, v in ln.items() if not k.startswith("_")} for ln in json_lines(out.stdout)]
    assert rows == [
        {"reward": 1.0, "rollout_id": "a", "rollout.policy_version": 3},
        {"reward": 0.75, "rollout_id": "d", "rollout.policy_version": 5},
    ]

    bad = rollstream(kafka, "tap", "rollouts.scored", "--where", "__import__('os')")
    assert bad.returncode == 2 and "not allowed" in bad.stderr
    typo = rollstream(kafka, "tap", "rollouts.scored", "--where", "rewrd > 1")
    assert typo.returncode == 2 and "unknown field 'rewrd'" in typo.stderr


def test_tap_stats_counts_and_summarises(kafka: KafkaSettings) -> None:
    p = Producer(kafka, "test")
    for reward, rid in [(1.0, "a"), (0.0, "b"), (0.5, "c")]:
        p.send("rollouts.scored", scored(reward, "add", 3, rid), key=rid)
    p.send_raw("rollouts.scored", b"junk", key="z")
    p.flush()
    out = rollstream(kafka, "tap", "rollouts.scored", "--from-beginning", "--stats", "--json")
    assert out.returncode == 0, out.stderr
    stats = json.loads(out.stdout)
    assert (stats["count"], stats["errors"]) == (3, 1)
    assert stats["numeric"]["reward"] == {"mean": 0.5, "min": 0.0, "max": 1.0, "count": 3}
    assert stats["numeric"]["len(rollout.completion_ids)"]["max"] == 2
    assert stats["strings"]["rollout.task"] == {"distinct": 1, "top": [["add", 3]]}
    size = len(msgspec.msgpack.encode(scored(1.0, "add", 3, "a")))
    assert stats["size_bytes"]["max"] == size

    table = rollstream(kafka, "tap", "rollouts.scored", "--from-beginning", "--stats")
    assert table.returncode == 0, table.stderr
    assert "count 3 messages, 1 undecodable" in table.stdout
    assert "of the 1 MiB default max.message.bytes" in table.stdout


def stored(kafka: KafkaSettings, topic: str) -> list[tuple[Any, ...]]:
    """Every record of `topic` as (partition, offset, key, value, headers), sorted."""
    with Reader(kafka, "test") as reader:
        return sorted(
            (m.partition, m.offset, m.key, m.value, tuple(m.headers))
            for m in reader.tail(topic, from_beginning=True, follow=False)
        )


def test_record_then_replay_into_another_namespace_is_byte_identical(
    kafka: KafkaSettings, tmp_path: Path
) -> None:
    p = Producer(kafka, "test")
    for i in range(6):
        p.send("rollouts.scored", scored(i / 5, "add", i, f"r{i}"), key=f"g{i % 3}")
    p.send_raw("rollouts.scored", b"kept as is", key="g0", headers=[("x-note", b"raw")])
    p.flush()
    original = stored(kafka, "rollouts.scored")
    assert len(original) == 7

    file = tmp_path / "scored.rsr"
    rec = rollstream(kafka, "record", "rollouts.scored", str(file))
    assert rec.returncode == 0, rec.stderr
    assert "recorded 7 messages of rollouts.scored (1 undecodable)" in rec.stdout
    recorded = list(iter_recording(file))
    assert (
        sorted((r.partition, r.offset, r.key, r.value, tuple(r.headers)) for r in recorded)
        == original
    )
    assert sum(1 for r in recorded if r.value != b"kept as is") == 6
    assert [decode(r.value, ScoredRollout).reward for r in recorded if r.key == b"g1"] == [0.2, 0.8]

    other = KafkaSettings(bootstrap=kafka.bootstrap, namespace="t" + uuid.uuid4().hex[:10])
    create_topics(other)
    rep = rollstream(other, "replay", str(file))
    assert rep.returncode == 0, rep.stderr
    assert f"replayed 7 messages from {file} into {other.namespace}.rollouts.scored" in rep.stdout
    copied = stored(other, "rollouts.scored")
    assert copied == original


def test_replay_refuses_a_file_that_is_not_a_recording(
    kafka: KafkaSettings, tmp_path: Path
) -> None:
    file = tmp_path / "other.msgpack"
    file.write_bytes(msgpack.packb({"format": "something-else", "version": 1}))
    out = rollstream(kafka, "replay", str(file), "prompts")
    assert out.returncode == 2
    assert "is not a rollstream recording" in out.stderr
    file.write_bytes(b"\xc1\xc1\xc1")
    out = rollstream(kafka, "replay", str(file), "prompts")
    assert out.returncode == 2
    assert "is not a rollstream recording" in out.stderr


@pytest.mark.slow  # loads transformers
def test_tap_detokenizes_token_ids_with_a_tokenizer(kafka: KafkaSettings, tmp_path: Path) -> None:
    from rollstream.services.models.tokenizer import save_tokenizer

    save_tokenizer(tmp_path / "tok")
    p = Producer(kafka, "test")
    p.send("rollouts.raw", make_golden.rollout(), key="g1")
    p.flush()
    out = rollstream(
        kafka,
        "tap",
        "rollouts.raw",
        "--from-beginning",
        "--json",
        "--fields",
        "prompt_ids,completion_ids",
        "--tokenizer",
        str(tmp_path / "tok"),
    )
    assert out.returncode == 0, out.stderr
    (line,) = json_lines(out.stdout)
    assert line["prompt_ids_text"] == "<bos>2+3="
    assert line["completion_ids_text"] == "5<eos>"
