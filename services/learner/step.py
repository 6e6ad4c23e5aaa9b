"""One training step on one TrainBatch: micro-batches, off-policy correction, objective,
gradient accumulation, clipping, optimizer step. Pure torch; no I/O (the service decodes
batches, calls this, and publishes).

A batch is split into `mini_steps` optimizer steps (1 by default: one step per batch), each
made of micro-batches by token budget whose gradients accumulate. Each mini-step's loss uses
that mini-step's own denominators, so its micro-batch losses add up to the loss the
mini-step would have as one tensor batch.

Decoupled PPO needs pi_prox, the policy before this batch's first update: with
`mini_steps > 1` it is computed once, with no_grad, before the first step; with one step it
equals the log-probs of the training forward pass itself (the weights have not moved yet),
so that forward pass's detached log-probs are used and no extra forward pass is spent.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Any

import torch

from rollstream.schemas import TrainBatch
from rollstream.services.learner.batching import TensorBatch, micro_batches, norm_of
from rollstream.services.learner.logprobs import token_logprobs
from rollstream.services.learner.losses import PolicyInputs
from rollstream.services.learner.objectives import Objective
from rollstream.services.learner.offpolicy import OffPolicy, anchor_and_weights


@dataclass
class StepConfig:
    token_budget: int | None = 4096  # padded tokens per micro-batch (None: one micro-batch)
    mini_steps: int = 1  # optimizer steps per batch
    max_grad_norm: float | None = 1.0
    temperature: float | None = None  # None: each sample's own sampling temperature
    entropy: bool = True  # compute the entropy metric (one more softmax per token)
    pad_id: int = 0


_MAX = ("ratio_max", "is_ratio_max")
_MIN = ("ratio_min", "is_ratio_min")
_SUM = ("loss", "pg_loss", "tokens")


def merge_metrics(parts: list[dict[str, float]]) -> dict[str, float]:
    """Combine micro-batch metrics: sums for losses and counts, max / min for extremes, the
    token-weighted mean for everything else."""
    out: dict[str, float] = {}
    total = sum(p.get("tokens", 0.0) for p in parts) or 1.0
    for key in {k for p in parts for k in p}:
        vals = [(p[key], p.get("tokens", 0.0)) for p in parts if key in p]
        if key in _SUM:
            out[key] = sum(v for v, _ in vals)
        elif key in _MAX:
            out[key] = max(v for v, _ in vals)
        elif key in _MIN:
            out[key] = min(v for v, _ in vals)
        else:
            out[key] = sum(v * w for v, w in vals) / total
    return out


def _logp(model: Any, mb: TensorBatch, cfg: StepConfig, entropy: bool):
    return token_logprobs(
        model,
        mb.input_ids,
        mb.attention_mask,
        mb.completion_mask,
        temperature=mb.temperatures if cfg.temperature is None else cfg.temperature,
        with_entropy=entropy,
    )


def train_on_batch(
    model: Any,
    optimizer: torch.optim.Optimizer,
    objective: Objective,
    offpolicy: OffPolicy,
    batch: TrainBatch,
    cfg: StepConfig,
    *,
    ref_model: Any | None = None,
    scheduler: Any | None = None,
    device: torch.device | str = "cpu",
    autocast_dtype: torch.dtype | None = None,
) -> tuple[dict[str, float], list[float]]:
    """Train on `batch` (mini_steps optimizer steps). Returns the merged metrics and, per
    row (rows_of order), a new priority: the mean over its tokens of |A| * pi / pi_old at
    the first time the row was seen in this call, i.e. how much gradient signal it still
    carries (for feedback-prioritised replay)."""
    mbs, _, rows = micro_batches(batch, cfg.token_budget, cfg.pad_id)
    mbs = [mb.to(device) for mb in mbs]
    steps = [mbs[i :: cfg.mini_steps] for i in range(min(cfg.mini_steps, len(mbs)))]
    prox: dict[int, torch.Tensor] = {}
    if offpolicy.mode == "decoupled" and len(steps) > 1:
        with torch.no_grad():
            for i, mb in enumerate(mbs):
                prox[i] = _logp(model, mb, cfg, False)[0]
    index = {id(mb): i for i, mb in enumerate(mbs)}
    parts: list[dict[str, float]] = []
    priority = [0.0] * len(rows)
    amp = (
        torch.autocast(device_type=torch.device(device).type, dtype=autocast_dtype)
        if autocast_dtype is not None
        else contextlib.nullcontext()
    )
    grad_norms: list[float] = []
    skipped = 0
    for step_mbs in steps:
        norm = norm_of([rows[r] for mb in step_mbs for r in mb.rows])
        optimizer.zero_grad(set_to_none=True)
        for mb in step_mbs:
            with amp:
                logp, ent = _logp(model, mb, cfg, cfg.entropy)
            p = prox.get(index[id(mb)], logp.detach())
            old, w, is_metrics = anchor_and_weights(
                offpolicy, logp, mb.behav_logp, mb.completion_mask, p
            )
            weights = mb.weights[:, None].expand_as(logp)
            weights = weights * w if w is not None else weights
            ref = None
            if ref_model is not None:
                with torch.no_grad(), amp:
                    ref = _logp(ref_model, mb, cfg, False)[0]
            inp = PolicyInputs(
                logp=logp,
                old_logp=old,
                advantages=mb.advantages,
                mask=mb.completion_mask,
                weights=weights,
                ref_logp=ref,
                entropy=ent,
            )
            loss, metrics = objective(inp, norm)
            loss.backward()
            with torch.no_grad():
                m = mb.completion_mask
                r = torch.exp((logp.detach() - old).clamp(-20.0, 20.0))
                row_p = (mb.advantages.abs() * r * m).sum(-1) / m.sum(-1).clamp(min=1.0)
            for row, value in zip(mb.rows, row_p.tolist(), strict=True):
                priority[row] = priority[row] or value
            metrics.update(is_metrics)
            metrics["loss"] = float(loss.detach())
            parts.append(metrics)
        params = [q for g in optimizer.param_groups for q in g["params"]]
        if cfg.max_grad_norm is not None:
            grad_norm = float(torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm))
            grad_norms.append(grad_norm)
            if not math.isfinite(grad_norm):
                optimizer.zero_grad(set_to_none=True)  # skip a step with inf / nan gradients
                skipped += 1
                continue
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
    out = merge_metrics(parts)
    if grad_norms:
        out["grad_norm"] = max(grad_norms)  # before clipping; the largest of the mini-steps
    out["skipped_steps"] = float(skipped)
    out["micro_batches"] = float(len(mbs))
    out["sequences"] = float(len(rows))
    return out, priority
