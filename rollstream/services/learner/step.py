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

Data parallel (`dp`, see distributed.py): each process trains its share of every optimizer
step (batching.plan) with the whole step's denominators, and gradients are summed over ranks.
"""

from __future__ import annotations

import contextlib
import math
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from rollstream.schemas import TrainBatch
from rollstream.services.learner.batching import TensorBatch, collate, norm_of, plan, rows_of
from rollstream.services.learner.logprobs import policy_logprobs
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
    share_prompts: bool = True  # rows with one prompt run it once (logprobs.token_logprobs)
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
    return policy_logprobs(
        model,
        mb.input_ids,
        mb.attention_mask,
        mb.completion_mask,
        temperature=mb.temperatures if cfg.temperature is None else cfg.temperature,
        with_entropy=entropy,
        share_prompts=cfg.share_prompts,
    )


class DataParallel(Protocol):
    """What a step needs from a data-parallel group (distributed.Parallel is one)."""

    rank: int
    world: int

    def accumulate(self, model: Any, sync: bool) -> AbstractContextManager[Any]:
        """Context of one micro-batch's forward and backward; gradients are reduced across
        ranks only when `sync` (the last micro-batch of an optimizer step)."""
        ...

    def all_sum(self, t: torch.Tensor) -> torch.Tensor:
        """`t` summed over ranks (every rank gets the sum)."""
        ...

    def gather_metrics(self, metrics: dict[str, float]) -> list[dict[str, float]]:
        """Every rank's `metrics`, in rank order."""
        ...


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
    dp: DataParallel | None = None,
    lr_scale: float = 1.0,
) -> tuple[dict[str, float], list[float]]:
    """Train on `batch` (mini_steps optimizer steps, each at the scheduled lr times
    `lr_scale`). Returns the merged metrics and, per row (rows_of order), a new priority: the
    mean over its tokens of |A| * pi / pi_old at the first time the row was seen in this call,
    i.e. how much gradient signal it still carries (for feedback-prioritised replay).

    With `dp`, this process trains its share of every step (batching.plan) and the loss is
    multiplied by the world size, since DDP / FSDP average the ranks' gradients while each
    rank's loss is its part of a sum (global denominators): the update equals one process's.
    Metrics and priorities are those of the whole batch on every rank."""
    rows = rows_of(batch)
    world = dp.world if dp is not None else 1
    steps, planned, tensors, prox = _prepare(model, offpolicy, rows, cfg, device, dp)
    parts: list[dict[str, float]] = []
    priority = [0.0] * len(rows)
    amp = (
        torch.autocast(device_type=torch.device(device).type, dtype=autocast_dtype)
        if autocast_dtype is not None
        else contextlib.nullcontext()
    )
    grad_norms: list[float] = []
    skipped = 0
    i = 0
    for members, step_mbs in steps:
        norm = norm_of([rows[r] for r in members])  # the whole step's, over all ranks
        optimizer.zero_grad(set_to_none=True)
        for j, p in enumerate(step_mbs):
            mb, index = tensors[i], i
            i += 1
            sync = dp.accumulate(model, j == len(step_mbs) - 1) if dp else contextlib.nullcontext()
            with sync:
                metrics, row_p = _micro_step(
                    model,
                    objective,
                    offpolicy,
                    mb,
                    prox.get(index),
                    norm,
                    cfg,
                    ref_model=ref_model,
                    amp=amp,
                    scale=float(world),
                    pad=p.pad,
                )
            if p.pad:
                continue
            for row, value in zip(mb.rows, row_p, strict=True):
                priority[row] = priority[row] or value
            parts.append(metrics)
        if not _optimizer_step(optimizer, cfg, grad_norms, lr_scale):
            skipped += 1
            continue
        if scheduler is not None:
            scheduler.step()
    out = merge_metrics(parts)
    if dp is not None:
        out = merge_metrics(dp.gather_metrics(out))
        mine = torch.tensor(priority, dtype=torch.float64, device=device)
        priority = dp.all_sum(mine).tolist()  # each row was trained on exactly one rank
    if grad_norms:
        out["grad_norm"] = max(grad_norms)  # before clipping; the largest of the mini-steps
    out["skipped_steps"] = float(skipped)
    out["micro_batches"] = float(len(planned))  # forward passes of this process
    out["sequences"] = float(len(rows))
    return out, priority


def _prepare(
    model: Any,
    offpolicy: OffPolicy,
    rows: list[Any],
    cfg: StepConfig,
    device: torch.device | str,
    dp: DataParallel | None,
) -> tuple[list[Any], list[Any], list[Any], dict[int, torch.Tensor]]:
    """This process's plan of `rows` (its optimizer steps, each with its micro-batches), the
    micro-batches in order, their tensors on `device`, and, for decoupled PPO over several
    steps, pi_prox per micro-batch (before any step)."""
    rank, world = (dp.rank, dp.world) if dp is not None else (0, 1)
    lengths = [len(r.tokens) for r in rows]
    empty = {i for i, r in enumerate(rows) if r.completion_len == 0}
    steps = plan(lengths, cfg.token_budget, cfg.mini_steps, rank, world, empty)
    planned = [p for _, mbs in steps for p in mbs]
    tensors = [collate(rows, p.rows, cfg.pad_id).to(device) for p in planned]
    prox: dict[int, torch.Tensor] = {}
    if offpolicy.mode == "decoupled" and len(steps) > 1:
        with torch.no_grad():
            for i, mb in enumerate(tensors):
                prox[i] = _logp(model, mb, cfg, False)[0]
    return steps, planned, tensors, prox


def _micro_step(
    model: Any,
    objective: Objective,
    offpolicy: OffPolicy,
    mb: Any,
    prox: torch.Tensor | None,
    norm: Any,
    cfg: StepConfig,
    *,
    ref_model: Any | None,
    amp: Any,
    scale: float,
    pad: bool = False,
) -> tuple[dict[str, float], list[float]]:
    """Forward and backward of one micro-batch (the loss times `scale`, the world size under
    data parallelism; a `pad` micro-batch, there only to match the other ranks' collectives,
    contributes zero and returns nothing). Returns its metrics and, per row, the mean over
    its tokens of |A| * pi / pi_old (its new priority)."""
    with amp:
        logp, ent = _logp(model, mb, cfg, cfg.entropy)
    anchor = prox if prox is not None else logp.detach()
    old, w, is_metrics = anchor_and_weights(
        offpolicy, logp, mb.behav_logp, mb.completion_mask, anchor
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
    (loss * (0.0 if pad else scale)).backward()
    if pad:
        return {}, []
    with torch.no_grad():
        m = mb.completion_mask
        r = torch.exp((logp.detach() - old).clamp(-20.0, 20.0))
        row_p = (mb.advantages.abs() * r * m).sum(-1) / m.sum(-1).clamp(min=1.0)
    metrics.update(is_metrics)
    metrics["loss"] = float(loss.detach())
    return metrics, row_p.tolist()


def _optimizer_step(
    optimizer: torch.optim.Optimizer, cfg: StepConfig, norms: list[float], lr_scale: float = 1.0
) -> bool:
    """Clip (appending the norm before clipping to `norms`) and step at the lr times
    `lr_scale`; False, with the gradients dropped, when they are not finite."""
    if cfg.max_grad_norm is not None:
        params = [q for g in optimizer.param_groups for q in g["params"]]
        total = torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
        if hasattr(total, "full_tensor"):  # FSDP: a DTensor
            total = total.full_tensor()
        grad_norm = float(total)
        norms.append(grad_norm)
        if not math.isfinite(grad_norm):
            optimizer.zero_grad(set_to_none=True)  # skip a step with inf / nan gradients
            return False
    lrs = [g["lr"] for g in optimizer.param_groups]
    for g, lr in zip(optimizer.param_groups, lrs, strict=True):
        g["lr"] = lr * lr_scale
    optimizer.step()
    for g, lr in zip(optimizer.param_groups, lrs, strict=True):
        g["lr"] = lr
    return True
