"""Off-policy correction from the behaviour log-probs every sample carries. Pure torch.

Three policies meet in an asynchronous learner: pi_behav (what the generator sampled from,
log-probs on the wire), pi_prox (the learner's weights before this optimizer step) and pi_theta
(being trained). Modes:

- `none`: the PPO ratio is pi_theta / pi_behav and nothing else is corrected ("naive PPO";
  AReaL's table shows it breaking down from 4 versions of staleness).
- `tis`: truncated importance sampling (Yao, Liu et al. 2025). The anchor is pi_theta itself,
  detached (the learner's log-probs of this very forward pass, so the PPO ratio is 1 and the
  update is min(pi/pi_behav, C) * A * d log pi); no extra forward pass.
- `decoupled`: decoupled PPO (AReaL, arXiv 2505.24298). The PPO ratio is pi_theta / pi_prox,
  with pi_prox computed with no_grad before the first update on a batch (the clip then acts
  when a batch takes several optimizer steps), and the behaviour weights pi_prox / pi_behav
  multiply the loss.

For `tis` and `decoupled` the behaviour weight is computed at `level`:
  token:    w_t = exp(old_t - behav_t)
  sequence: w_i = exp(sum_t (old_it - behav_it)), the same for every token of sequence i
then `action="truncate"` gives min(w, cap) (TIS) and `action="mask"` zeroes tokens (or
sequences) with w > cap or w < cap_min (MIS / IcePop; AReaL's `behav_imp_weight_cap`).
Metrics: ratio mean / max / min of the raw weights and the fraction truncated or masked.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor


@dataclass
class OffPolicy:
    mode: Literal["none", "tis", "decoupled"] = "tis"
    level: Literal["token", "sequence"] = "token"
    action: Literal["truncate", "mask"] = "truncate"
    cap: float = 2.0
    cap_min: float = 0.0  # mask action only: weights below this are masked too


def behaviour_weights(
    old_logp: Tensor,
    behav_logp: Tensor,
    mask: Tensor,
    level: str = "token",
    cap: float = 2.0,
    action: str = "truncate",
    cap_min: float = 0.0,
) -> tuple[Tensor, dict[str, float]]:
    """Importance weights (B, T), detached, of `old_logp` against `behav_logp`, and metrics."""
    m = mask.to(old_logp.dtype)
    log_w = ((old_logp - behav_logp) * m).detach()
    if level == "sequence":
        log_w = log_w.sum(-1, keepdim=True).expand_as(log_w)
    elif level != "token":
        raise ValueError(f"unknown IS level {level!r}")
    raw = torch.exp(log_w.clamp(max=50.0))
    if action == "truncate":
        out = raw.clamp(max=cap)
        cut = raw > cap
    elif action == "mask":
        cut = (raw > cap) | (raw < cap_min)
        out = torch.where(cut, torch.zeros_like(raw), raw)
    else:
        raise ValueError(f"unknown IS action {action!r}")
    out = out * m
    # metrics per unit of the level: one value per token, or one per sequence
    if level == "token":
        units = mask.bool()
        r, c, lr = raw[units], cut[units], log_w[units]
    else:
        units = mask.bool().any(-1)
        r, c, lr = raw[:, 0][units], cut[:, 0][units], log_w[:, 0][units]
    if r.numel() == 0:
        return out, {
            "is_ratio_mean": 1.0,
            "is_ratio_max": 1.0,
            "is_ratio_min": 1.0,
            "is_truncated_frac": 0.0,
            "behav_log_ratio": 0.0,
        }
    return out, {
        "is_ratio_mean": float(r.mean()),
        "is_ratio_max": float(r.max()),
        "is_ratio_min": float(r.min()),
        "is_truncated_frac": float(c.float().mean()),
        "behav_log_ratio": float(lr.mean()),  # mean log(pi_old / pi_behav) per unit
    }


def anchor_and_weights(
    cfg: OffPolicy,
    logp: Tensor,
    behav_logp: Tensor,
    mask: Tensor,
    prox_logp: Tensor | None = None,
) -> tuple[Tensor, Tensor | None, dict[str, float]]:
    """(ratio anchor, behaviour weights or None, metrics) for `cfg.mode` (module docstring)."""
    if cfg.mode == "none":
        return behav_logp, None, {}
    if cfg.mode == "decoupled":
        if prox_logp is None:
            raise ValueError("decoupled PPO needs pi_prox: log-probs before this step (no_grad)")
        old = prox_logp.detach()
    elif cfg.mode == "tis":
        old = logp.detach()
    else:
        raise ValueError(f"unknown off-policy mode {cfg.mode!r}")
    if not math.isfinite(cfg.cap) or cfg.cap <= 0:
        raise ValueError("cap must be a positive number")
    w, metrics = behaviour_weights(
        old, behav_logp, mask, cfg.level, cfg.cap, cfg.action, cfg.cap_min
    )
    return old, w, metrics
