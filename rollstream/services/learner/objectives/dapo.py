"""DAPO (arXiv 2503.14476): clip-higher (eps_low 0.2, eps_high 0.28) and a token-level loss,
the mean over every trained token of the batch (token-mean); no KL."""

from __future__ import annotations

from dataclasses import dataclass

from rollstream.services.learner.objectives import register
from rollstream.services.learner.objectives.ppo import PPOClip


@register("dapo")
@dataclass
class DAPO(PPOClip):
    eps_low: float = 0.2
    eps_high: float = 0.28
    agg: str = "token-mean"
