"""Off-policy correction: truncated / masked importance weights and the ratio anchors."""

from __future__ import annotations

import math

import pytest
import torch

from rollstream.services.learner.losses import PolicyInputs
from rollstream.services.learner.objectives import make_objective
from rollstream.services.learner.offpolicy import OffPolicy, anchor_and_weights, behaviour_weights

E = math.exp
# log(pi_old / pi_behav) per token; sequence 1's last slot is padding
LOG_W = [[0.5, -0.2, 1.0], [0.3, 0.4, 9.0]]
MASK = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])


def weights(**kw):
    old = torch.tensor(LOG_W)
    return behaviour_weights(old, torch.zeros(2, 3), MASK, **kw)


def test_token_level_truncation() -> None:
    w, m = weights(level="token", cap=2.0)
    want = [[E(0.5), E(-0.2), 2.0], [E(0.3), E(0.4), 0.0]]  # e^1 = 2.718 cut to 2; pad -> 0
    assert torch.allclose(w, torch.tensor(want))
    assert m["is_truncated_frac"] == pytest.approx(1 / 5)
    assert m["is_ratio_max"] == pytest.approx(E(1.0))  # the raw weight, before truncation
    assert m["is_ratio_min"] == pytest.approx(E(-0.2))
    assert m["is_ratio_mean"] == pytest.approx((E(0.5) + E(-0.2) + E(1) + E(0.3) + E(0.4)) / 5)


def test_sequence_level_truncation_uses_the_product_of_token_ratios() -> None:
    w, m = weights(level="sequence", cap=3.0)
    # seq 0: exp(0.5 - 0.2 + 1.0) = e^1.3 = 3.669 -> 3; seq 1: exp(0.3 + 0.4) = 2.014 (pad ignored)
    want = [[3.0, 3.0, 3.0], [E(0.7), E(0.7), 0.0]]
    assert torch.allclose(w, torch.tensor(want), atol=1e-6)
    assert m["is_truncated_frac"] == pytest.approx(1 / 2)
    assert m["is_ratio_max"] == pytest.approx(E(1.3), rel=1e-6)


def test_mask_action_zeroes_out_of_band_tokens() -> None:
    w, m = weights(level="token", cap=2.0, action="mask", cap_min=0.9)
    # e^1 > 2 and e^-0.2 = 0.819 < 0.9 are masked; the rest keep their raw weight
    want = [[E(0.5), 0.0, 0.0], [E(0.3), E(0.4), 0.0]]
    assert torch.allclose(w, torch.tensor(want))
    assert m["is_truncated_frac"] == pytest.approx(2 / 5)


def test_tis_gradient_is_truncated_weight_times_advantage() -> None:
    # TIS: ratio anchor = pi itself (ratio 1), update = min(pi / pi_behav, C) A d log pi
    logp = torch.tensor([[-1.0, -2.0]], requires_grad=True, dtype=torch.float64)
    behav = torch.tensor([[-1.5, -1.0]], dtype=torch.float64)  # w = e^0.5, e^-1
    mask = torch.ones(1, 2, dtype=torch.float64)
    old, w, _ = anchor_and_weights(OffPolicy(mode="tis", cap=1.5), logp, behav, mask)
    assert torch.equal(old, logp.detach())
    inp = PolicyInputs(
        logp=logp,
        old_logp=old,
        advantages=torch.full((1, 2), 2.0, dtype=torch.float64),
        mask=mask,
        weights=w,
    )
    loss, _ = make_objective("ppo")(inp)
    loss.backward()
    # token-mean over 2 tokens: d/dlogp = -A min(w, 1.5) / 2
    want = [[-2.0 * 1.5 / 2, -2.0 * E(-1.0) / 2]]
    assert torch.allclose(logp.grad, torch.tensor(want, dtype=torch.float64))
    assert float(loss.detach()) == pytest.approx(-(1.5 + E(-1.0)))


def test_decoupled_ratio_uses_prox_and_weights_prox_over_behav() -> None:
    logp = torch.tensor([[-1.0]], requires_grad=True, dtype=torch.float64)
    prox = torch.tensor([[-1.1]], dtype=torch.float64)
    behav = torch.tensor([[-1.4]], dtype=torch.float64)
    mask = torch.ones(1, 1, dtype=torch.float64)
    cfg = OffPolicy(mode="decoupled", cap=5.0)
    old, w, m = anchor_and_weights(cfg, logp, behav, mask, prox_logp=prox)
    assert torch.equal(old, prox)
    assert float(w) == pytest.approx(E(0.3))  # pi_prox / pi_behav
    inp = PolicyInputs(
        logp=logp,
        old_logp=old,
        advantages=torch.ones(1, 1, dtype=torch.float64),
        mask=mask,
        weights=w,
    )
    loss, _ = make_objective("ppo")(inp)
    loss.backward()
    # ratio pi / pi_prox = e^0.1 (inside the clip): loss -w r, gradient -w r
    assert float(loss.detach()) == pytest.approx(-E(0.3) * E(0.1))
    assert float(logp.grad) == pytest.approx(-E(0.3) * E(0.1))
    with pytest.raises(ValueError):
        anchor_and_weights(cfg, logp, behav, mask)  # no pi_prox given


def test_none_mode_anchors_on_behaviour_without_weights() -> None:
    logp = torch.zeros(1, 2)
    behav = torch.tensor([[-0.5, -0.1]])
    old, w, m = anchor_and_weights(OffPolicy(mode="none"), logp, behav, torch.ones(1, 2))
    assert torch.equal(old, behav) and w is None and m == {}
