"""Per-token log-probs (and entropy) of completion tokens under a causal LM. Pure torch.

Token t is predicted by the hidden state at t-1. Instead of materialising logits for every
position (B x T x V floats), this runs the model's decoder to hidden states, gathers the
hidden states that predict completion tokens only (N rows), and applies the output head and
log-softmax to those rows in chunks of `chunk` rows, so memory is O(chunk x V) instead of
O(B x T x V); under autograd each chunk's logits are recomputed in the backward pass
(activation checkpointing) rather than kept. Models whose logits are not a plain linear head
of the last hidden state (a final soft-cap or a logit scale in their config) fall back to the
full forward pass.

Logits are divided by `temperature` before the softmax, so the result is comparable with the
behaviour log-probs the generator recorded at that temperature.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

# config attributes that mean "the logits are not just lm_head(hidden)"
_LOGIT_TRANSFORMS = ("final_logit_softcapping", "logit_scale", "logits_scaling")


def _decoder_and_head(model: Any) -> tuple[Any, Any] | None:
    cfg = getattr(model, "config", None)
    if cfg is not None and any(
        getattr(cfg, a, None) not in (None, 1, 1.0) for a in _LOGIT_TRANSFORMS
    ):
        return None
    get_decoder = getattr(model, "get_decoder", None)
    get_head = getattr(model, "get_output_embeddings", None)
    if get_decoder is None or get_head is None:
        return None
    decoder, head = get_decoder(), get_head()
    if decoder is None or head is None or decoder is model:
        return None
    return decoder, head


def token_logprobs(
    model: Any,
    input_ids: Tensor,
    attention_mask: Tensor,
    completion_mask: Tensor,
    *,
    temperature: float | Tensor = 1.0,
    with_entropy: bool = False,
    chunk: int = 2048,
) -> tuple[Tensor, Tensor | None]:
    """(logp, entropy): (B, T) each, filled at completion positions, 0 elsewhere.

    `input_ids`, `attention_mask`, `completion_mask`: (B, T), right-padded; no completion
    token may sit at column 0. `temperature`: one number, or (B,) one per row. Gradients flow
    unless called under torch.no_grad()."""
    b_idx, t_idx = completion_mask.nonzero(as_tuple=True)
    if (t_idx == 0).any():
        raise ValueError("a completion token at position 0 has nothing to predict it from")
    targets = input_ids[b_idx, t_idx]
    if isinstance(temperature, Tensor):
        temps = temperature.to(input_ids.device, torch.float32)[b_idx]  # (N,)
    else:
        temps = torch.full(targets.shape, float(temperature), device=input_ids.device)
    parts = _decoder_and_head(model)
    if parts is not None:
        decoder, head = parts
        hidden = decoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        rows = hidden[b_idx, t_idx - 1]  # (N, H)
    else:
        head = None
        full = model(input_ids=input_ids, attention_mask=attention_mask).logits  # (B, T, V)
        rows = full[b_idx, t_idx - 1]  # (N, V): already logits

    def stats(rows_chunk: Tensor, target_chunk: Tensor, temp: Tensor) -> tuple[Tensor, Tensor]:
        logits = rows_chunk if head is None else head(rows_chunk)
        logits = logits.float() / temp[:, None]  # (n, V)
        lse = torch.logsumexp(logits, dim=-1)
        lp = logits.gather(-1, target_chunk[:, None]).squeeze(-1) - lse
        if not with_entropy:
            return lp, lp.new_zeros(())
        return lp, lse - (torch.softmax(logits, dim=-1) * logits).sum(-1)

    # under grad, recompute each chunk's logits in backward instead of keeping N x V of them
    recompute = head is not None and torch.is_grad_enabled() and rows.requires_grad
    n = targets.numel()
    logp_parts, ent_parts = [], []
    for lo in range(0, n, chunk):
        args = (rows[lo : lo + chunk], targets[lo : lo + chunk], temps[lo : lo + chunk])
        if recompute:
            lp, ent = checkpoint(stats, *args, use_reentrant=False)
        else:
            lp, ent = stats(*args)
        logp_parts.append(lp)
        ent_parts.append(ent)
    dtype = torch.float32
    logp = torch.zeros(input_ids.shape, dtype=dtype, device=input_ids.device)
    entropy = torch.zeros_like(logp) if with_entropy else None
    if n:
        logp = logp.index_put((b_idx, t_idx), torch.cat(logp_parts))
        if with_entropy:
            entropy = entropy.index_put((b_idx, t_idx), torch.cat(ent_parts))
    return logp, entropy


class LogprobModule(torch.nn.Module):
    """`token_logprobs` as a module's forward, so that a DDP or FSDP wrapper of this module sees
    (and synchronises) the whole computation, chunked output head included. Its parameters are
    those of `model`, the causal LM."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor,
        completion_mask: Tensor,
        temperature: float | Tensor = 1.0,
        with_entropy: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        return token_logprobs(
            self.model,
            input_ids,
            attention_mask,
            completion_mask,
            temperature=temperature,
            with_entropy=with_entropy,
        )


def policy_logprobs(
    model: Any,
    input_ids: Tensor,
    attention_mask: Tensor,
    completion_mask: Tensor,
    *,
    temperature: float | Tensor = 1.0,
    with_entropy: bool = False,
) -> tuple[Tensor, Tensor | None]:
    """`token_logprobs` of `model`: a causal LM, a LogprobModule, or a DDP wrapper of one."""
    if isinstance(getattr(model, "module", model), LogprobModule):
        return model(input_ids, attention_mask, completion_mask, temperature, with_entropy)
    return token_logprobs(
        model,
        input_ids,
        attention_mask,
        completion_mask,
        temperature=temperature,
        with_entropy=with_entropy,
    )
