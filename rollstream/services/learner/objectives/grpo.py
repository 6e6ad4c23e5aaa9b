"""GRPO (DeepSeekMath, arXiv 2402.03300): PPO-clip on the token ratio, eps 0.2, each sequence's
token losses averaged, then the sequences averaged (seq-mean-token-mean); optional k3 KL to a
reference model with `kl_coef` (the paper used 0.04; 0 turns it off, the default here)."""

from __future__ import annotations

from dataclasses import dataclass

from rollstream.services.learner.objectives import register
from rollstream.services.learner.objectives.ppo import PPOClip


@register("grpo")
@dataclass
class GRPO(PPOClip):
    agg: str = "seq-mean-token-mean"
