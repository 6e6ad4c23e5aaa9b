"""Rebuilding the buffer after a restart: no group lost, none handed out twice."""

from __future__ import annotations

import msgspec

from rollstream.schemas import TrainBatch
from rollstream.services.replay.buffer import ReplayBuffer
from rollstream.services.replay.config import ReplayConfig


def as_batch(draft, seq: int) -> TrainBatch:
    return TrainBatch(
        batch_id=f"b{seq}",
        learner_id="L",
        seq=seq,
        items=draft.items,
        learner_version=0,
        produced_at=0.0,
    )


def summary(draft) -> list[tuple[str, int, float]]:
    return [(i.group.group_id, i.uses, round(i.weight, 9)) for i in draft.items]


def test_snapshot_restore_continues_exactly(make_group) -> None:
    cfg = ReplayConfig(policy="prioritized", capacity=16, max_uses=3, batch_groups=2, seed=7)
    groups = [make_group(f"g{i}", advantages=(0.1 * (i + 1), -0.1)) for i in range(6)]
    a = ReplayBuffer(cfg)
    for g in groups:
        a.add(g)
    for _ in range(3):
        a.build_batch()
    snap = msgspec.msgpack.decode(msgspec.msgpack.encode(a.snapshot()))  # plain data only
    b = ReplayBuffer(cfg)
    b.restore(snap)
    for g in groups:  # the service re-reads its input from the committed offset
        b.add(g)
    assert b.missing() == []
    assert len(b) == len(a)
    for _ in range(4):
        assert summary(b.build_batch()) == summary(a.build_batch())
    assert b.counters == a.counters


def test_restore_reports_groups_whose_bodies_did_not_come_back(make_group) -> None:
    cfg = ReplayConfig(policy="prioritized", capacity=8, max_uses=2)
    a = ReplayBuffer(cfg)
    a.add(make_group("x"))
    a.add(make_group("y"))
    b = ReplayBuffer(cfg)
    b.restore(a.snapshot())
    b.add(make_group("x"))
    assert b.missing() == ["y"]


def test_fifo_rebuilt_from_sent_batches_never_repeats_a_group(make_group) -> None:
    cfg = ReplayConfig(policy="fifo", capacity=16, batch_groups=2)
    groups = [make_group(f"g{i}") for i in range(6)]
    a = ReplayBuffer(cfg)
    for g in groups:
        a.add(g)
    sent = [as_batch(a.build_batch(), seq) for seq in (1, 2)]

    # output read before input, and input before output: both give the same state
    out_first = ReplayBuffer(cfg)
    for batch in sent + sent:  # a batch seen twice is applied once
        out_first.mark_emitted(batch)
    for g in groups:
        out_first.add(g)
    in_first = ReplayBuffer(cfg)
    for g in groups:
        in_first.add(g)
    for batch in sent:
        in_first.mark_emitted(batch)

    for rebuilt in (out_first, in_first):
        assert [i.group.group_id for i in rebuilt.build_batch().items] == ["g4", "g5"]
        assert rebuilt.build_batch().items == []


def test_reapplied_uses_count_toward_the_cap(make_group) -> None:
    cfg = ReplayConfig(policy="prioritized", capacity=8, max_uses=2, batch_groups=1)
    a = ReplayBuffer(cfg)
    a.add(make_group("only"))
    first = as_batch(a.build_batch(), 1)
    b = ReplayBuffer(cfg)
    b.add(make_group("only"))
    b.mark_emitted(first)
    assert b.uses("only") == 1
    (item,) = b.build_batch().items
    assert (item.uses, item.replayed) == (2, True)
    assert len(b) == 0  # reached the cap


def test_success_store_survives_a_snapshot(make_group) -> None:
    cfg = ReplayConfig(policy="fifo", capacity=8, success_replay=True, batch_groups=1)
    rewards = (1.0, 0.0, 0.0, 0.0)
    kw = dict(task_id="t1", rewards=rewards, advantages=(1.5, -0.5, -0.5, -0.5), pass_rate=0.25)
    a = ReplayBuffer(cfg)
    a.add(make_group("A", correct=(True, False, False, False), **kw))
    a.build_batch()
    b = ReplayBuffer(cfg)
    b.restore(msgspec.msgpack.decode(msgspec.msgpack.encode(a.snapshot())))
    b.add(make_group("A", correct=(True, False, False, False), **kw))  # consumed: ignored
    b.add(make_group("B", correct=(None,) * 4, **kw))
    (item,) = b.build_batch().items
    assert item.group.group_id == "B"
    assert item.group.samples[-1].rollout.rollout_id == "A/0"
