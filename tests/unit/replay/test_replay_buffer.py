"""Replay buffer: FIFO order, staleness gate, reuse cap, eviction, priorities, IS weights."""

from __future__ import annotations

import numpy as np
import pytest

from rollstream.services.replay.buffer import ReplayBuffer
from rollstream.services.replay.config import ReplayConfig


def ids(draft) -> list[str]:
    return [item.group.group_id for item in draft.items]


def fifo(**kw) -> ReplayBuffer:
    return ReplayBuffer(ReplayConfig(policy="fifo", **kw))


def prioritized(**kw) -> ReplayBuffer:
    kw.setdefault("max_staleness", 100)
    kw.setdefault("capacity", 64)
    return ReplayBuffer(ReplayConfig(policy="prioritized", **kw))


def test_fifo_hands_each_group_once_in_arrival_order(make_group) -> None:
    buf = fifo(batch_groups=2)
    for i in range(5):
        assert buf.add(make_group(f"g{i}")).added
    assert ids(buf.build_batch()) == ["g0", "g1"]
    assert not buf.add(make_group("g1")).added  # re-delivered after it was sent: ignored
    assert ids(buf.build_batch()) == ["g2", "g3"]
    assert ids(buf.build_batch()) == ["g4"]
    assert ids(buf.build_batch()) == []
    assert buf.counters["duplicate"] == 1
    assert buf.counters["consumed"] == 5


def test_fifo_items_carry_weight_one_and_first_use(make_group) -> None:
    buf = fifo(batch_groups=4)
    buf.add(make_group("a"))
    (item,) = buf.build_batch().items
    assert (item.weight, item.uses, item.replayed) == (1.0, 1, False)


def test_fifo_forces_a_single_use() -> None:
    assert ReplayConfig(policy="fifo", max_uses=3).max_uses == 1


def test_token_budget_stops_before_the_group_that_does_not_fit(make_group) -> None:
    # each group: 2 samples x (2 prompt + 3 completion tokens) = 10 tokens
    buf = fifo(batch_tokens=25)
    for i in range(3):
        buf.add(make_group(f"g{i}"))
    buf.add(make_group("big", completion_len=48))  # 2 x 50 = 100 tokens, over the budget
    buf.add(make_group("g4"))
    assert ids(buf.build_batch()) == ["g0", "g1"]
    assert ids(buf.build_batch()) == ["g2"]  # 10 + 100 > 25
    assert ids(buf.build_batch()) == ["big"]  # too big for any batch: sent alone
    assert ids(buf.build_batch()) == ["g4"]


def test_staleness_gate_expires_and_reports(make_group) -> None:
    buf = fifo(batch_groups=10, max_staleness=2)
    for name, v in [("v0", 0), ("v1", 1), ("v3", 3)]:
        buf.add(make_group(name, version=v))
    expired = buf.set_learner_version(4)  # 4 - 0 > 2 and 4 - 1 > 2: both too old
    assert sorted(r.group.group_id for r in expired) == ["v0", "v1"]
    assert all(r.reason == "expired" and r.uses == 0 for r in expired)
    draft = buf.build_batch()
    assert ids(draft) == ["v3"]
    assert all(4 - item.group.policy_version <= 2 for item in draft.items)
    late = buf.add(make_group("late", version=1))  # arrives already too old
    assert not late.added
    assert [(r.group.group_id, r.reason) for r in late.removed] == [("late", "expired")]
    assert buf.counters["expired_unused"] == 3


def test_version_never_goes_back(make_group) -> None:
    buf = fifo(max_staleness=0)
    buf.set_learner_version(5)
    buf.set_learner_version(2)
    assert buf.learner_version == 5
    assert not buf.add(make_group("old", version=4)).added


def test_group_expiring_after_use_is_reported_with_its_uses(make_group) -> None:
    buf = prioritized(max_uses=3, batch_groups=1, max_staleness=1)
    buf.add(make_group("a", version=0))
    buf.build_batch()
    (gone,) = buf.set_learner_version(2)
    assert (gone.group.group_id, gone.uses) == ("a", 1)
    assert buf.counters["expired_used"] == 1


def test_reuse_cap_is_respected(make_group) -> None:
    buf = prioritized(max_uses=2, batch_groups=3)
    for name in "abc":
        buf.add(make_group(name))
    first, second = buf.build_batch(), buf.build_batch()
    assert sorted(ids(first)) == sorted(ids(second)) == ["a", "b", "c"]
    assert {i.uses for i in first.items} == {1} and {i.uses for i in second.items} == {2}
    assert not any(i.replayed for i in first.items) and all(i.replayed for i in second.items)
    assert len(buf) == 0
    assert ids(buf.build_batch()) == []
    assert buf.uses_hist == {1: 3, 2: 3}


def test_no_group_twice_in_one_batch(make_group) -> None:
    buf = prioritized(max_uses=100, batch_groups=5)
    buf.add(make_group("heavy", advantages=(50.0, -50.0)))
    for i in range(4):
        buf.add(make_group(f"g{i}", advantages=(0.01, -0.01)))
    for _ in range(10):
        got = ids(buf.build_batch())
        assert sorted(got) == ["g0", "g1", "g2", "g3", "heavy"]


def test_evicts_oldest_at_capacity(make_group) -> None:
    buf = fifo(capacity=2)
    buf.add(make_group("g0"))
    buf.add(make_group("g1"))
    res = buf.add(make_group("g2"))
    assert res.added and [(r.group.group_id, r.reason, r.uses) for r in res.removed] == [
        ("g0", "evicted", 0)
    ]
    assert not buf.add(make_group("g0")).added  # an evicted id stays known


def test_evicts_lowest_priority_at_capacity(make_group) -> None:
    buf = prioritized(capacity=3, eviction="lowest_priority")
    buf.add(make_group("hi", advantages=(1.0, -1.0)))
    buf.add(make_group("lo", advantages=(0.1, -0.1)))
    buf.add(make_group("mid", advantages=(0.5, -0.5)))
    res = buf.add(make_group("new", advantages=(0.3, -0.3)))
    assert [r.group.group_id for r in res.removed] == ["lo"]


def test_prioritized_draws_in_proportion_and_weights_undo_it(make_group) -> None:
    # priorities (mean |A|) 0.1, 0.2, 0.3, 0.4; alpha 1; one group per batch
    buf = prioritized(max_uses=10**6, batch_groups=1, beta=1.0, priority_eps=1e-9)
    for i, p in enumerate([0.1, 0.2, 0.3, 0.4]):
        buf.add(make_group(f"g{i}", advantages=(p, -p)))
    counts = dict.fromkeys(["g0", "g1", "g2", "g3"], 0)
    weights = {}
    for _ in range(8000):
        (item,) = buf.build_batch().items
        counts[item.group.group_id] += 1
        weights[item.group.group_id] = item.weight
    observed = np.array(list(counts.values()))
    expected = 8000 * np.array([0.1, 0.2, 0.3, 0.4])
    assert ((observed - expected) ** 2 / expected).sum() < 16.266  # chi2, 3 df, p = 0.001
    # beta = 1: w = (N P)^-1 / max w = p_min / p
    for name, p in zip(["g0", "g1", "g2", "g3"], [0.1, 0.2, 0.3, 0.4], strict=True):
        assert weights[name] == pytest.approx(0.1 / p, rel=1e-6)


def test_learnability_priority_prefers_pass_rate_near_half(make_group) -> None:
    buf = prioritized(priority="learnability", max_uses=10**6, batch_groups=1, beta=0.0)
    buf.add(make_group("half", pass_rate=0.5))  # p(1-p) = 0.25
    buf.add(make_group("easy", pass_rate=0.9))  # 0.09 (+ eps 0.001 each)
    got = [ids(buf.build_batch())[0] for _ in range(3000)]
    share = got.count("half") / len(got)
    assert share == pytest.approx(0.251 / (0.251 + 0.091), abs=0.03)
    assert all(i.weight == 1.0 for i in buf.build_batch().items)  # beta 0: no correction


def test_feedback_priorities_steer_sampling(make_group) -> None:
    buf = prioritized(priority="feedback", max_uses=10**6, batch_groups=1)
    for name in "abc":
        buf.add(make_group(name))
    assert buf.update_priorities({"b": 100.0, "a": 0.0, "c": 0.0, "gone": 5.0}) == 3
    got = [ids(buf.build_batch())[0] for _ in range(200)]
    assert got.count("b") > 190
    # a new group starts at the largest priority seen, so it is drawn soon
    buf.add(make_group("new"))
    assert buf.snapshot()["live"][-1]["priority"] == 100.0


def test_fresh_fraction_mixes_fresh_and_replayed(make_group) -> None:
    buf = prioritized(max_uses=5, batch_groups=4, fresh_fraction=0.5)
    for i in range(8):
        buf.add(make_group(f"g{i}"))
    first = buf.build_batch()
    assert [i.replayed for i in first.items] == [False] * 4  # nothing used yet: all fresh
    second = buf.build_batch()
    assert sum(i.replayed for i in second.items) == 2
    assert sum(not i.replayed for i in second.items) == 2
    replayed = {i.group.group_id for i in second.items if i.replayed}
    assert replayed <= set(ids(first))


def test_stats_report_occupancy(make_group) -> None:
    buf = prioritized(max_uses=2, batch_groups=1, capacity=10)
    buf.add(make_group("a"))
    buf.add(make_group("b"))
    buf.build_batch()
    s = buf.stats()
    assert (s["size"], s["used"], s["fresh"], s["capacity"]) == (2, 1, 1, 10)


def test_prioritized_token_budget_takes_what_fits(make_group) -> None:
    buf = prioritized(batch_tokens=25, max_uses=1)  # 10 tokens a group: 2 fit
    for i in range(5):
        buf.add(make_group(f"g{i}"))
    sizes = [len(buf.build_batch().items) for _ in range(4)]
    assert sizes == [2, 2, 1, 0]
    assert buf.counters["consumed"] == 5
