"""Learner settings (the `learner:` block of a run file). Pure config; no I/O."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from rollstream.services.runtime.knobs import check_knobs

# LearnerConfig fields that `rollstream control learner KEY=VALUE` may change while it trains
LIVE_KNOBS = (
    "lr",
    "max_grad_norm",
    "token_budget",
    "prefetch",
    "publish_every",
    "feedback_every_s",
)


class OffPolicyConfig(BaseModel):
    """Off-policy correction from the behaviour log-probs (see offpolicy.py)."""

    model_config = ConfigDict(extra="forbid")

    mode: Literal["none", "tis", "decoupled"] = "tis"
    """none: PPO ratio against the behaviour policy; tis: truncated importance sampling;
    decoupled: decoupled PPO (AReaL) with pi_prox recomputed before a batch's first step."""
    level: Literal["token", "sequence"] = "token"
    """Importance weight per token, or one per sequence (product of its token ratios)."""
    action: Literal["truncate", "mask"] = "truncate"
    """truncate: min(w, cap); mask: zero tokens (sequences) with w > cap or w < cap_min."""
    cap: float = Field(default=2.0, gt=0)
    """Truncation / mask threshold C."""
    cap_min: float = Field(default=0.0, ge=0)
    """Lower mask threshold (mask action only)."""


class LearnerConfig(BaseModel):
    """How the learner trains, asks for data, checkpoints and publishes weights."""

    model_config = ConfigDict(extra="forbid")

    learner_id: str = Field(default="learner", pattern=r"^[A-Za-z0-9_\-.]+$")
    """This learner's id: key of its batches and feedback; replay's `learner_id`."""
    objective: str = "grpo"
    """Policy objective: ppo, grpo, dapo, dr_grpo, gspo, or "package.module:Class"."""
    objective_params: dict[str, Any] = {}
    """Keyword arguments of the objective, e.g. {eps_high: 0.28, kl_coef: 0.01, agg: token-mean,
    max_length: 512}. A `kl_coef` > 0 keeps a frozen copy of the starting model as reference."""
    offpolicy: OffPolicyConfig = OffPolicyConfig()
    lr: float = Field(default=1e-5, gt=0)
    """AdamW learning rate (peak, after warm-up)."""
    lr_batch_groups: int | None = Field(default=None, ge=1)
    """The batch size, in groups, that `lr` is meant for: a batch of n groups steps at
    lr * min(1, n / lr_batch_groups), so that the small batches of an eager replay
    (`replay.min_batch_groups`) each take a proportionally small step. None: every batch
    steps at `lr`."""
    weight_decay: float = Field(default=0.0, ge=0)
    """AdamW decoupled weight decay."""
    betas: tuple[float, float] = (0.9, 0.999)
    """AdamW beta1, beta2."""
    adam_eps: float = Field(default=1e-8, gt=0)
    """AdamW epsilon."""
    schedule: Literal["constant", "linear", "cosine"] = "constant"
    """Learning-rate schedule after warm-up; linear and cosine decay to 0 at `total_steps`."""
    warmup_steps: int = Field(default=0, ge=0)
    """Steps of linear learning-rate warm-up from 0."""
    total_steps: int | None = Field(default=None, ge=1)
    """Steps the schedule decays over (default: the run's target.steps, else constant)."""
    max_grad_norm: float | None = Field(default=1.0, gt=0)
    """Gradient clipping by global norm (None: off)."""
    token_budget: int | None = Field(default=4096, ge=1)
    """Padded tokens per micro-batch; gradients accumulate over micro-batches."""
    share_prompts: bool | Literal["auto"] = "auto"
    """Rows with the same prompt (a group's samples) run it once, forward and backward: the
    same log-probs and gradients (up to float rounding) for fewer tokens, at the price of one
    more pass. On a CPU with the built-in tasks a step takes ~30 % less time; on an H100 with
    the small model it took 57 ms against 32 ms without (the GPU waits on kernel launches,
    not work). auto: the first 8 steps try both ways in turn and the faster a token is kept
    (said in the log); with several processes (DDP, FSDP) or `deterministic`: on, except
    under FSDP, where every rank must run the same passes (off)."""
    mini_steps: int = Field(default=1, ge=1)
    """Optimizer steps per TrainBatch (> 1 makes the PPO clip act)."""
    prefetch: int = Field(default=2, ge=1)
    """Batches asked for ahead of the one being trained (credits outstanding)."""
    publish_every: int = Field(default=1, ge=1)
    """Publish a weight version every this many steps (checkpoints: `checkpoint_every_s`)."""
    checkpoint_every_s: float = Field(default=10.0, ge=0)
    """Seconds between learner checkpoints (model, optimizer, consumed offsets), written with
    the next published version once this long has passed since the last one, and no sooner
    than nine times the last one took (at most a tenth of the learner's time); 0: at every
    version. A crash trains again what came after the last checkpoint, and versions announced
    since are not numbered again."""
    keep_checkpoints: int = Field(default=2, ge=1)
    """How many newest learner checkpoints to keep (older ones are deleted)."""
    feedback_every_s: float = Field(default=2.0, gt=0)
    """Re-send the credit total this often while waiting for data (a lost Feedback heals)."""
    device: str = "auto"
    """auto (cuda if available, else cpu), cpu, cuda, cuda:N (under torchrun: each rank's
    own GPU, LOCAL_RANK)."""
    parallel: Literal["auto", "none", "ddp", "fsdp"] = "auto"
    """Several processes under torchrun (`rollstream run learner --nproc N`): ddp (a replica
    per GPU) or fsdp (FSDP2: parameters, gradients and optimizer state sharded, for models
    that do not fit one GPU); auto: ddp when WORLD_SIZE > 1, else none."""
    deterministic: bool = False
    """Deterministic algorithms and one thread (CPU): the same batches give the same weights."""
    threads: int | None = Field(default=None, ge=1)
    """torch CPU threads of the learner stage (None: torch's default). `--mode sync` runs in
    one process and uses `up.sync_threads` instead."""
    checkpoint_dir: str | None = None
    """Where checkpoints go (default: <run dir>/checkpoints/<learner_id>)."""

    @property
    def consumer_group(self) -> str:
        """The consumer group this learner reads `batches.train` in."""
        return f"learner-{self.learner_id}"


def validate_control(params: dict[str, Any], base: LearnerConfig | None = None) -> LearnerConfig:
    """`base` (defaults if None) with live knobs `params`; ValueError naming an unknown knob
    or a bad value. Used by the learner and by `rollstream control learner` before it
    publishes."""
    return check_knobs(LearnerConfig, base, params, LIVE_KNOBS)
