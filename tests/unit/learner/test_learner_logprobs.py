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


def test_rows_that_share_a_prompt_run_it_once_with_the_same_values_and_gradients(
    make_model,
) -> None:
    """A group's samples share their prompt: it runs once for all of them (the decoder's first
    pass has one row per distinct prompt and only the prompt's tokens), and the log-probs,
    entropies and gradients are those of every row running its whole sequence. Prompts of
    different lengths, completions of different lengths, a row whose prompt no other row has."""
    rows = [([1, 5, 6], [7, 8, 9, 3]), ([1, 5, 6], [7]), ([1, 5, 6], [10, 11]),
            ([1, 9, 9, 9, 4], [2, 2]), ([1, 9, 9, 9, 4], [12, 13, 14]),
            ([1, 3], [4, 4])]  # fmt: skip
    width = max(len(p) + len(c) for p, c in rows)
    ids = torch.zeros((len(rows), width), dtype=torch.long)
    att, comp = torch.zeros_like(ids), torch.zeros((len(rows), width), dtype=torch.float64)
    for i, (p, c) in enumerate(rows):
        ids[i, : len(p) + len(c)] = torch.tensor(p + c)
        att[i, : len(p) + len(c)] = 1
        comp[i, len(p) : len(p) + len(c)] = 1
    model = make_model()
    shapes: list[tuple[int, ...]] = []
    hook = model.get_decoder().register_forward_pre_hook(
        lambda _m, _a, kw: shapes.append(tuple(kw["input_ids"].shape)), with_kwargs=True
    )
    out = {}
    for share in (True, False):
        model.zero_grad()
        shapes.clear()
        logp, ent = token_logprobs(
            model, ids, att, comp, temperature=0.7, with_entropy=True, share_prompts=share
        )
        (logp * torch.arange(1.0, width + 1)).sum().backward()  # every position weighs
        out[share] = (logp.detach(), ent, [p.grad.clone() for p in model.parameters()], shapes[:])
    hook.remove()
    assert out[True][3][0] == (3, 4)  # 3 distinct prompts, the longest less its last token
    assert out[False][3] == [(6, width)]
    assert torch.allclose(out[True][0], out[False][0], atol=1e-10)
    assert torch.allclose(out[True][1], out[False][1], atol=1e-10)
    assert (out[True][0][comp == 0] == 0).all()
    for a, b in zip(out[True][2], out[False][2], strict=True):
        assert torch.allclose(a, b, atol=1e-10)
