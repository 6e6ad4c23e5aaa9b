"""The learner's state machine without Kafka: model, optimizer, schedule, objective, the ids
of trained batches, checkpoints. The service (service.py) feeds it TrainBatches and publishes
what it returns. Torch; writes only checkpoints (checkpoint.py).

Exactly-once in effect: `train` skips a batch_id it has trained (the ids live in the
checkpoint), so batches re-read after a restart from the last checkpoint's offsets are either
skipped (already in the checkpointed weights) or trained for the first time since the weights
rolled back to the checkpoint: none twice, none skipped.
"""

from __future__ import annotations

import copy
import math
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from rollstream.schemas import Feedback, TrainBatch
from rollstream.services.learner import checkpoint
from rollstream.services.learner.batching import rows_of
from rollstream.services.learner.config import LearnerConfig
from rollstream.services.learner.objectives import make_objective
from rollstream.services.learner.offpolicy import OffPolicy
from rollstream.services.learner.step import StepConfig, train_on_batch

REMEMBER_BATCHES = 100_000


def lr_lambda(cfg: LearnerConfig, total_steps: int | None):  # -> Callable[[int], float]
    """Multiplier of the peak lr at optimizer step s: linear warm-up, then the schedule."""

    def f(s: int) -> float:
        if cfg.warmup_steps and s < cfg.warmup_steps:
            return (s + 1) / cfg.warmup_steps
        if cfg.schedule == "constant" or not total_steps:
            return 1.0
        span = max(1, total_steps - cfg.warmup_steps)
        done = min(1.0, (s - cfg.warmup_steps) / span)
        if cfg.schedule == "linear":
            return 1.0 - done
        return 0.5 * (1.0 + math.cos(math.pi * done))

    return f


@dataclass
class StepResult:
    """What one trained batch produced."""

    batch_id: str
    metrics: dict[str, float]
    groups: list[str]
    rollouts: int
    tokens: int
    priorities: dict[str, float]
    staleness: list[int] = field(default_factory=list)  # learner version - sample version
    compute_s: float = 0.0


class Trainer:
    """Trains a causal LM on TrainBatches; keeps step, version, credits and trained ids."""

    def __init__(
        self,
        cfg: LearnerConfig,
        model: torch.nn.Module,
        *,
        device: str = "cpu",
        autocast_dtype: torch.dtype | None = None,
        total_steps: int | None = None,
        pad_id: int = 0,
    ) -> None:
        self.cfg = cfg
        self.model = model
        self.device = device
        self.autocast_dtype = autocast_dtype
        self.model.eval()  # no dropout: pi_prox and pi_theta must agree before a step
        self.objective = make_objective(cfg.objective, **cfg.objective_params)
        self.ref_model = None
        if float(cfg.objective_params.get("kl_coef", 0.0)) > 0:
            self.ref_model = copy.deepcopy(model).requires_grad_(False)
        self.optimizer = torch.optim.AdamW(
            [p for p in model.parameters() if p.requires_grad],
            lr=cfg.lr,
            betas=cfg.betas,
            eps=cfg.adam_eps,
            weight_decay=cfg.weight_decay,
        )
        steps = cfg.total_steps or total_steps
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_lambda(cfg, steps))
        self.offpolicy = OffPolicy(**cfg.offpolicy.model_dump())
        self.step_cfg = StepConfig(
            token_budget=cfg.token_budget,
            mini_steps=cfg.mini_steps,
            max_grad_norm=cfg.max_grad_norm,
            pad_id=pad_id,
        )
        self.step = 0  # batches trained
        self.version = 0  # newest weight version published (0: the starting weights)
        self.seq = 0  # highest batch seq received
        self.offsets: dict[str, int] = {}  # "topic:partition" -> next offset (at checkpoint)
        self.trained: OrderedDict[str, None] = OrderedDict()

    @property
    def credits_total(self) -> int:
        """Batches asked for in total: every batch received so far plus `prefetch` more."""
        return self.seq + self.cfg.prefetch

    def train(self, batch: TrainBatch) -> StepResult | None:
        """Train on a batch for this learner; None when it is another learner's or a repeat."""
        if batch.learner_id != self.cfg.learner_id:
            return None
        self.seq = max(self.seq, batch.seq)
        if batch.batch_id in self.trained:
            return None
        t0 = time.perf_counter()
        metrics, prio = train_on_batch(
            self.model,
            self.optimizer,
            self.objective,
            self.offpolicy,
            batch,
            self.step_cfg,
            ref_model=self.ref_model,
            scheduler=self.scheduler,
            device=self.device,
            autocast_dtype=self.autocast_dtype,
        )
        rows = rows_of(batch)
        self.step += 1
        self.trained[batch.batch_id] = None
        if len(self.trained) > REMEMBER_BATCHES:
            self.trained.popitem(last=False)
        per_group: dict[str, list[float]] = {}
        for row, p in zip(rows, prio, strict=True):
            per_group.setdefault(row.group_id, []).append(p)
        return StepResult(
            batch_id=batch.batch_id,
            metrics=metrics,
            groups=[item.group.group_id for item in batch.items],
            rollouts=len(rows),
            tokens=sum(r.completion_len for r in rows),
            priorities={g: sum(v) / len(v) for g, v in per_group.items()},
            staleness=[self.version - r.policy_version for r in rows],
            compute_s=time.perf_counter() - t0,
        )

    def feedback(self, result: StepResult | None = None) -> Feedback:
        """The Feedback to send now: credits, version, step, and what was just trained."""
        return Feedback(
            learner_id=self.cfg.learner_id,
            credits_total=self.credits_total,
            learner_version=self.version,
            step=self.step,
            trained_batches=[result.batch_id] if result else [],
            trained_groups=result.groups if result else [],
            trained_rollouts=result.rollouts if result else 0,
            priorities=result.priorities if result else {},
            produced_at=time.time(),
        )

    # ---- checkpoints ----------------------------------------------------------------------
    def save(self, root: str | Path) -> Path:
        info = {
            "version": self.version,
            "seq": self.seq,
            "offsets": self.offsets,
            "trained": list(self.trained),
            "learner_id": self.cfg.learner_id,
        }
        return checkpoint.save(
            root,
            self.step,
            self.model,
            self.optimizer,
            info,
            self.scheduler,
            keep=self.cfg.keep_checkpoints,
        )

    def resume(self, root: str | Path) -> bool:
        """Load the newest checkpoint under `root` if there is one."""
        path = checkpoint.latest(root)
        if path is None:
            return False
        info: dict[str, Any] = checkpoint.load(path, self.model, self.optimizer, self.scheduler)
        self.step = int(info["step"])
        self.version = int(info["version"])
        self.seq = int(info["seq"])
        self.offsets = {k: int(v) for k, v in info["offsets"].items()}
        self.trained = OrderedDict.fromkeys(info["trained"])
        return True
