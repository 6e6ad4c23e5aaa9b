"""`rollstream run learner [--config run.yaml] [--model DIR]`: train on replay's batches."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from rollstream.services.runtime.config import section
from rollstream.services.runtime.service import StageContext, follow_weights, stage_parser

log = logging.getLogger("rollstream")


def _device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def make_publisher(ctx: StageContext, model_dir: str) -> Any:
    """publisher(model, version, step) -> WeightUpdate, writing into the run's weight store."""
    from rollstream.services.models.weights import publish_version

    run_dir = Path(ctx.args.run_dir or os.getcwd())
    store = ctx.cfg.weights.uri or str(run_dir / "weights")

    def publish(model: Any, version: int, step: int) -> Any:
        return publish_version(
            model,
            store=store,
            policy=ctx.cfg.model.policy,
            version=version,
            step=step,
            model_dir=model_dir,
            keep=ctx.cfg.weights.keep,
            storage_options=ctx.cfg.weights.storage_options,
        )

    return publish


def main(argv: list[str]) -> int:
    parser = stage_parser("learner", "Train the policy on TrainBatches; publish weight versions.")
    parser.add_argument(
        "--model", default=None, help="Hugging Face model dir (default: run config, else built-in)"
    )
    ctx = StageContext.from_argv("learner", argv, parser)
    from rollstream.services.learner.config import LearnerConfig

    try:
        cfg = section(ctx.cfg, "learner", LearnerConfig)
    except ValueError as exc:
        log.error("learner: %s", exc)
        return 2
    import torch

    from rollstream.services.learner.service import LearnerService
    from rollstream.services.learner.trainer import Trainer
    from rollstream.services.models.load import ensure_base_model, load_model, load_tokenizer

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True)
        torch.set_num_threads(1)
    torch.manual_seed(ctx.cfg.seed)
    model_dir = ctx.args.model or ctx.cfg.model.path or str(ensure_base_model())
    device = _device(cfg.device)
    model = load_model(model_dir, device=device, dtype="float32")  # fp32 master weights
    bf16 = device.startswith("cuda") and ctx.cfg.model.dtype in ("auto", "bfloat16")
    tok = load_tokenizer(model_dir)
    trainer = Trainer(
        cfg,
        model,
        device=device,
        autocast_dtype=torch.bfloat16 if bf16 else None,
        total_steps=ctx.cfg.target.steps,
        pad_id=tok.pad_token_id or 0,
    )
    run_dir = Path(ctx.args.run_dir or os.getcwd())
    ckpt = cfg.checkpoint_dir or str(run_dir / "checkpoints" / cfg.learner_id)
    weights = follow_weights(ctx.kafka, "learner", ctx.cfg.model.policy, last=True)
    weights.caught_up.wait(10.0)
    ctx.start()
    svc = LearnerService(
        trainer,
        ctx.kafka,
        ckpt,
        make_publisher(ctx, model_dir),
        ctx.cfg.model.policy,
        ctx.metrics,
        ctx.bus_metrics,
    )
    try:
        svc.start(weights.latest)
        weights.stop()
        return svc.run(lambda: ctx.stopping)
    finally:
        svc.close()
        ctx.close()
