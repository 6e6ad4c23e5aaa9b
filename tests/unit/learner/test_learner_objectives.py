"""Each objective's loss and gradient against numbers worked out by hand.

The shared case: 2 sequences, 3 token slots; sequence 1's last slot is padding.

    log-ratio logp - old      r = exp(.)         advantage
    seq 0:  0.22, 0.0, -0.4   1.24608, 1, 0.67032    A = +1
    seq 1:  0.2, -0.3, (pad)  1.22140, 0.74082       A = -0.5

Per-token PPO loss max(-A r, -A clip(r)) with eps 0.2:
    seq 0: r 1.24608 > 1.2 with A > 0 -> clipped: -1.2 (no gradient); -1; -0.67032
    seq 1: 1.22140 with A < 0 is not clipped: 0.61070; r 0.74082 < 0.8 -> clipped: 0.4
The gradient of an unclipped token with respect to its logp is -A r.
"""

from __future__ import annotations

import math

import pytest
import torch

from rollstream.services.learner.losses import Norm, PolicyInputs, aggregate
from rollstream.services.learner.objectives import available, make_objective, register

LOGP = [[-1.0, -0.5, -2.0], [-0.3, -1.3, 0.0]]
OLD = [[-1.22, -0.5, -1.6], [-0.5, -1.0, 0.0]]
MASK = [[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]]
ADV = [[1.0, 1.0, 1.0], [-0.5, -0.5, -0.5]]
E = math.exp


def case(**extra) -> tuple[PolicyInputs, torch.Tensor]:
    logp = torch.tensor(LOGP, dtype=torch.float64, requires_grad=True)
    inp = PolicyInputs(
        logp=logp,
        old_logp=torch.tensor(OLD, dtype=torch.float64),
        advantages=torch.tensor(ADV, dtype=torch.float64),
        mask=torch.tensor(MASK, dtype=torch.float64),
        **extra,
    )
    return inp, logp


def run(name: str, **params) -> tuple[float, list[list[float]], dict[str, float]]:
    inp, logp = case()
    loss, metrics = make_objective(name, **params)(inp)
    loss.backward()
    return float(loss.detach()), logp.grad.tolist(), metrics


def close(got: list[list[float]], want: list[list[float]]) -> None:
    assert torch.allclose(torch.tensor(got), torch.tensor(want), atol=1e-6), (got, want)


def test_ppo_clip_token_mean() -> None:
    loss, grad, m = run("ppo")
    # (-1.2 - 1 - 0.67032 + 0.61070 + 0.4) / 5 trained tokens
    assert loss == pytest.approx(-1.859619 / 5, abs=1e-6)
    close(grad, [[0.0, -1 / 5, -E(-0.4) / 5], [0.5 * E(0.2) / 5, 0.0, 0.0]])
    assert m["clip_frac"] == pytest.approx(2 / 5)
    assert m["clip_frac_high"] == pytest.approx(1 / 5)  # seq 0 token 0 (A > 0)
    assert m["clip_frac_low"] == pytest.approx(1 / 5)  # seq 1 token 1 (A < 0)
    assert m["ratio_max"] == pytest.approx(E(0.22))
    assert m["ratio_min"] == pytest.approx(E(-0.4))


def test_grpo_seq_mean_token_mean() -> None:
    loss, grad, _ = run("grpo")
    # seq means (-1.2 - 1 - 0.67032) / 3 and (0.61070 + 0.4) / 2, then their mean
    assert loss == pytest.approx(-0.2257113, abs=1e-6)
    close(grad, [[0.0, -1 / 6, -E(-0.4) / 6], [0.5 * E(0.2) / 4, 0.0, 0.0]])


def test_dapo_clip_higher_keeps_the_token_ppo_clips() -> None:
    loss, grad, m = run("dapo")
    # r = 1.24608 is inside 1 + 0.28: unclipped -1.24608 instead of -1.2
    assert loss == pytest.approx((-E(0.22) - 1 - E(-0.4) + 0.5 * E(0.2) + 0.4) / 5, abs=1e-6)
    assert loss == pytest.approx(-0.3811391, abs=1e-6)
    close(grad, [[-E(0.22) / 5, -1 / 5, -E(-0.4) / 5], [0.5 * E(0.2) / 5, 0.0, 0.0]])
    assert m["clip_frac"] == pytest.approx(1 / 5)


def test_dr_grpo_divides_token_sums_by_a_constant() -> None:
    loss, grad, _ = run("dr_grpo", max_length=4)
    # sum of token losses / (2 sequences x max_length 4)
    assert loss == pytest.approx(-1.859619 / 8, abs=1e-6)
    close(grad, [[0.0, -1 / 8, -E(-0.4) / 8], [0.5 * E(0.2) / 8, 0.0, 0.0]])


def test_gspo_sequence_ratio() -> None:
    loss, grad, m = run("gspo")
    # s0 = exp(mean(0.22, 0, -0.4)) = exp(-0.06) = 0.94176, A = +1: below 1 - 3e-4 but A > 0,
    #   so not clipped: loss -0.94176, d/dlogp_t = -A s0 / (3 tokens x 2 seqs)
    # s1 = exp(mean(0.2, -0.3)) = exp(-0.05) = 0.95123, A = -0.5: clipped to 0.9997:
    #   loss 0.5 x 0.9997 = 0.49985, no gradient
    assert loss == pytest.approx((-E(-0.06) + 0.49985) / 2, abs=1e-6)
    assert loss == pytest.approx(-0.2209573, abs=1e-6)
    g0 = -E(-0.06) / 6
    close(grad, [[g0, g0, g0], [0.0, 0.0, 0.0]])
    assert m["clip_frac"] == pytest.approx(0.5)  # one of two sequences
    assert m["ratio_min"] == pytest.approx(E(-0.06))


def test_ppo_dual_clip_bounds_negative_advantages() -> None:
    # one token, A = -0.5, r = e^2 = 7.389: PPO loss 0.5 x 7.389 = 3.69, dual clip c = 3 -> 1.5
    logp = torch.tensor([[2.0]], dtype=torch.float64, requires_grad=True)
    inp = PolicyInputs(
        logp=logp,
        old_logp=torch.zeros(1, 1, dtype=torch.float64),
        advantages=torch.full((1, 1), -0.5, dtype=torch.float64),
        mask=torch.ones(1, 1, dtype=torch.float64),
    )
    loss, _ = make_objective("ppo", dual_clip=3.0)(inp)
    loss.backward()
    assert float(loss.detach()) == pytest.approx(1.5)
    assert float(logp.grad) == 0.0


def test_k3_kl_penalty_value_and_gradient() -> None:
    # zero advantages: only the KL term. d = ref - logp = -0.5, 0.5
    # k3 = e^d - d - 1 = 0.106531, 0.148721; GRPO mean over the 2 tokens x kl_coef 0.1
    # d k3 / d logp = 1 - e^d
    logp = torch.tensor([[-1.0, -2.0]], dtype=torch.float64, requires_grad=True)
    inp = PolicyInputs(
        logp=logp,
        old_logp=logp.detach(),
        advantages=torch.zeros(1, 2, dtype=torch.float64),
        mask=torch.ones(1, 2, dtype=torch.float64),
        ref_logp=torch.tensor([[-1.5, -1.5]], dtype=torch.float64),
    )
    loss, m = make_objective("grpo", kl_coef=0.1)(inp)
    loss.backward()
    assert float(loss.detach()) == pytest.approx(0.1 * (0.1065307 + 0.1487213) / 2, abs=1e-7)
    close(logp.grad.tolist(), [[0.1 * (1 - E(-0.5)) / 2, 0.1 * (1 - E(0.5)) / 2]])
    assert m["kl"] == pytest.approx((0.1065307 + 0.1487213) / 2, abs=1e-6)


def test_weights_multiply_the_policy_term() -> None:
    w = torch.tensor([[2.0, 0.5, 1.0], [3.0, 1.0, 0.0]], dtype=torch.float64)
    inp, logp = case(weights=w)
    loss, _ = make_objective("ppo")(inp)
    loss.backward()
    assert float(loss.detach()) == pytest.approx(
        (2 * -1.2 + 0.5 * -1 + -E(-0.4) + 3 * 0.5 * E(0.2) + 0.4) / 5, abs=1e-6
    )
    close(logp.grad.tolist(), [[0.0, -0.5 / 5, -E(-0.4) / 5], [3 * 0.5 * E(0.2) / 5, 0.0, 0.0]])


def test_entropy_metric_and_bonus() -> None:
    ent = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 100.0]], dtype=torch.float64)
    inp, _ = case(entropy=ent)
    plain, m = make_objective("ppo")(inp)
    assert m["entropy"] == pytest.approx(3.0)  # padding's 100 is ignored
    bonus, _ = make_objective("ppo", entropy_coef=0.1)(inp)
    assert float((plain - bonus).detach()) == pytest.approx(0.1 * 15 / 5)


def test_aggregation_modes_by_hand() -> None:
    loss = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    norm = Norm.of(mask)
    assert float(aggregate(loss, mask, "token-mean", norm)) == pytest.approx(10 / 4)
    assert float(aggregate(loss, mask, "seq-mean-token-mean", norm)) == pytest.approx((2 + 4) / 2)
    assert float(aggregate(loss, mask, "seq-mean-token-sum", norm)) == pytest.approx((6 + 4) / 2)
    got = aggregate(loss, mask, "seq-mean-token-sum-norm", norm, max_length=5)
    assert float(got) == pytest.approx(10 / (2 * 5))
    with pytest.raises(ValueError):
        aggregate(loss, mask, "mean", norm)


def test_registry_builds_by_name_and_accepts_plugins() -> None:
    assert {"ppo", "grpo", "dapo", "dr_grpo", "gspo"} <= set(available())
    assert make_objective("dapo").eps_high == 0.28
    gspo = make_objective("gspo")
    assert (gspo.eps_low, gspo.eps_high) == (3e-4, 4e-4)

    @register("test-zero")
    class Zero:
        def __call__(self, inp, norm=None):
            return inp.logp.sum() * 0, {}

    inp, _ = case()
    assert float(make_objective("test-zero")(inp)[0].detach()) == 0.0
    with pytest.raises(ValueError):
        make_objective("no-such-objective")
