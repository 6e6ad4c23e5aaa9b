"""The feed on the real broker: prompts that decode, the run-ahead bound, the curriculum seeing
`prompt.stats`, a restart that resumes, and `rollstream run feed` end to end."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from polling import read_for

from rollstream.schemas import PromptStats, PromptTask
from rollstream.services.feed.config import FeedConfig
from rollstream.services.feed.curriculum import make_policy
from rollstream.services.feed.items import build_pool, epoch_order
from rollstream.services.feed.service import Feed
from rollstream.services.runtime.bus import Consumer, Producer, Record
from rollstream.services.runtime.metrics import StageMetrics
from rollstream.services.runtime.settings import KafkaSettings

pytestmark = pytest.mark.kafka

ROWS = [{"prompt": f"say {w}=", "answer": w} for w in ("cat", "dog", "owl", "elk", "ant", "bee")]


def read(consumer: Consumer, count: int, timeout_s: float = 30.0) -> list[Record[PromptTask]]:
    """Exactly `count` records (one poll at a time), or fail after `timeout_s`."""
    out: list[Record[PromptTask]] = []
    deadline = time.monotonic() + timeout_s
    while len(out) < count and time.monotonic() < deadline:
        out += consumer.poll(max_messages=count - len(out), timeout_s=0.2)
    assert len(out) == count, f"got {len(out)} of {count} prompts"
    return out


class Running:
    """A Feed looping in a thread until stopped."""

    def __init__(self, feed: Feed) -> None:
        self.feed = feed
        self.stop = threading.Event()
        self.rc: int | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        self.rc = self.feed.run(self.stop.is_set)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=30)
        self.feed.close()


@pytest.fixture
def tap(kafka: KafkaSettings) -> Iterator[Consumer]:
    c = Consumer(kafka, "test", ["prompts"], group=None)
    yield c
    c.close()


def sample(metrics: StageMetrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(f"rollstream_feed_{name}", labels) or 0.0


def dataset(tmp_path: Path) -> str:
    path = tmp_path / "words.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    return str(path)


def test_feed_stops_at_max_ahead_and_goes_on_as_the_generators_commit(
    kafka: KafkaSettings, tap: Consumer
) -> None:
    cfg = FeedConfig.model_validate(
        {
            "tasks": [{"task": "add", "difficulty": 2}],
            "pool_size": 30,
            "max_ahead": 5,
            "poll_s": 0.2,
            "n": 4,
            "sampling": {"temperature": 0.5},
        }
    )
    pool = build_pool(cfg, seed=0)
    metrics = StageMetrics("feed")
    running = Running(Feed(cfg, kafka, pool, make_policy("epochs"), 0, metrics))
    generator = Consumer(kafka, "generator", ["prompts"], group="generator")
    try:
        first = read(tap, 5)
        assert read_for(tap, 1.5) == []  # nobody consumes: the feed holds at the bound
        assert sample(metrics, "paused_seconds_total") > 0
        order = epoch_order(len(pool), 0, 0)
        # partitions interleave on reading: compare as sets (8 partitions, keyed by task_id)
        assert {r.value.task_id for r in first} == {pool[i].task_id for i in order[:5]}
        for r in first:
            task = r.value
            assert r.key == task.task_id.encode()
            assert (task.n, task.epoch, task.task) == (4, 0, "add")
            assert task.sampling is not None and task.sampling.temperature == 0.5
            a, b = task.prompt.removeprefix("add ").removesuffix("=").split("+")
            assert task.answer == str(int(a) + int(b))

        read(generator, 3)  # the generators take three prompts and commit them
        generator.commit()
        second = read(tap, 3)
        assert read_for(tap, 1.5) == []  # three more, then the bound again
        assert {r.value.task_id for r in second} == {pool[i].task_id for i in order[5:8]}
        assert sample(metrics, "prompts_sent_total", task="add") == 8
    finally:
        generator.close()
        running.close()


@pytest.mark.parametrize("lead_polls", [0.0, 2.0])
def test_generators_that_take_every_prompt_at_once_are_not_held_to_max_ahead_a_poll(
    kafka: KafkaSettings, lead_polls: float
) -> None:
    """A fixed bound lets at most max_ahead prompts out per poll_s (here 5 per 0.2 s: 75 in
    3 s), however fast the generators commit; with a lead the bound follows their rate."""
    cfg = FeedConfig.model_validate(
        {
            "tasks": [{"task": "add", "difficulty": 2}],
            "pool_size": 30,
            "max_ahead": 5,
            "poll_s": 0.2,
            "lead_polls": lead_polls,
        }
    )
    metrics = StageMetrics("feed")
    running = Running(Feed(cfg, kafka, build_pool(cfg, seed=0), make_policy("epochs"), 0, metrics))
    generator = Consumer(kafka, "generator", ["prompts"], group="generator")
    try:
        read(generator, 5)  # joined; from here on it commits whatever it is given
        generator.commit()
        got, deadline = 0, time.monotonic() + 3.0
        while time.monotonic() < deadline:
            recs = generator.poll(max_messages=500, timeout_s=0.05)
            if recs:
                got += len(recs)
                generator.commit()
        bound = sample(metrics, "max_ahead")  # the bound in force, as the gauge shows
    finally:
        generator.close()
        running.close()
    if lead_polls == 0:
        assert got <= 75 + 5 and bound == 5, (got, bound)
    else:
        assert got > 2 * 75 and bound > 5, (got, bound)


def test_band_policy_skips_a_prompt_once_its_pass_rate_reaches_one(
    kafka: KafkaSettings, tap: Consumer, tmp_path: Path
) -> None:
    cfg = FeedConfig.model_validate(
        {
            "datasets": [{"path": dataset(tmp_path), "task": "words"}],
            "epochs": 2,
            "shuffle": False,
            "max_ahead": 6,
            "poll_s": 0.2,
            "curriculum": {"policy": "band", "params": {"lo": 0.0, "hi": 0.95}},
        }
    )
    pool = build_pool(cfg, seed=0)
    metrics = StageMetrics("feed")
    policy = make_policy(cfg.curriculum.policy, cfg.curriculum.params)
    running = Running(Feed(cfg, kafka, pool, policy, 0, metrics))
    generator = Consumer(kafka, "generator", ["prompts"], group="generator")
    producer = Producer(kafka, "filter")
    try:
        epoch0 = read(tap, 6)  # no stats yet: all six, then the bound
        assert sorted(r.value.prompt for r in epoch0) == sorted(r["prompt"] for r in ROWS)
        solved = pool[1].task_id  # "say dog=" was always right
        stats = PromptStats(
            task_id=solved,
            task="words",
            pass_rate=1.0,
            last_pass_rate=1.0,
            groups=1,
            recent=[1.0],
            produced_at=time.time(),
        )
        producer.send("prompt.stats", stats, solved)
        producer.flush()
        deadline = time.monotonic() + 30
        while sample(metrics, "messages_in_total", topic="prompt.stats") < 1:
            assert time.monotonic() < deadline, "the feed never read prompt.stats"
            time.sleep(0.1)
        read(generator, 6)
        generator.commit()
        epoch1 = read(tap, 5)
        assert read_for(tap, 1.0) == []
        assert [r.value.epoch for r in epoch1] == [1] * 5
        assert sorted(r.value.task_id for r in epoch1) == sorted(
            it.task_id for it in pool if it.task_id != solved
        )
        assert sample(metrics, "prompts_skipped_total", reason="band_too_easy") == 1
        running.thread.join(timeout=30)
        assert running.rc == 0  # two epochs done: the feed ends by itself
    finally:
        producer.close()
        generator.close()
        running.close()


def test_a_restarted_feed_resumes_after_the_last_prompt_it_sent(
    kafka: KafkaSettings, tap: Consumer, tmp_path: Path
) -> None:
    spec = {"datasets": [{"path": dataset(tmp_path), "task": "words"}], "epochs": 1}
    cfg = FeedConfig.model_validate({**spec, "max_ahead": 4, "poll_s": 0.2})
    pool = build_pool(cfg, seed=5)
    running = Running(Feed(cfg, kafka, pool, make_policy("epochs"), 5))
    try:
        before = read(tap, 4)
    finally:
        running.close()  # stopped at the bound, as if killed after its fourth prompt
    again = FeedConfig.model_validate({**spec, "max_ahead": 100})
    feed = Feed(again, kafka, build_pool(again, seed=5), make_policy("epochs"), 5)
    try:
        assert feed.run(lambda: False) == 0
    finally:
        feed.close()
    after = read(tap, 2)
    assert read_for(tap, 1.0) == []
    order = [pool[i].task_id for i in epoch_order(6, 5, 0)]
    assert sorted(r.value.task_id for r in before) == sorted(order[:4])
    assert sorted(r.value.task_id for r in after) == sorted(order[4:])  # the rest, each once


def test_rollstream_run_feed_publishes_one_epoch_and_exits(
    kafka: KafkaSettings, tap: Consumer
) -> None:
    cmd = [sys.executable, "-m", "rollstream.services.cli", "run", "feed"]
    cmd += ["--bootstrap", kafka.bootstrap, "--namespace", str(kafka.namespace)]
    cmd += ["--metrics-port", "-1", "--set", "feed.epochs=1", "--set", "feed.pool_size=5"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    tasks = [r.value for r in read(tap, 5)]
    assert read_for(tap, 1.0) == []
    assert {t.task for t in tasks} <= {"add", "sort", "reverse", "count"}
    assert all(t.n == 8 and t.answer for t in tasks)

    bad = cmd[:-4] + ["--set", "feed.curriculum.policy=nosuch"]
    done = subprocess.run(bad, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "unknown curriculum policy 'nosuch'" in done.stderr
