"""Completion-token log-probs and entropy match a plain full log-softmax, with gradients."""

from __future__ import annotations

import pytest
import torch

from rollstream.services.learner.logprobs import token_logprobs

IDS = torch.tensor([[1, 5, 6, 7, 0], [1, 8, 9, 0, 0]])
ATT = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 0, 0]])
COMP = torch.tensor([[0, 0, 1, 1, 0], [0, 1, 1, 0, 0]], dtype=torch.float64)


def naive(model, temperature=1.0):
    logits = model(input_ids=IDS, attention_mask=ATT).logits / temperature
    logp_all = torch.log_softmax(logits, -1)
    ent_all = -(logp_all.exp() * logp_all).sum(-1)
    logp = torch.zeros(IDS.shape, dtype=logits.dtype)
    ent = torch.zeros(IDS.shape, dtype=logits.dtype)
    for b, t in COMP.nonzero().tolist():  # token t is predicted at t - 1
        logp[b, t] = logp_all[b, t - 1, IDS[b, t]]
        ent[b, t] = ent_all[b, t - 1]
    return logp, ent


class LogitsOnly(torch.nn.Module):
    """A causal LM with no decoder/head accessors: forces the full-forward path."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, input_ids, attention_mask):
        return self.inner(input_ids=input_ids, attention_mask=attention_mask)


@pytest.mark.parametrize("wrap", [False, True], ids=["gathered-rows", "full-forward"])
def test_matches_full_log_softmax(make_model, wrap: bool) -> None:
    model = make_model()
    used = LogitsOnly(model) if wrap else model
    logp, ent = token_logprobs(used, IDS, ATT, COMP, temperature=0.7, with_entropy=True, chunk=3)
    want_logp, want_ent = naive(model, temperature=0.7)
    assert torch.allclose(logp.double(), want_logp, atol=1e-6)
    assert torch.allclose(ent.double(), want_ent, atol=1e-6)
    assert (logp[COMP == 0] == 0).all()


def test_gradients_match_the_plain_computation(make_model) -> None:
    model = make_model()
    logp, _ = token_logprobs(model, IDS, ATT, COMP, chunk=1)  # one row per chunk, recomputed
    logp.sum().backward()
    got = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    naive(model)[0].sum().backward()
    for g, p in zip(got, model.parameters(), strict=True):
        assert torch.allclose(g, p.grad, atol=1e-8)


def test_completion_token_at_position_zero_is_rejected(make_model) -> None:
    comp = torch.zeros_like(COMP)
    comp[0, 0] = 1
    with pytest.raises(ValueError):
        token_logprobs(make_model(), IDS, ATT, comp)
