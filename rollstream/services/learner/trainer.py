"""The learner's state machine without Kafka: model, optimizer, schedule, objective, the ids
of trained batches, checkpoints. The service (service.py) feeds it TrainBatches and publishes
what it returns. Torch; writes only checkpoints (checkpoint.py).

Exactly-once in effect: `train` skips a batch_id it has trained (the ids live in the
checkpoint), so batches re-read after a restart from the last checkpoint's offsets are either
skipped (already in the checkpointed weights) or trained for the first time since the weights
rolled back to the checkpoint: none twice, none skipped.

Several processes (`parallel`, see distributed.py): rank 0's `train`, `save`, `resume`,
`publishable` and `idle` first tell the other ranks what to do; those run `serve`, which does
their part of the same collectives until rank 0's `close`.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import math
import statistics
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import torch

from rollstream.schemas import Feedback, TrainBatch, decode, encode
from rollstream.services.learner import checkpoint
from rollstream.services.learner import distributed as d
from rollstream.services.learner.batching import rows_of
from rollstream.services.learner.config import LearnerConfig
from rollstream.services.learner.objectives import make_objective
from rollstream.services.learner.offpolicy import OffPolicy
from rollstream.services.learner.step import StepConfig, train_on_batch

REMEMBER_BATCHES = 100_000


log = logging.getLogger(__name__)


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


# an empty batch to check one item at a time with rows_of
_ONE = TrainBatch(batch_id="", learner_id="", seq=1, items=[], learner_version=0, produced_at=0.0)


def _fused(params: list[torch.Tensor]) -> bool | None:
    """True on CUDA with plain float parameters; None (torch's own choice) otherwise."""
    plain = all(
        p.is_cuda and p.is_floating_point() and type(p) is torch.nn.Parameter for p in params
    )
    return True if params and plain else None


class PromptSharing:
    """`learner.share_prompts: auto`: whether running a group's prompt once is faster here,
    measured on the run's own batches. The two ways give the same log-probs and gradients up
    to float rounding, so the choice changes only the time: steps alternate between them by
    the step's parity (a resumed learner takes the way it would have taken), the first of each
    untimed (first-use allocations), and after `STEPS` the one with the lower median seconds
    a token is kept (and checkpointed)."""

    STEPS = 8

    def __init__(self) -> None:
        self.chosen: bool | None = None
        self.seconds: dict[bool, list[float]] = {True: [], False: []}
        self.steps = 0

    def next(self, step: int) -> bool:
        return self.chosen if self.chosen is not None else step % 2 == 0

    def took(self, share: bool, seconds: float, tokens: int) -> None:
        if self.chosen is not None:
            return
        self.steps += 1
        if self.steps > 2:
            self.seconds[share].append(seconds / max(tokens, 1))
        if self.steps < self.STEPS:
            return
        on, off = (statistics.median(self.seconds[k]) * 1e6 for k in (True, False))
        self.chosen = on <= off
        log.info(
            "learner: prompts %s (a token: %.2f us shared, %.2f us not)",
            "shared" if self.chosen else "not shared",
            on,
            off,
        )


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
        parallel: d.Parallel | None = None,
    ) -> None:
        self.cfg = cfg
        self.model = model  # the causal LM (its parameters sharded in place under FSDP)
        self.device = device
        self.autocast_dtype = autocast_dtype
        self.par = parallel
        self.model.eval()  # no dropout: pi_prox and pi_theta must agree before a step
        self.objective = make_objective(cfg.objective, **cfg.objective_params)
        self.ref_model = None
        if float(cfg.objective_params.get("kl_coef", 0.0)) > 0:
            self.ref_model = copy.deepcopy(model).requires_grad_(False)
        # what forward and backward go through: the model, or DDP / FSDP of it
        self.module = parallel.wrap(model) if parallel else model
        self.module.eval()
        if parallel is not None and self.ref_model is not None:
            self.ref_model = parallel.wrap_frozen(self.ref_model)
        self._gathered: tuple[int, dict[str, torch.Tensor]] | None = None
        fsdp = parallel is not None and parallel.fsdp
        params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(
            params,
            lr=cfg.lr,
            betas=cfg.betas,
            eps=cfg.adam_eps,
            weight_decay=cfg.weight_decay,
            # one kernel for every parameter's update on a GPU (not under FSDP's DTensors)
            fused=None if fsdp else _fused(params),
        )
        steps = cfg.total_steps or total_steps
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_lambda(cfg, steps))
        self.offpolicy = OffPolicy(**cfg.offpolicy.model_dump())
        auto = cfg.share_prompts == "auto" and parallel is None and not cfg.deterministic
        self.sharing = PromptSharing() if auto else None
        self.step_cfg = StepConfig(
            token_budget=cfg.token_budget,
            mini_steps=cfg.mini_steps,
            max_grad_norm=cfg.max_grad_norm,
            # not under FSDP: every rank must run the same passes (each all-gathers the
            # weights), and whether two rows share a prompt differs between the ranks' rows
            share_prompts=cfg.share_prompts is not False and not fsdp,
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

    def receive(self, batch: TrainBatch) -> bool:
        """Note a batch as received before training it; True when that raised
        `credits_total` (the caller sends Feedback at once, so replay builds the next batch
        while this one trains: `prefetch` batches queued behind the one in training)."""
        if batch.learner_id != self.cfg.learner_id or batch.seq <= self.seq:
            return False
        self.seq = batch.seq
        return True

    def train(self, batch: TrainBatch) -> StepResult | None:
        """Train on a batch for this learner; None when it is another learner's or a repeat.

        Items that cannot be trained (a token id outside the vocabulary, an empty prompt) are
        left out and named in `self.rejected` as (group_id, why); the caller dead-letters them.
        A batch of nothing but such items trains nothing and returns None."""
        self.rejected: list[tuple[str, str]] = []
        if batch.learner_id != self.cfg.learner_id:
            return None
        self.seq = max(self.seq, batch.seq)
        if batch.batch_id in self.trained:
            return None
        good = []
        for item in batch.items:
            why = self.unusable(item)
            if why:
                self.rejected.append((item.group.group_id, why))
            else:
                good.append(item)
        if self.rejected:
            if not good:
                return None
            batch = msgspec.structs.replace(batch, items=good)
        self._command(d.TRAIN, encode(batch))
        return self.apply(batch)

    def unusable(self, item: Any) -> str:
        """Why a batch item cannot be trained ("" if it can): checked before any rank sees it,
        so a forged row is refused instead of crashing the step on every restart."""
        vocab = self.model.get_input_embeddings().num_embeddings
        try:
            rows = rows_of(msgspec.structs.replace(_ONE, items=[item]))
        except ValueError as exc:
            return str(exc)
        for r in rows:
            if len(r.tokens) and (int(r.tokens.min()) < 0 or int(r.tokens.max()) >= vocab):
                return f"{r.rollout_id}: token id outside the vocabulary (0..{vocab - 1})"
        return ""

    def apply(self, batch: TrainBatch) -> StepResult:
        """Train on `batch`, unchecked (every rank of a data-parallel learner runs this)."""
        if self.sharing is not None:
            self.step_cfg.share_prompts = self.sharing.next(self.step)
        t0 = time.perf_counter()
        ref = self.cfg.lr_batch_groups
        scale = 1.0 if ref is None else min(1.0, len(batch.items) / ref)
        metrics, prio = train_on_batch(
            self.module,
            self.optimizer,
            self.objective,
            self.offpolicy,
            batch,
            self.step_cfg,
            ref_model=self.ref_model,
            scheduler=self.scheduler,
            device=self.device,
            autocast_dtype=self.autocast_dtype,
            dp=self.par,
            lr_scale=scale,
        )
        if scale != 1.0:
            metrics["lr_scale"] = scale
        rows = rows_of(batch)
        if self.sharing is not None:
            took = time.perf_counter() - t0
            self.sharing.took(self.step_cfg.share_prompts, took, sum(len(r.tokens) for r in rows))
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
    def save(self, root: str | Path) -> Path | None:
        """Write a checkpoint under `root` (rank 0; the path, or None on other ranks)."""
        info = {
            "version": self.version,
            "seq": self.seq,
            "offsets": self.offsets,
            "trained": list(self.trained),
            "learner_id": self.cfg.learner_id,
            "share_prompts": self.sharing.chosen if self.sharing else None,
        }
        states: dict[str, Any] = {}
        if self.par is not None and self.par.fsdp:
            self._command(d.SAVE)
            states = self._full_states()
        if self.par is not None and not self.par.is_main:
            return None
        return checkpoint.save(
            root,
            self.step,
            self.model,
            self.optimizer,
            info,
            self.scheduler,
            keep=self.cfg.keep_checkpoints,
            **states,
        )

    def resume(self, root: str | Path) -> bool:
        """Load the newest checkpoint under `root` if there is one (every rank loads the one
        rank 0 found)."""
        path = checkpoint.latest(root)
        self._command(d.RESUME, str(path or "").encode())
        if path is None:
            return False
        self.load(path)
        return True

    def load(self, path: str | Path) -> None:
        """Load the checkpoint at `path`: weights, optimizer, schedule, counters, trained ids."""
        if self.par is not None and self.par.fsdp:
            model_state, optimizer_state, info = checkpoint.read(path)
            self.par.load_state(self.model, self.optimizer, model_state, optimizer_state)
            if info["scheduler"] is not None:
                self.scheduler.load_state_dict(info["scheduler"])
        else:
            info = checkpoint.load(path, self.model, self.optimizer, self.scheduler)
        self.step = int(info["step"])
        self.version = int(info["version"])
        self.seq = int(info["seq"])
        self.offsets = {k: int(v) for k, v in info["offsets"].items()}
        self.trained = OrderedDict.fromkeys(info["trained"])
        if self.sharing is not None and info.get("share_prompts") is not None:
            self.sharing.chosen = bool(info["share_prompts"])

    # ---- live knobs ---------------------------------------------------------------------------
    def set_knobs(self, cfg: LearnerConfig, changed: frozenset[str]) -> None:
        """Take the live knobs of `cfg` (config.LIVE_KNOBS) from the next step on, on every
        rank: the peak lr (the schedule's multiplier is kept), clipping, micro-batch budget;
        prefetch, publish_every and feedback_every_s are rank 0's."""
        knobs = {k: getattr(cfg, k) for k in sorted(changed)}
        self._command(d.KNOBS, json.dumps(knobs).encode())
        self._set_knobs(knobs)

    def _set_knobs(self, knobs: dict[str, Any]) -> None:
        self.cfg = self.cfg.model_copy(update=knobs)
        self.step_cfg = dataclasses.replace(
            self.step_cfg, max_grad_norm=self.cfg.max_grad_norm, token_budget=self.cfg.token_budget
        )
        if "lr" in knobs:
            s = self.scheduler
            s.base_lrs = [self.cfg.lr] * len(s.base_lrs)
            for group, fn in zip(self.optimizer.param_groups, s.lr_lambdas, strict=True):
                group["initial_lr"] = self.cfg.lr
                group["lr"] = self.cfg.lr * fn(s.last_epoch)

    @property
    def lr(self) -> float:
        """The learning rate of the next optimizer step."""
        return float(self.optimizer.param_groups[0]["lr"])

    # ---- publishing and the other ranks -----------------------------------------------------
    def publishable(self) -> Any:
        """What to publish: the model, or under FSDP its full state gathered on rank 0 (with
        its config), reusing the state just gathered for a checkpoint of the same step."""
        if self.par is None or not self.par.fsdp:
            return self.model
        if self._gathered is None or self._gathered[0] != self.step:
            self._command(d.GATHER)
            self._gathered = (self.step, self.par.model_state(self.model))
        state, self._gathered = self._gathered[1], None
        return d.FullModel(state, getattr(self.model, "config", None))

    def _full_states(self) -> dict[str, Any]:
        """FSDP: full model and optimizer states (collectives; on rank 0 only)."""
        assert self.par is not None
        model_state = self.par.model_state(self.model)
        optimizer_state = self.par.optimizer_state(self.model, self.optimizer)
        self._gathered = (self.step, model_state) if self.par.is_main else None
        return {"model_state": model_state, "optimizer_state": optimizer_state}

    def _command(self, command: int, payload: bytes = b"") -> None:
        if self.par is not None and self.par.is_main:
            self.par.send(command, payload)

    def idle(self) -> None:
        """Rank 0 waits for data: tell the other ranks (their collective must not time out)."""
        self._command(d.IDLE)

    def close(self) -> None:
        """Rank 0: let the other ranks return from `serve`."""
        self._command(d.STOP)

    def serve(self) -> int:
        """The loop of ranks > 0: do rank 0's commands until STOP; returns 0."""
        assert self.par is not None and not self.par.is_main
        while True:
            command, payload = self.par.receive()
            if command == d.TRAIN:
                self.apply(decode(payload, TrainBatch))
            elif command == d.RESUME and payload:
                self.load(payload.decode())
            elif command == d.GATHER:
                self.par.model_state(self.model)
            elif command == d.SAVE:
                self._full_states()
            elif command == d.KNOBS:
                self._set_knobs(json.loads(payload))
            elif command == d.STOP:
                return 0
