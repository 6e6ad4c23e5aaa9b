"""Checkpoints: a resumed learner continues exactly as if it had never stopped."""

from __future__ import annotations

import torch

from rollstream.services.learner import checkpoint


def make(make_model):
    model = make_model()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 / (1 + s))
    return model, opt, sched


def train(model, opt, sched, steps: int, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        ids = torch.randint(0, 24, (2, 6), generator=g)
        opt.zero_grad()
        model(input_ids=ids, labels=ids).loss.backward()
        opt.step()
        sched.step()


def test_resume_gives_the_same_weights_as_never_stopping(make_model, tmp_path) -> None:
    ref = make(make_model)
    train(*ref, steps=3, seed=1)
    train(*ref, steps=2, seed=2)

    a = make(make_model)
    train(*a, steps=3, seed=1)
    info = {"version": 4, "seq": 7, "trained": ["learner-1", "learner-2"]}
    checkpoint.save(tmp_path, 3, a[0], a[1], info, a[2], keep=2)

    b = make(make_model)  # a fresh process: same architecture, different state
    train(*b, steps=1, seed=9)
    path = checkpoint.latest(tmp_path)
    got = checkpoint.load(path, b[0], b[1], b[2])
    assert got == {**info, "step": 3}
    train(*b, steps=2, seed=2)
    for p, q in zip(ref[0].parameters(), b[0].parameters(), strict=True):
        assert torch.equal(p, q)
    assert b[2].last_epoch == ref[2].last_epoch == 5


def test_keeps_only_the_newest_and_latest_points_at_a_complete_one(make_model, tmp_path) -> None:
    model, opt, sched = make(make_model)
    for step in (1, 2, 3):
        checkpoint.save(tmp_path, step, model, opt, {}, sched, keep=2)
    assert sorted(p.name for p in tmp_path.glob("step-*")) == ["step-00000002", "step-00000003"]
    assert checkpoint.latest(tmp_path).name == "step-00000003"
    assert checkpoint.latest(tmp_path / "nothing") is None
