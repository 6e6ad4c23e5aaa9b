"""Success replay: verified successes of hard prompts are mixed into later groups."""

from __future__ import annotations

import math

import pytest

from rollstream.services.replay.buffer import ReplayBuffer
from rollstream.services.replay.config import ReplayConfig
from rollstream.services.replay.success import recompute_advantages


def buffer(**kw) -> ReplayBuffer:
    kw.setdefault("capacity", 64)
    return ReplayBuffer(ReplayConfig(policy="fifo", success_replay=True, batch_groups=1, **kw))


def hard(make_group, gid, *, version=0, correct=(True, False, False, False), pass_rate=0.25):
    rewards = tuple(1.0 if c else 0.0 for c in correct)
    return make_group(
        gid,
        task_id="t1",
        version=version,
        advantages=(1.5, -0.5, -0.5, -0.5),
        rewards=rewards,
        correct=correct,
        pass_rate=pass_rate,
    )


def test_recompute_advantages_by_hand() -> None:
    # rewards 1, 0, 0, 1: mean 0.5, sample std sqrt(4 * 0.25 / 3) = 0.57735
    got = recompute_advantages([1.0, 0.0, 0.0, 1.0], "grpo")
    assert got == pytest.approx([0.5 / math.sqrt(1 / 3)] * 1 + [-0.866025] * 2 + [0.866025], 1e-5)
    assert recompute_advantages([1.0, 0.0, 0.0], "dr_grpo") == pytest.approx(
        [2 / 3, -1 / 3, -1 / 3]
    )
    # rloo: 1 - mean(0, 0) = 1; 0 - mean(1, 0) = -0.5
    assert recompute_advantages([1.0, 0.0, 0.0], "rloo") == pytest.approx([1.0, -0.5, -0.5])
    assert recompute_advantages([1.0, 0.0], "mystery") is None


def test_success_of_a_hard_prompt_joins_its_next_group(make_group) -> None:
    buf = buffer(max_staleness=4)
    buf.add(hard(make_group, "A", version=0))
    assert not buf.build_batch().items[0].replayed  # nothing stored before A
    buf.add(hard(make_group, "B", version=2, correct=(False, True, False, False)))
    (item,) = buf.build_batch().items
    g = item.group
    assert item.replayed
    assert [s.rollout.rollout_id for s in g.samples][-1] == "A/0"  # A's verified success
    assert len(g.samples) == 5 and g.stats.kept == 5
    assert g.policy_version == 0  # the oldest sample's version
    # rewards 0,1,0,0 + 1: mean 0.4, sample std sqrt((3*.16 + 2*.36)/4) = sqrt(0.3)
    std = math.sqrt(0.3) + 1e-6  # the estimator adds 1e-6
    assert g.advantages == pytest.approx([-0.4 / std, 0.6 / std, -0.4 / std, -0.4 / std, 0.6 / std])


def test_unverified_and_truncated_samples_are_not_stored(make_group) -> None:
    buf = buffer()
    buf.add(hard(make_group, "A", correct=(None, None, None, None)))
    buf.add(hard(make_group, "B"))
    buf.build_batch()
    (item,) = buf.build_batch().items
    assert item.group.group_id == "B" and len(item.group.samples) == 4  # nothing from A


def test_easy_group_retires_the_prompt(make_group) -> None:
    buf = buffer()
    buf.add(hard(make_group, "A"))
    buf.add(hard(make_group, "easy", correct=(True, True, True, False), pass_rate=0.75))
    buf.add(hard(make_group, "C"))  # nothing stored to mix: A's success left with "easy"
    buf.add(hard(make_group, "D"))  # gets C's success
    sizes = [len(buf.build_batch().items[0].group.samples) for _ in range(4)]
    assert sizes == [4, 4, 4, 5]
    assert buf.stats()["success_retired"] == 1


def test_stale_success_is_dropped_not_mixed(make_group) -> None:
    buf = buffer(max_staleness=2)
    buf.add(hard(make_group, "A", version=0))
    buf.build_batch()
    buf.set_learner_version(3)
    buf.add(hard(make_group, "B", version=3, correct=(None, None, None, None)))
    (item,) = buf.build_batch().items
    assert len(item.group.samples) == 4 and not item.replayed
    assert buf.stats()["success_expired"] == 1


def test_keeps_the_least_surprising_success(make_group) -> None:
    buf = buffer()
    buf.add(
        make_group(
            "A",
            task_id="t1",
            advantages=(1.0, 1.0, -1.0),
            correct=(True, True, False),
            pass_rate=0.34,
            logprobs=(-2.0, -0.5, -1.0),
        )
    )
    assert [s.rollout.rollout_id for s in buf.success.get("t1")] == ["A/1"]  # mean logp -0.5
