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

import weakref
from typing import Any

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from rollstream.services.models.prompt_cache import is_plain, prefix_cache, repeat_rows

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
    share_prompts: bool = True,
) -> tuple[Tensor, Tensor | None]:
    """(logp, entropy): (B, T) each, filled at completion positions, 0 elsewhere.

    `input_ids`, `attention_mask`, `completion_mask`: (B, T), right-padded; no completion
    token may sit at column 0. `temperature`: one number, or (B,) one per row. Gradients flow
    unless called under torch.no_grad(). `share_prompts`: rows with the same prompt (a
    group's samples) run it once (`_shared_prompt_hidden`); off only to measure it."""
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
        shared = (
            _shared_prompt_hidden(decoder, input_ids, attention_mask, completion_mask)
            if share_prompts
            else None
        )
        if shared is not None:
            hidden, starts = shared
            rows = hidden[b_idx, t_idx - 1 - starts[b_idx]]  # (N, H)
        else:
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


_PLAIN_CACHE: weakref.WeakKeyDictionary[Any, bool] = weakref.WeakKeyDictionary()


def _shared_prompt_hidden(
    decoder: Any, input_ids: Tensor, attention_mask: Tensor, completion_mask: Tensor
) -> tuple[Tensor, Tensor] | None:
    """The decoder's hidden states with each distinct prompt run once: (hidden, starts).

    A row's prompt is its tokens before its first completion token. Every distinct prompt but
    its last token runs once (left-padded, at its true positions) into a key/value cache; the
    cache is repeated for the rows that share it, and each row's last prompt token, completion
    and padding (`hidden`, (B, S, H)) run on top of it. Row b's original column t is column
    t - starts[b] of `hidden`. Under autograd the prompt's gradient is the sum over its rows,
    as in the unshared pass, so values and gradients are the same up to float rounding
    (tested). A group of n samples costs 1/n of its prompt tokens: with the built-in tasks'
    prompts as long as their completions, about 40 % of the tokens of a step.

    None - the caller runs the plain pass - when no two rows share a prompt, a prompt is a
    single token, a row has no completion, or the model's cache is not one plain key/value
    pair per layer (sliding-window, linear-attention and other caches)."""
    if _PLAIN_CACHE.get(decoder) is False:
        return None
    b = input_ids.shape[0]
    has = completion_mask > 0
    if b < 2 or not bool(has.any(dim=1).all()):
        return None
    plen = has.int().argmax(dim=1)  # (B,) first completion column
    ends = attention_mask.sum(dim=1)  # (B,) right-padded: tokens per row
    if int(plen.min()) < 2:
        return None
    ids = input_ids[:, : int(plen.max())].tolist()
    pl = plen.tolist()
    index: dict[tuple[int, ...], int] = {}
    group = [index.setdefault(tuple(ids[i][: pl[i] - 1]), len(index)) for i in range(b)]
    if len(index) == b:
        return None
    dev = input_ids.device
    width = int(plen.max()) - 1
    prefix = torch.zeros((len(index), width), dtype=input_ids.dtype, device=dev)
    pmask = torch.zeros((len(index), width), dtype=attention_mask.dtype, device=dev)
    for key, u in index.items():  # left-padded, so every prompt ends at the last column
        if key:
            prefix[u, width - len(key) :] = torch.tensor(key, dtype=input_ids.dtype)
            pmask[u, width - len(key) :] = 1
    cache = prefix_cache(decoder, prefix, pmask)
    if decoder not in _PLAIN_CACHE:
        _PLAIN_CACHE[decoder] = is_plain(cache)
    if not _PLAIN_CACHE[decoder]:
        return None
    rows = torch.tensor(group, device=dev)
    repeat_rows(cache, rows)
    starts = plen - 1  # each row's suffix starts at its last prompt token
    width_s = int((ends - starts).max())
    col = torch.arange(width_s, device=dev)
    src = (starts[:, None] + col[None, :]).clamp(max=input_ids.shape[1] - 1)
    smask = (col[None, :] < (ends - starts)[:, None]).to(attention_mask.dtype)
    suffix = input_ids.gather(1, src) * smask
    hidden = decoder(
        input_ids=suffix,
        attention_mask=torch.cat([pmask.index_select(0, rows), smask], dim=1),
        position_ids=starts[:, None] + col[None, :],
        past_key_values=cache,
        use_cache=True,
    ).last_hidden_state
    return hidden, starts


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
        share_prompts: bool = True,
    ) -> tuple[Tensor, Tensor | None]:
        return token_logprobs(
            self.model,
            input_ids,
            attention_mask,
            completion_mask,
            temperature=temperature,
            with_entropy=with_entropy,
            share_prompts=share_prompts,
        )


def policy_logprobs(
    model: Any,
    input_ids: Tensor,
    attention_mask: Tensor,
    completion_mask: Tensor,
    *,
    temperature: float | Tensor = 1.0,
    with_entropy: bool = False,
    share_prompts: bool = True,
) -> tuple[Tensor, Tensor | None]:
    """`token_logprobs` of `model`: a causal LM, a LogprobModule, or a DDP wrapper of one."""
    if isinstance(getattr(model, "module", model), LogprobModule):
        return model(
            input_ids, attention_mask, completion_mask, temperature, with_entropy, share_prompts
        )
    return token_logprobs(
        model,
        input_ids,
        attention_mask,
        completion_mask,
        temperature=temperature,
        with_entropy=with_entropy,
        share_prompts=share_prompts,
    )
