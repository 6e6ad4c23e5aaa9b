"""`rollstream run learner [--config run.yaml] [--model DIR] [--nproc N]`: train on replay's
batches.

Several GPUs: `--nproc N` re-runs the command under torchrun (`python -m torch.distributed.run
--standalone --nproc-per-node N -m rollstream.services.cli run learner ...`); torchrun can also
be called directly, e.g. across machines. Rank 0 runs the Kafka loop (service.py), the other
ranks serve it (trainer.serve); `learner.parallel` picks DDP or FSDP2 (distributed.py).
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

from rollstream.services.runtime.bus import Consumer, Producer, join_group
from rollstream.services.runtime.config import section
from rollstream.services.runtime.stage import (
    StageContext,
    follow_control,
    follow_weights,
    stage_parser,
)

log = logging.getLogger("rollstream")


def make_publisher(ctx: StageContext, model_dir: str, bf16: bool = False) -> Any:
    """publisher(model, version, step) -> WeightUpdate, writing into the run's weight store
    (in bf16 when the learner computes in bf16 and weights.wire_dtype is auto)."""
    from rollstream.services.models.weights import default_store, publish_version

    store = default_store(ctx.cfg.weights.uri, ctx.args.run_dir or os.getcwd())
    wire = ctx.cfg.weights.wire_dtype
    wire_dtype = ("bfloat16" if bf16 else None) if wire == "auto" else wire

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
            wire_dtype=wire_dtype,
        )

    return publish


def torchrun_argv(argv: list[str], nproc: int) -> list[str]:
    """This command under torchrun with `nproc` processes on this machine, without --nproc."""
    rest: list[str] = []
    skip = False
    for a in argv:
        if skip:
            skip = False
        elif a == "--nproc":
            skip = True
        elif not a.startswith("--nproc="):
            rest.append(a)
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={nproc}",
        "-m",
        "rollstream.services.cli",
        "run",
        "learner",
        *rest,
    ]


def build_trainer(ctx: StageContext, cfg: Any, par: Any) -> tuple[Any, str]:
    """(the Trainer, the model's directory): model, tokenizer, device, precision."""
    import torch

    from rollstream.services.learner.trainer import Trainer
    from rollstream.services.models.load import (
        describe,
        load_model,
        load_tokenizer,
        model_dir_of,
        resolve_device,
    )

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True)
        torch.set_num_threads(1)
    model_dir = model_dir_of(ctx.cfg.model, ctx.args.model)  # a build here seeds torch: first
    torch.manual_seed(ctx.cfg.seed)
    device = par.device if par is not None else resolve_device(cfg.device)
    # fp32 master weights; FSDP shards from CPU, one block at a time onto the GPU
    load_on = "cpu" if par is not None and par.fsdp else device
    model = load_model(model_dir, device=load_on, dtype="float32")
    bf16 = device.startswith("cuda") and ctx.cfg.model.dtype in ("auto", "bfloat16")
    tok = load_tokenizer(model_dir)
    log.info(
        "learner: %s (%s), compute %s, master weights float32",
        describe(model),
        model_dir,
        "bfloat16 autocast" if bf16 else "float32",
    )
    trainer = Trainer(
        cfg,
        model,
        device=device,
        autocast_dtype=torch.bfloat16 if bf16 else None,
        total_steps=ctx.cfg.target.steps,
        pad_id=tok.pad_token_id or 0,
        parallel=par,
    )
    return trainer, model_dir


def main(argv: list[str]) -> int:
    parser = stage_parser("learner", "Train the policy on TrainBatches; publish weight versions.")
    parser.add_argument(
        "--model", default=None, help="Hugging Face model dir (default: run config, else built-in)"
    )
    parser.add_argument(
        "--nproc",
        type=int,
        default=None,
        help="processes (GPUs) on this machine: re-runs this command under torchrun",
    )
    ctx = StageContext.from_argv("learner", argv, parser)
    if (ctx.args.nproc or 1) > 1 and "WORLD_SIZE" not in os.environ:
        cmd = torchrun_argv(argv, ctx.args.nproc)
        log.info("learner: %s", " ".join(cmd))
        os.execv(cmd[0], cmd)
    from rollstream.services.learner import distributed
    from rollstream.services.learner.config import LearnerConfig

    try:
        cfg = section(ctx.cfg, "learner", LearnerConfig)
        par = distributed.setup(cfg.parallel, cfg.device)
    except ValueError as exc:
        log.error("learner: %s", exc)
        return 2
    try:
        joined = None
        if par is None or par.is_main:  # the group join runs while the model loads
            group, metrics = cfg.consumer_group, ctx.bus_metrics
            joined = join_group(ctx.kafka, "learner", ["batches.train"], group, metrics)
        trainer, model_dir = build_trainer(ctx, cfg, par)
        if par is not None and not par.is_main:
            distributed.ignore_stop_signals()
            return trainer.serve()
        return run_main(ctx, cfg, trainer, model_dir, joined)
    finally:
        if par is not None:
            par.close()
        ctx.close()


def run_main(
    ctx: StageContext,
    cfg: Any,
    trainer: Any,
    model_dir: str,
    joined: tuple[Producer, Consumer] | None = None,
) -> int:
    """Rank 0 (or the only process): the Kafka loop until SIGTERM, then a last checkpoint."""
    from rollstream.services.learner.service import Learner

    run_dir = Path(ctx.args.run_dir or os.getcwd())
    ckpt = cfg.checkpoint_dir or str(run_dir / "checkpoints" / cfg.learner_id)
    weights = follow_weights(ctx.kafka, "learner", ctx.cfg.model.policy, last=True)
    weights.caught_up.wait(10.0)
    ctx.start()
    svc = Learner(
        trainer,
        ctx.kafka,
        ckpt,
        make_publisher(ctx, model_dir, bf16=trainer.autocast_dtype is not None),
        ctx.cfg.model.policy,
        ctx.metrics,
        ctx.bus_metrics,
        follow_control(ctx.kafka, "learner"),
        joined,
    )
    try:
        svc.start(weights.latest)
        weights.stop()
        return svc.run(lambda: ctx.stopping)
    finally:
        try:
            svc.close()
        finally:
            trainer.close()  # the other ranks return from serve
