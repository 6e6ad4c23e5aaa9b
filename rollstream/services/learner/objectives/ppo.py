"""PPO-clip on the token ratio (Schulman et al. 2017), the base of GRPO, DAPO and Dr. GRPO.

    r_t = exp(logp_t - old_logp_t)
    l_t = max(-A_t r_t, -A_t clip(r_t, 1 - eps_low, 1 + eps_high))   [optionally dual-clipped]
    loss = aggregate(w_t l_t + kl_coef k3_t - entropy_coef H_t)

`old_logp` is the ratio's anchor: pi_prox (decoupled PPO / TIS) or the behaviour log-probs;
`w_t` are the off-policy and replay importance weights (see offpolicy.py). Pure torch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from rollstream.services.learner.losses import Norm, PolicyInputs, clipped_surrogate, ratio_metrics
from rollstream.services.learner.objectives import Finishes, register


@register("ppo")
@dataclass
class PPOClip(Finishes):
    """PPO-clip; defaults: eps 0.2 both sides, token-mean aggregation, no KL."""

    eps_low: float = 0.2
    eps_high: float = 0.2
    dual_clip: float | None = None
    agg: str = "token-mean"
    kl_coef: float = 0.0
    entropy_coef: float = 0.0
    max_length: float = 1.0  # only used by seq-mean-token-sum-norm

    def __call__(
        self, inp: PolicyInputs, norm: Norm | None = None
    ) -> tuple[Tensor, dict[str, float]]:
        norm = norm or Norm.of(inp.mask)
        ratio = torch.exp((inp.logp - inp.old_logp).clamp(-20.0, 20.0))
        loss, active = clipped_surrogate(
            ratio, inp.advantages, self.eps_low, self.eps_high, self.dual_clip
        )
        return self.finish(loss, inp, norm, ratio_metrics(ratio, active, inp.advantages, inp.mask))
