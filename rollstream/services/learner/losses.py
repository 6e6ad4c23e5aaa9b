"""Building blocks every policy objective shares: inputs, loss aggregation, the clipped
surrogate, the k3 KL estimator and the metrics. Pure torch; no I/O.

Every per-token tensor is (B, T) and aligned to tokens: position t holds the quantity of
token t; `mask` is 1 on the completion tokens that are trained and 0 elsewhere.

Aggregation (verl `agg_loss` names) with the whole batch's denominators in `Norm`, so that the
losses of micro-batches add up to the loss of the full batch (gradient accumulation is exact):

    token-mean                sum_{i,t} l_it m_it / tokens                       (DAPO)
    seq-mean-token-mean       sum_i [sum_t l_it m_it / sum_t m_it] / seqs        (GRPO, GSPO)
    seq-mean-token-sum        sum_{i,t} l_it m_it / seqs
    seq-mean-token-sum-norm   sum_{i,t} l_it m_it / (seqs * max_length)          (Dr. GRPO)

`max_length` is a constant of the objective (Dr. GRPO: the generation budget), not a length
measured in the batch, so the loss scale does not move with the lengths sampled.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

AGG_MODES = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm")


@dataclass
class PolicyInputs:
    """What an objective needs for one (micro-)batch; all (B, T)."""

    logp: Tensor  # learner log-probs of the tokens, with grad
    old_logp: Tensor  # anchor of the ratio: pi_prox (decoupled / TIS) or pi_behav; no grad
    advantages: Tensor  # advantage of each token (its sample's advantage)
    mask: Tensor  # 1 on trained completion tokens
    weights: Tensor | None = None  # per-token multiplier, no grad: IS weights x replay weights
    ref_logp: Tensor | None = None  # reference model log-probs, for the KL penalty
    entropy: Tensor | None = None  # per-token entropy of the learner's distribution


@dataclass
class Norm:
    """Denominators of the whole batch (not of one micro-batch)."""

    tokens: float  # trained completion tokens in the batch
    seqs: float  # sequences in the batch

    @classmethod
    def of(cls, mask: Tensor) -> Norm:
        """Denominators of a batch given as one (B, T) mask."""
        return cls(tokens=max(float(mask.sum()), 1.0), seqs=max(float(mask.shape[0]), 1.0))


def aggregate(loss: Tensor, mask: Tensor, mode: str, norm: Norm, max_length: float = 1.0) -> Tensor:
    """Scalar loss from per-token `loss` (B, T) under aggregation `mode` (module docstring)."""
    m = mask.to(loss.dtype)
    masked = loss * m
    if mode == "token-mean":
        return masked.sum() / norm.tokens
    if mode == "seq-mean-token-mean":
        return (masked.sum(-1) / m.sum(-1).clamp(min=1.0)).sum() / norm.seqs
    if mode == "seq-mean-token-sum":
        return masked.sum() / norm.seqs
    if mode == "seq-mean-token-sum-norm":
        return masked.sum() / (norm.seqs * max_length)
    raise ValueError(f"unknown loss aggregation {mode!r}; one of {AGG_MODES}")


def clipped_surrogate(
    ratio: Tensor, adv: Tensor, eps_low: float, eps_high: float, dual_clip: float | None = None
) -> tuple[Tensor, Tensor]:
    """PPO-clip per-token loss max(-A r, -A clip(r, 1-eps_low, 1+eps_high)) and where the clip
    is active (its branch is the larger, so the token gives no gradient). With `dual_clip` c > 1,
    tokens with A < 0 are also bounded by -A c (Ye et al. 2020)."""
    unclipped = -adv * ratio
    clipped = -adv * ratio.clamp(1.0 - eps_low, 1.0 + eps_high)
    loss = torch.maximum(unclipped, clipped)
    active = clipped > unclipped
    if dual_clip is not None:
        bound = -adv * dual_clip
        dual = (adv < 0) & (loss > bound)
        loss = torch.where(dual, bound, loss)
        active = active | dual
    return loss, active


def k3_kl(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """Per-token k3 estimator of KL(pi || pi_ref): exp(d) - d - 1 with d = ref - logp (>= 0)."""
    d = (ref_logp - logp).clamp(-20.0, 20.0)
    return torch.exp(d) - d - 1.0


def masked_mean(x: Tensor, mask: Tensor) -> float:
    m = mask.to(x.dtype)
    return float((x * m).sum() / m.sum().clamp(min=1.0))


def finish(
    pg_loss: Tensor,
    inp: PolicyInputs,
    agg: str,
    norm: Norm,
    *,
    max_length: float = 1.0,
    kl_coef: float = 0.0,
    entropy_coef: float = 0.0,
    metrics: dict[str, float] | None = None,
) -> tuple[Tensor, dict[str, float]]:
    """Weight the per-token policy loss, add the KL penalty and entropy bonus, aggregate.

    Importance weights multiply the policy-gradient term only (as verl and AReaL do); the KL
    and entropy terms are not re-weighted."""
    out = dict(metrics or {})
    total = pg_loss if inp.weights is None else pg_loss * inp.weights
    mask = inp.mask
    out["pg_loss"] = float(aggregate(total.detach(), mask, agg, norm, max_length))
    if inp.ref_logp is not None and kl_coef:
        kl = k3_kl(inp.logp, inp.ref_logp)
        total = total + kl_coef * kl
        out["kl"] = masked_mean(kl.detach(), mask)
    elif inp.ref_logp is not None:
        out["kl"] = masked_mean(k3_kl(inp.logp.detach(), inp.ref_logp), mask)
    if inp.entropy is not None:
        out["entropy"] = masked_mean(inp.entropy.detach(), mask)
        if entropy_coef:
            total = total - entropy_coef * inp.entropy
    out["tokens"] = float(mask.sum())
    return aggregate(total, mask, agg, norm, max_length), out


def ratio_metrics(ratio: Tensor, active: Tensor, adv: Tensor, mask: Tensor) -> dict[str, float]:
    """Ratio mean/max/min and the clip fractions over the trained tokens."""
    m = mask.bool()
    r = ratio.detach()[m]
    if r.numel() == 0:
        return {"clip_frac": 0.0, "ratio_mean": 1.0, "ratio_max": 1.0, "ratio_min": 1.0}
    a = adv[m]
    act = active[m]
    return {
        "clip_frac": float(act.float().mean()),
        "clip_frac_low": float((act & (a < 0)).float().mean()),
        "clip_frac_high": float((act & (a > 0)).float().mean()),
        "ratio_mean": float(r.mean()),
        "ratio_max": float(r.max()),
        "ratio_min": float(r.min()),
    }
