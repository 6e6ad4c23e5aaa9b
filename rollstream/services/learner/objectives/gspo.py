"""GSPO (arXiv 2507.18071): a sequence-level ratio, clipped.

    s_i = (pi(y_i) / pi_old(y_i))^(1/|y_i|) = exp(mean_t (logp_it - old_logp_it))
    l_i = max(-A_i s_i, -A_i clip(s_i, 1 - 3e-4, 1 + 4e-4))

Written in verl's token form (`compute_policy_loss_gspo`): every token carries the value s_i
with gradient s_i * d logp_it, so with seq-mean-token-mean aggregation the gradient is exactly
GSPO's s_i * d log s_i, and per-token importance weights and masks still apply. Pure torch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from rollstream.services.learner.losses import Norm, PolicyInputs, clipped_surrogate
from rollstream.services.learner.objectives import Finishes, register


@register("gspo")
@dataclass
class GSPO(Finishes):
    eps_low: float = 3e-4
    eps_high: float = 4e-4
    agg: str = "seq-mean-token-mean"
    kl_coef: float = 0.0
    entropy_coef: float = 0.0
    max_length: float = 1.0

    def __call__(
        self, inp: PolicyInputs, norm: Norm | None = None
    ) -> tuple[Tensor, dict[str, float]]:
        norm = norm or Norm.of(inp.mask)
        m = inp.mask.to(inp.logp.dtype)
        lengths = m.sum(-1).clamp(min=1.0)
        seq_log_ratio = ((inp.logp - inp.old_logp) * m).sum(-1) / lengths  # (B,)
        log_s = inp.logp - inp.logp.detach() + seq_log_ratio.detach().unsqueeze(-1)
        s = torch.exp(log_s.clamp(max=10.0))  # (B, T), value s_i on every token
        loss, active = clipped_surrogate(s, inp.advantages, self.eps_low, self.eps_high)
        seqs = m.sum(-1) > 0
        s_seq = torch.exp(seq_log_ratio.detach().clamp(max=10.0))[seqs]
        clipped_seq = (active & inp.mask.bool()).any(-1)[seqs]
        metrics = {
            "clip_frac": float(clipped_seq.float().mean()) if s_seq.numel() else 0.0,
            "ratio_mean": float(s_seq.mean()) if s_seq.numel() else 1.0,
            "ratio_max": float(s_seq.max()) if s_seq.numel() else 1.0,
            "ratio_min": float(s_seq.min()) if s_seq.numel() else 1.0,
        }
        return self.finish(loss, inp, norm, metrics)
