"""A training step: micro-batching gives the full-batch gradient; training moves the policy
towards positive advantages."""

from __future__ import annotations

import pytest
import torch

from rollstream.services.learner.batching import micro_batches
from rollstream.services.learner.logprobs import token_logprobs
from rollstream.services.learner.objectives import make_objective
from rollstream.services.learner.offpolicy import OffPolicy
from rollstream.services.learner.step import StepConfig, merge_metrics, train_on_batch


def batch_of(make_batch):
    return make_batch(
        [
            ("g0", [([1, 2], [5, 6, 7], [-3.0, -3.1, -3.2]), ([1], [8], [-3.3])], [1.0, -1.0], 0.5),
            (
                "g1",
                [([1, 2, 3], [9, 9], [-3.0, -3.4]), ([1, 4], [10, 11, 12, 13], None)],
                [2.0, -2.0],
                1.0,
            ),
        ]
    )


def grads_after(model, batch, objective, budget, offpolicy):
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    cfg = StepConfig(token_budget=budget, max_grad_norm=None)
    metrics, _ = train_on_batch(model, opt, objective, offpolicy, batch, cfg)
    return [p.grad.clone() for p in model.parameters()], metrics


@pytest.mark.parametrize("name", ["dapo", "grpo", "dr_grpo", "gspo"])
def test_micro_batches_give_the_full_batch_gradient(make_batch, make_model, name) -> None:
    batch = batch_of(make_batch)
    model = make_model()
    objective = make_objective(name)
    off = OffPolicy(mode="tis", cap=2.0)
    full, m_full = grads_after(model, batch, objective, None, off)
    split, m_split = grads_after(model, batch, objective, 6, off)
    assert m_split["micro_batches"] > 1 and m_full["micro_batches"] == 1
    assert m_split["loss"] == pytest.approx(m_full["loss"], abs=1e-6)
    for a, b in zip(full, split, strict=True):
        assert torch.allclose(a, b, atol=1e-6)


def test_training_raises_the_likelihood_of_positive_advantage(make_batch, make_model) -> None:
    # the same prompt, two completions: [5, 6] with A = +1, [7, 8] with A = -1
    batch = make_batch([("g", [([1, 2], [5, 6], None), ([1, 2], [7, 8], None)], [1.0, -1.0], 1.0)])
    model = make_model()
    (mb,), _, _ = micro_batches(batch, None)

    def seq_logp():
        with torch.no_grad():
            lp, _ = token_logprobs(model, mb.input_ids, mb.attention_mask, mb.completion_mask)
        return lp.sum(-1).tolist()

    before = seq_logp()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(5):
        m, prio = train_on_batch(
            model, opt, make_objective("grpo"), OffPolicy(mode="none"), batch, StepConfig()
        )
    after = seq_logp()
    assert after[0] > before[0] and after[1] < before[1]
    assert {"loss", "entropy", "clip_frac", "grad_norm", "ratio_mean"} <= set(m)


def test_decoupled_with_several_mini_steps_anchors_on_pi_prox(make_batch, make_model) -> None:
    batch = batch_of(make_batch)
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    cfg = StepConfig(token_budget=6, mini_steps=2)
    m, _ = train_on_batch(
        model, opt, make_objective("ppo"), OffPolicy(mode="decoupled", cap=1e6), batch, cfg
    )
    # the second mini-step sees weights moved by the first: its ratio to pi_prox is not 1
    assert m["ratio_max"] > 1.0 or m["ratio_min"] < 1.0
    # behaviour log-probs around -3 against a random 24-token model (about -3.2): weights != 1
    assert m["is_ratio_max"] != pytest.approx(1.0)


def test_merge_metrics_weights_by_tokens() -> None:
    parts = [
        {"tokens": 1.0, "clip_frac": 1.0, "ratio_max": 2.0, "loss": 0.5},
        {"tokens": 3.0, "clip_frac": 0.0, "ratio_max": 1.5, "loss": 0.25},
    ]
    m = merge_metrics(parts)
    assert m == {"tokens": 4.0, "clip_frac": 0.25, "ratio_max": 2.0, "loss": 0.75}


def test_row_priorities_are_mean_abs_advantage_times_ratio(make_batch, make_model) -> None:
    # TIS anchors on the policy itself (ratio 1): the priority is |A| of each row
    batch = batch_of(make_batch)
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    _, prio = train_on_batch(
        model, opt, make_objective("grpo"), OffPolicy(mode="tis"), batch, StepConfig(token_budget=6)
    )
    assert prio == pytest.approx([1.0, 1.0, 2.0, 2.0])
