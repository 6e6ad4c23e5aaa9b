"""Dr. GRPO (arXiv 2503.20783): PPO-clip with no 1/|o_i| length normalisation: each sequence's
token losses are summed and divided by a constant, `max_length` (set it to the generation
budget, the generator's max_tokens), then averaged over sequences (seq-mean-token-sum-norm;
TRL's `dr_grpo`). Pair it with mean-centred advantages (no std), which the filter computes."""

from __future__ import annotations

from dataclasses import dataclass

from rollstream.services.learner.objectives import register
from rollstream.services.learner.objectives.ppo import PPOClip


@register("dr_grpo")
@dataclass
class DrGRPO(PPOClip):
    agg: str = "seq-mean-token-sum-norm"
    max_length: float = 1024.0
