"""Replay and learner on the real broker: credits are respected, and killing either mid-run
loses nothing and trains nothing twice (in effect)."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import pytest

from rollstream.schemas import Feedback, Group, WeightUpdate
from rollstream.schemas import synthetic as syn
from rollstream.services.replay.config import ReplayConfig
from rollstream.services.replay.service import Replay
from rollstream.services.runtime.bus import Consumer, Producer
from rollstream.services.runtime.settings import KafkaSettings

pytestmark = pytest.mark.kafka


def group(gid: str, version: int = 0, n: int = 2) -> Group:
    samples = [
        syn.scored(
            gid,
            i,
            [1, 2],
            [10 + i, 11, 12],
            group_size=n,
            reward=float(i % 2),
            policy_version=version,
        )
        for i in range(n)
    ]
    advantages = [1.0 if i % 2 else -1.0 for i in range(n)]
    return syn.group(gid, samples, advantages, policy_version=version)


def read_all(kafka: KafkaSettings, topic: str, polls: int = 8) -> list:
    c = Consumer(kafka, "check", [topic], group=None)
    out: list = []
    try:
        for _ in range(polls):
            out += [r.value for r in c.poll(1000, 0.5)]
    finally:
        c.close()
    return out


def grant(p: Producer, credits: int, version: int = 0) -> None:
    fb = Feedback(
        learner_id="learner",
        credits_total=credits,
        learner_version=version,
        step=0,
        produced_at=time.time(),
    )
    p.send("learner.feedback", fb, "learner")
    p.flush()


def pump(replay: Replay, seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        replay.poll_once(0.1)
        while replay.maybe_send() is not None:
            pass


@pytest.mark.parametrize("policy", ["fifo", "prioritized"])
def test_replay_killed_mid_run_loses_and_repeats_nothing(kafka: KafkaSettings, policy) -> None:
    p = Producer(kafka, "test")
    for i in range(40):
        p.send("groups.kept", group(f"g{i:02d}", version=0 if i < 5 else 3), f"g{i:02d}")
    p.flush()
    uses_cap = 2 if policy == "prioritized" else 1
    cfg = ReplayConfig(
        policy=policy, batch_groups=3, max_uses=uses_cap, max_staleness=2, partial_after_s=0.5
    )
    first = Replay(cfg, kafka)
    first.rebuild()
    pump(first, 3)
    assert read_all(kafka, "batches.train") == []  # no credit, no batch
    grant(p, 4, version=3)  # the 5 groups of version 0 are now too stale
    pump(first, 3)
    assert [b.seq for b in read_all(kafka, "batches.train")] == [1, 2, 3, 4]
    # killed: no close. A new process rebuilds from the topics.
    second = Replay(cfg, kafka)
    second.rebuild()
    assert second.credits.sent == 4
    pump(second, 2)
    assert len(read_all(kafka, "batches.train")) == 4  # still no new credit
    grant(p, 100, version=3)
    pump(second, 4)
    second.close()
    batches = read_all(kafka, "batches.train")
    assert [b.seq for b in batches] == list(range(1, len(batches) + 1))
    uses: dict[str, list[int]] = {}
    for b in batches:
        for item in b.items:
            uses.setdefault(item.group.group_id, []).append(item.uses)
    assert sorted(uses) == [f"g{i:02d}" for i in range(5, 40)]
    assert all(u == list(range(1, uses_cap + 1)) for u in uses.values())
    drops = read_all(kafka, "groups.dropped")
    assert {d.group_id for d in drops} == {f"g{i:02d}" for i in range(5)}
    assert {d.reason for d in drops} == {"expired"}


def test_replay_waits_for_a_full_batch_unless_the_oldest_group_waited_too_long(
    kafka: KafkaSettings,
) -> None:
    """A learner with credits gets full batches: 2 groups of a 4-group batch stay put, three
    more make one batch of 4; the fifth goes out alone after `partial_after_s`."""
    p = Producer(kafka, "test")
    replay = Replay(ReplayConfig(batch_groups=4, partial_after_s=3.0, max_staleness=100), kafka)
    replay.rebuild()
    grant(p, 10)
    for i in range(2):
        p.send("groups.kept", group(f"a{i}"), f"a{i}")
    p.flush()
    pump(replay, 1.5)
    assert read_all(kafka, "batches.train", polls=2) == []  # credits, but half a batch
    for i in range(2, 5):
        p.send("groups.kept", group(f"a{i}"), f"a{i}")
    p.flush()
    pump(replay, 1.0)
    sent = [{it.group.group_id for it in b.items} for b in read_all(kafka, "batches.train", 2)]
    assert len(sent) == 1 and len(sent[0]) == 4 and {"a0", "a1"} <= sent[0]
    pump(replay, 3.5)  # the fifth group has now waited longer than partial_after_s
    sent = [{it.group.group_id for it in b.items} for b in read_all(kafka, "batches.train", 2)]
    assert len(sent) == 2 and sent[0] | sent[1] == {f"a{i}" for i in range(5)}
    replay.close()


def test_eager_replay_hands_out_what_is_there_once_min_batch_groups_have_come(
    kafka: KafkaSettings,
) -> None:
    """min_batch_groups 2 of a batch of 4: with a credit, one group waits, a second makes a
    batch of two at once (no `partial_after_s` wait), and a batch never exceeds 4 groups."""
    p = Producer(kafka, "test")
    cfg = ReplayConfig(batch_groups=4, min_batch_groups=2, partial_after_s=None, max_staleness=100)
    replay = Replay(cfg, kafka)
    replay.rebuild()
    grant(p, 1)
    p.send("groups.kept", group("a0"), "a0")
    p.flush()
    pump(replay, 1.0)
    assert read_all(kafka, "batches.train", polls=2) == []  # one group, below the least
    p.send("groups.kept", group("a1"), "a1")
    p.flush()
    pump(replay, 1.0)
    sent = [{it.group.group_id for it in b.items} for b in read_all(kafka, "batches.train", 2)]
    assert sent == [{"a0", "a1"}]
    for i in range(2, 8):
        p.send("groups.kept", group(f"a{i}"), f"a{i}")
    p.flush()
    pump(replay, 1.0)  # no credit: the six wait
    grant(p, 3)
    pump(replay, 1.5)
    sizes = [len(b.items) for b in read_all(kafka, "batches.train", 2)]
    assert sizes == [2, 4, 2]
    replay.close()
    with pytest.raises(ValueError, match="min_batch_groups"):
        ReplayConfig(batch_groups=4, min_batch_groups=5)


def tiny_model():
    from tiny_llama import random_llama

    sizes = dict(hidden_size=16, intermediate_size=32, num_attention_heads=2)
    return random_llama(0, vocab_size=32, num_hidden_layers=1, num_key_value_heads=2, **sizes)


def train_until(learner, replay: Replay, step: int, timeout_s: float = 60.0) -> None:
    """Replay and the learner take turns until the learner's step reaches `step` (or time is
    up: the caller asserts the step)."""
    deadline = time.monotonic() + timeout_s
    while learner.trainer.step < step and time.monotonic() < deadline:
        replay.poll_once(0.05)
        replay.maybe_send()
        learner.poll_once(0.2)


def test_learner_asks_for_the_next_batch_before_it_trains_this_one(
    kafka: KafkaSettings, tmp_path
) -> None:
    """prefetch 1 = one batch on its way while one trains: the credit for batch 2 is on
    learner.feedback before batch 1's step ends (sent after the step, the learner waited a
    whole round trip through replay every step)."""
    from rollstream.services.learner.config import LearnerConfig
    from rollstream.services.learner.service import Learner
    from rollstream.services.learner.trainer import Trainer

    p = Producer(kafka, "test")
    for i in range(4):
        p.send("groups.kept", group(f"g{i}", n=4), f"g{i}")
    p.flush()
    replay = Replay(ReplayConfig(batch_groups=2, max_staleness=100), kafka)
    replay.rebuild()
    cfg = LearnerConfig(lr=1e-3, token_budget=64, prefetch=1, publish_every=100)
    learner = Learner(Trainer(cfg, tiny_model()), kafka, tmp_path / "ckpt", None, "policy")
    seen_at_step: list[list[Feedback]] = []
    apply = learner.trainer.apply

    def spy(batch):  # what replay could see when the learner starts this step
        seen_at_step.append(read_all(kafka, "learner.feedback", polls=3))
        return apply(batch)

    learner.trainer.apply = spy  # type: ignore[method-assign]
    learner.start()
    train_until(learner, replay, 1)
    learner.consumer.close()
    replay.close()
    assert learner.trainer.step == 1
    assert max(f.credits_total for f in seen_at_step[0]) == 2


def folder_publisher(root: Path):
    """publisher(model, version, step): the weights as safetensors in root/weights/v<version>."""
    from safetensors.torch import save_model

    def publisher(model, version: int, step: int) -> WeightUpdate:
        d = Path(root) / "weights" / f"v{version}"
        if d.exists():
            raise AssertionError(f"version {version} published twice")
        d.mkdir(parents=True)
        save_model(model, str(d / "model.safetensors"))
        data = (d / "model.safetensors").read_bytes()
        return WeightUpdate(
            policy="policy",
            version=version,
            uri=d.as_uri(),
            sha256=hashlib.sha256(data).hexdigest(),
            size_bytes=len(data),
            step=step,
            produced_at=time.time(),
        )

    return publisher


def kept_groups_and_replay(kafka: KafkaSettings, groups: int) -> Replay:
    p = Producer(kafka, "test")
    for i in range(groups):
        p.send("groups.kept", group(f"g{i:02d}", n=4), f"g{i:02d}")
    p.flush()
    replay = Replay(ReplayConfig(policy="fifo", batch_groups=2, max_staleness=100), kafka)
    replay.rebuild()
    return replay


def test_learner_killed_mid_run_trains_every_batch_once(kafka: KafkaSettings, tmp_path) -> None:
    from rollstream.services.learner.config import LearnerConfig
    from rollstream.services.learner.service import Learner
    from rollstream.services.learner.trainer import Trainer

    publisher = folder_publisher(tmp_path)
    replay = kept_groups_and_replay(kafka, 24)
    cfg = LearnerConfig(lr=1e-3, token_budget=64, publish_every=2, checkpoint_every_s=0)
    ckpt = tmp_path / "ckpt"
    first = Learner(Trainer(cfg, tiny_model()), kafka, ckpt, publisher, "policy")
    first.start()
    train_until(first, replay, 5)
    assert (first.trainer.step, first.checkpointed_step) == (5, 4)
    # killed after step 5 (its checkpoint is at step 4): it leaves the group, commits nothing
    first.producer.flush()
    first.consumer.close()
    announced = read_all(kafka, "weights")
    second = Learner(Trainer(cfg, tiny_model()), kafka, ckpt, publisher, "policy")
    second.start(announced[-1])
    assert second.trainer.step == 4
    train_until(second, replay, 12)
    second.close()
    replay.close()
    sent = [b.batch_id for b in read_all(kafka, "batches.train")]
    assert len(sent) == len(set(sent)) == 12
    reported = [b for f in read_all(kafka, "learner.feedback") for b in f.trained_batches]
    assert set(reported) == set(sent)  # none skipped
    assert second.trainer.step == 12  # batch 5, rolled back, was trained once more: 12 in all
    versions = [w.version for w in read_all(kafka, "weights")]
    assert versions == list(range(1, 7))  # one version every 2 steps, none announced twice


def test_a_learner_killed_between_checkpoints_numbers_versions_on_from_the_last_announced(
    kafka: KafkaSettings, tmp_path
) -> None:
    """Checkpoints every `checkpoint_every_s`, not every version: a learner killed after
    versions 3-5 were announced resumes at its checkpoint (step 2), trains steps 3-5 again and
    announces 6, 7, ...: no version twice, every batch reported, the idle learner checkpoints
    what it trained once one is due."""
    from rollstream.services.learner.config import LearnerConfig
    from rollstream.services.learner.service import Learner
    from rollstream.services.learner.trainer import Trainer

    publisher = folder_publisher(tmp_path)  # refuses a version folder written twice
    replay = kept_groups_and_replay(kafka, 16)
    cfg = LearnerConfig(lr=1e-3, token_budget=64, checkpoint_every_s=3600)
    ckpt = tmp_path / "ckpt"
    first = Learner(Trainer(cfg, tiny_model()), kafka, ckpt, publisher, "policy")
    first.start()
    train_until(first, replay, 2)
    assert first.checkpointed_step == 0  # not due: an hour
    first.checkpoint()
    train_until(first, replay, 5)
    assert (first.trainer.step, first.checkpointed_step) == (5, 2)
    first.producer.flush()
    first.consumer.close()  # killed: versions 1-5 announced, the checkpoint at step 2
    announced = read_all(kafka, "weights")
    assert [w.version for w in announced] == [1, 2, 3, 4, 5]
    second = Learner(Trainer(cfg, tiny_model()), kafka, ckpt, publisher, "policy")
    second.start(announced[-1])
    assert (second.trainer.step, second.trainer.version) == (2, 5)
    train_until(second, replay, 8)
    assert second.checkpointed_step == 2
    second.checkpointed_at -= 3600  # an hour later, with nothing left to train
    second.poll_once(0.2)
    assert second.checkpointed_step == 8
    second.close()
    replay.close()
    sent = [b.batch_id for b in read_all(kafka, "batches.train")]
    assert len(sent) == len(set(sent)) == 8
    reported = [b for f in read_all(kafka, "learner.feedback") for b in f.trained_batches]
    assert set(reported) == set(sent)
    versions = [w.version for w in read_all(kafka, "weights")]
    assert versions == list(range(1, 12))  # 5 before the kill, then steps 3-8 as 6-11


def test_checkpoints_take_at_most_a_tenth_of_the_learner_time(kafka: KafkaSettings, tmp_path):
    from rollstream.services.learner.config import LearnerConfig
    from rollstream.services.learner.service import Learner
    from rollstream.services.learner.trainer import Trainer

    cfg = LearnerConfig(checkpoint_every_s=1.0)
    learner = Learner(Trainer(cfg, tiny_model()), kafka, tmp_path / "ckpt", None, "policy")
    now = time.monotonic()
    learner.checkpointed_at, learner.checkpoint_s = now - 1.5, 0.1
    assert learner.checkpoint_due()  # 1 s passed, more than 9 x 0.1 s
    learner.checkpointed_at, learner.checkpoint_s = now - 1.5, 0.5
    assert not learner.checkpoint_due()  # a 0.5 s checkpoint waits 4.5 s
    learner.checkpointed_at = now - 4.6
    assert learner.checkpoint_due()
    learner.trainer.cfg = LearnerConfig(checkpoint_every_s=0)
    learner.checkpointed_at = now
    assert learner.checkpoint_due()  # 0: at every version
    learner.consumer.close()
