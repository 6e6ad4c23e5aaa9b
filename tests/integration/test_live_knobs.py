"""Feed, learner and replay follow `rollstream control` on the real broker (issue 16 D6): a
knob set with the CLI changes what the stage does, a refused one is never published (or, sent
anyway, is refused by the stage), and `--unset` brings the run file's value back."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from polling import read_for, wait_until

from rollstream.schemas import WeightUpdate
from rollstream.services.cli import main
from rollstream.services.feed.config import FeedConfig
from rollstream.services.feed.curriculum import make_policy
from rollstream.services.feed.items import build_pool
from rollstream.services.feed.service import Feed
from rollstream.services.runtime.bus import Consumer
from rollstream.services.runtime.metrics import StageMetrics
from rollstream.services.runtime.settings import KafkaSettings
from rollstream.services.runtime.stage import follow_control

pytestmark = pytest.mark.kafka


def control(kafka: KafkaSettings, *argv: str) -> int:
    return main(["control", *argv, "--bootstrap", kafka.bootstrap, "--namespace", kafka.namespace])


def test_the_feed_follows_its_live_knobs_and_an_unset_knob_reverts(kafka: KafkaSettings) -> None:
    cfg = FeedConfig.model_validate(
        {"tasks": [{"task": "add"}], "pool_size": 50, "max_ahead": 3, "poll_s": 0.2, "n": 4}
    )
    metrics = StageMetrics("feed")
    feed = Feed(
        cfg,
        kafka,
        build_pool(cfg, seed=0),
        make_policy("epochs"),
        0,
        metrics,
        control=follow_control(kafka, "feed"),
    )
    stop = threading.Event()
    thread = threading.Thread(target=feed.run, args=(stop.is_set,), daemon=True)
    thread.start()
    tap = Consumer(kafka, "test", ["prompts"], group=None)
    try:
        first = read_for(tap, 3.0)  # nobody consumes: the run file's bound holds
        assert len(first) == 3
        assert all(r.value.sampling is None and r.value.n == 4 for r in first)

        assert control(kafka, "feed", "max_ahead=7", "n=2", "sampling={temperature: 0.25}") == 0
        assert control(kafka, "feed", "pool_size=9") == 2  # not live: refused, nothing published
        second = read_for(tap, 4.0)
        assert len(second) == 4  # the bound moved from 3 to 7
        for r in second:
            assert r.value.n == 2
            assert r.value.sampling is not None and r.value.sampling.temperature == 0.25

        assert control(kafka, "feed", "max_ahead=9", "--unset", "sampling", "--unset", "n") == 0
        third = read_for(tap, 4.0)
        assert len(third) == 2
        assert all(r.value.sampling is None and r.value.n == 4 for r in third)
        assert control(kafka, "feed", "--unset", "max_ahead") == 0
        wait_until(
            lambda: metrics.registry.get_sample_value("rollstream_feed_max_ahead") == 3,
            20,
            "max_ahead back at 3",
        )
        assert read_for(tap, 1.0) == []
        applied = {"result": "applied"}
        assert metrics.registry.get_sample_value("rollstream_feed_control_updates_total", applied)
    finally:
        stop.set()
        thread.join(timeout=30)
        feed.close()
        tap.close()


def test_the_learner_follows_its_live_knobs_on_every_step(
    kafka: KafkaSettings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tiny_llama import random_llama

    from rollstream.services.learner.config import LearnerConfig
    from rollstream.services.learner.service import Learner
    from rollstream.services.learner.trainer import Trainer

    def publisher(model: object, version: int, step: int) -> WeightUpdate:
        raise AssertionError("nothing is trained here")

    sizes = dict(hidden_size=16, intermediate_size=32, num_attention_heads=2)
    model = random_llama(0, vocab_size=32, num_hidden_layers=1, num_key_value_heads=2, **sizes)
    cfg = LearnerConfig(lr=1e-3, publish_every=1, prefetch=2, feedback_every_s=0.2)
    metrics = StageMetrics("learner")
    svc = Learner(
        Trainer(cfg, model),
        kafka,
        tmp_path / "ckpt",
        publisher,
        "policy",
        metrics,
        control=follow_control(kafka, "learner"),
    )
    credits = Consumer(kafka, "test", ["learner.feedback"], group=None)
    lr = lambda: metrics.registry.get_sample_value("rollstream_learner_learning_rate")  # noqa: E731

    sent: list[int] = []

    def credits_total() -> int:  # the last credit total the learner sent
        sent.extend(r.value.credits_total for r in credits.poll(timeout_s=0.3))
        return sent[-1] if sent else -1

    try:
        svc.start()
        assert lr() == 1e-3 and svc.trainer.lr == 1e-3
        assert control(kafka, "learner", "lr=0.02", "prefetch=5", "publish_every=3") == 0
        capsys.readouterr()
        assert control(kafka, "learner", "lr=-1") == 2
        refused = capsys.readouterr().err  # one line naming the field, not pydantic's dump
        assert "learner: refused, nothing published: lr: Input should be greater than" in refused
        assert "errors.pydantic.dev" not in refused and len(refused.splitlines()) == 1
        assert control(kafka, "learner", "objective=ppo") == 2  # not live
        wait_until(lambda: svc.poll_once(0.1) >= 0 and lr() == 0.02, 20, "lr 0.02")
        assert svc.trainer.optimizer.param_groups[0]["lr"] == 0.02
        assert svc.trainer.cfg.publish_every == 3
        # 0 received + 5
        wait_until(lambda: svc.poll_once(0.1) >= 0 and credits_total() == 5, 20, "5 credits")

        assert control(kafka, "learner", "--unset", "lr", "--unset", "prefetch") == 0
        wait_until(lambda: svc.poll_once(0.1) >= 0 and lr() == 1e-3, 20, "lr back at 1e-3")
        assert svc.trainer.cfg.publish_every == 3 and svc.trainer.cfg.prefetch == 2
        wait_until(lambda: svc.poll_once(0.1) >= 0 and credits_total() == 2, 20, "2 credits")
    finally:
        svc.close()
        credits.close()


def test_replay_follows_its_live_knobs_and_refuses_a_bad_one(kafka: KafkaSettings) -> None:
    """A `control` revision for replay while it runs: batch_groups 2 makes the next batches
    carry 2 groups instead of 4; a revision with a bad value (sent raw: the CLI would not
    publish it) is refused and changes nothing."""
    from rollstream.schemas import ControlUpdate, Feedback
    from rollstream.schemas import synthetic as syn
    from rollstream.services.replay.config import ReplayConfig
    from rollstream.services.replay.service import Replay
    from rollstream.services.runtime.bus import Producer

    def group(gid: str) -> object:
        samples = [syn.scored(gid, i, [1, 2], [10 + i, 11], group_size=2) for i in range(2)]
        return syn.group(gid, samples, [1.0, -1.0])

    def batches() -> list:
        c = Consumer(kafka, "check", ["batches.train"], group=None)
        try:
            return [r.value for r in read_for(c, 1.0)]
        finally:
            c.close()

    p = Producer(kafka, "test")

    def send(topic: str, msg: object, key: str) -> None:
        p.send(topic, msg, key)
        p.flush()

    replay = Replay(ReplayConfig(batch_groups=4, partial_after_s=None, max_staleness=100), kafka)
    follower = follow_control(kafka, "replay")
    stop = threading.Event()
    worker = threading.Thread(target=replay.run, args=(stop.is_set, follower), daemon=True)
    worker.start()
    refused = replay.m.control.labels("refused")
    try:
        credit = Feedback(
            learner_id="learner",
            credits_total=10,
            learner_version=0,
            step=0,
            produced_at=time.time(),
        )
        send("learner.feedback", credit, "learner")
        for i in range(4):
            send("groups.kept", group(f"a{i}"), f"a{i}")
        wait_until(lambda: len(batches()) == 1, 20, "a first batch")
        bad = ControlUpdate(stage="replay", params={"batch_groups": 0}, revision=1, produced_at=0)
        send("control", bad, "replay")
        wait_until(lambda: refused._value.get() == 1, 20, "the bad revision to be refused")
        assert replay.buffer.cfg.batch_groups == 4
        good = ControlUpdate(stage="replay", params={"batch_groups": 2}, revision=2, produced_at=0)
        send("control", good, "replay")
        wait_until(lambda: replay.buffer.cfg.batch_groups == 2, 20, "batch_groups 2")
        for i in range(4):
            send("groups.kept", group(f"b{i}"), f"b{i}")
        wait_until(lambda: len(batches()) == 3, 20, "two more batches")
    finally:
        stop.set()
        worker.join(10)
        follower.stop()
        replay.close()
    assert [len(b.items) for b in batches()] == [4, 2, 2]


def test_control_checks_a_knob_against_the_runs_own_values(
    kafka: KafkaSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A value valid over the defaults but not over the run's config (replay refuses a batch
    smaller than its min_batch_groups) is refused by the command, so nothing reads a revision
    the stage will not apply (the generators pace by replay's batch_groups)."""
    run_file = tmp_path / "run.yaml"
    run_file.write_text("replay: {batch_groups: 16, min_batch_groups: 8}\n")
    monkeypatch.setenv("ROLLSTREAM_CONFIG", str(run_file))
    assert control(kafka, "replay", "batch_groups=4") == 2  # below the run's min_batch_groups
    assert control(kafka, "replay", "batch_groups=8") == 0
    monkeypatch.delenv("ROLLSTREAM_CONFIG")
    assert control(kafka, "replay", "batch_groups=4") == 0  # over the defaults it is valid
