"""The learner killed mid-run and resumed: no batch trained twice, none skipped."""

from __future__ import annotations

import msgspec
import pytest
import torch

from rollstream.services.learner.config import LearnerConfig
from rollstream.services.learner.trainer import Trainer, lr_lambda


def batches(make_batch, n: int):
    out = []
    for i in range(1, n + 1):
        b = make_batch(
            [
                (
                    f"g{i}",
                    [([1, 2], [3 + i, 5, 6], None), ([1, 2], [7, 8 + i], None)],
                    [1.0, -1.0],
                    1.0,
                )
            ]
        )
        out.append(msgspec.structs.replace(b, batch_id=f"learner-{i}", seq=i, learner_id="learner"))
    return out


def cfg(**kw) -> LearnerConfig:
    return LearnerConfig(lr=1e-2, token_budget=None, **kw)


def test_resume_trains_each_batch_exactly_once(make_batch, make_model, tmp_path) -> None:
    data = batches(make_batch, 5)
    never_stopped = Trainer(cfg(), make_model())
    for b in data:
        assert never_stopped.train(b) is not None

    first = Trainer(cfg(), make_model())
    for b in data[:3]:
        first.train(b)
    first.offsets = {"batches.train:0": 3}
    first.save(tmp_path)
    first.train(data[3])  # trained, then the process dies before the next checkpoint

    second = Trainer(cfg(), make_model())
    assert second.resume(tmp_path)
    assert (second.step, second.seq, second.offsets) == (3, 3, {"batches.train:0": 3})
    done = [second.train(b) for b in data]  # re-read from the start: the first 3 are skipped
    assert [r is None for r in done] == [True, True, True, False, False]
    assert second.step == 5
    for p, q in zip(never_stopped.model.parameters(), second.model.parameters(), strict=True):
        assert torch.equal(p, q)


def test_feedback_grants_prefetch_beyond_the_newest_batch(make_batch, make_model) -> None:
    t = Trainer(cfg(prefetch=2), make_model())
    assert t.feedback().credits_total == 2  # before any batch: ask for two
    data = batches(make_batch, 2)
    res = t.train(data[1])  # seq 2 arrives
    fb = t.feedback(res)
    assert fb.credits_total == 4
    assert (fb.trained_batches, fb.trained_groups, fb.trained_rollouts) == (
        ["learner-2"],
        ["g2"],
        2,
    )
    assert set(fb.priorities) == {"g2"}
    other = msgspec.structs.replace(data[0], learner_id="someone-else", seq=9)
    assert t.train(other) is None and t.seq == 2


def test_lr_schedules_by_hand() -> None:
    warm = lr_lambda(LearnerConfig(warmup_steps=4), None)
    assert [warm(s) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    lin = lr_lambda(LearnerConfig(schedule="linear"), 4)
    assert [lin(s) for s in range(5)] == [1.0, 0.75, 0.5, 0.25, 0.0]
    cos = lr_lambda(LearnerConfig(schedule="cosine"), 2)
    assert [cos(s) for s in range(3)] == pytest.approx([1.0, 0.5, 0.0])


def test_a_row_that_cannot_be_trained_is_left_out_and_named(make_batch, make_model) -> None:
    """issue 16 D3: a token id outside the vocabulary crashed the step (and every restart
    crash-looped on the same batch); now that item is rejected and the rest trains."""
    t = Trainer(cfg(), make_model())
    good = ("ok", [([1, 2], [3, 4], None), ([1, 2], [5], None)], [1.0, -1.0], 1.0)
    bad = ("forged", [([1, 2], [3, 10_000], None), ([1, 2], [5], None)], [1.0, -1.0], 1.0)
    batch = msgspec.structs.replace(make_batch([good, bad]), learner_id="learner")
    result = t.train(batch)
    assert result is not None and result.groups == ["ok"]
    assert [g for g, _ in t.rejected] == ["forged"]
    assert "outside the vocabulary" in t.rejected[0][1]
    only_bad = msgspec.structs.replace(make_batch([bad]), learner_id="learner", batch_id="b2")
    assert t.train(only_bad) is None and t.step == 1


def test_a_batch_smaller_than_lr_batch_groups_takes_a_proportionally_small_step(
    make_batch, make_model
) -> None:
    """lr_batch_groups 4: a batch of one group steps at lr / 4 (AdamW's first step moves each
    weight by about lr, so the whole update is a quarter as long); the lr of the step after
    it, and of the schedule, is the configured one."""
    batch = batches(make_batch, 1)[0]
    moved = []
    for ref in (None, 4):
        t = Trainer(cfg(lr_batch_groups=ref, max_grad_norm=None), make_model())
        before = [p.detach().clone() for p in t.model.parameters()]
        res = t.train(batch)
        assert res is not None
        delta = [
            (p.detach() - b).flatten() for p, b in zip(t.model.parameters(), before, strict=True)
        ]
        moved.append(torch.cat(delta).norm().item())
        assert t.lr == pytest.approx(1e-2)
        assert res.metrics.get("lr_scale", 1.0) == (1.0 if ref is None else 0.25)
    assert moved[1] / moved[0] == pytest.approx(0.25, rel=0.02)


def test_auto_prompt_sharing_keeps_the_way_that_was_faster_a_token() -> None:
    """`learner.share_prompts: auto`: steps alternate by parity, the first of each way is not
    timed, and after 8 steps the lower median per token is kept."""
    from rollstream.services.learner.trainer import PromptSharing

    s = PromptSharing()
    ways = []
    for step, (on_s, off_s) in enumerate([(9.0, 0.1)] + [(2.0, 3.0)] * 3 + [(5.0, 5.0)]):
        share = s.next(step * 2)
        ways.append(share)
        s.took(share, on_s, 100)
        s.took(s.next(step * 2 + 1), off_s, 100)
        if s.chosen is not None:
            break
    assert ways[:2] == [True, True] and s.steps == 8
    assert s.chosen is True  # 2 s against 3 s; the untimed first steps (9 s, 0.1 s) ignored
    assert s.next(1) is True


def test_auto_prompt_sharing_is_chosen_once_checkpointed_and_off_where_fixed(
    make_batch, make_model, tmp_path
) -> None:
    data = batches(make_batch, 9)
    t = Trainer(cfg(), make_model())
    assert t.sharing is not None
    for b in data[:8]:
        t.train(b)
    assert t.sharing.chosen is not None
    t.save(tmp_path)
    resumed = Trainer(cfg(), make_model())
    assert resumed.resume(tmp_path) and resumed.sharing.chosen == t.sharing.chosen
    resumed.train(data[8])
    assert resumed.step_cfg.share_prompts == t.sharing.chosen
    for fixed in (cfg(share_prompts=False), cfg(deterministic=True), cfg(share_prompts=True)):
        trainer = Trainer(fixed, make_model())
        assert trainer.sharing is None
        assert trainer.step_cfg.share_prompts is (fixed.share_prompts is not False)
