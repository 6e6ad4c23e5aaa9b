"""`rollstream run evaluator [--config run.yaml] [--model DIR]`: held-out accuracy per version."""

from __future__ import annotations

import logging

from rollstream.services.runtime.config import section
from rollstream.services.runtime.stage import StageContext, stage_parser

log = logging.getLogger("rollstream")


def main(argv: list[str]) -> int:
    parser = stage_parser("evaluator", "Publish held-out greedy accuracy of each new version.")
    parser.add_argument(
        "--model", default=None, help="starting model dir (default: run config, else built-in)"
    )
    ctx = StageContext.from_argv("evaluator", argv, parser)
    from rollstream.services.evaluator.config import EvaluatorConfig
    from rollstream.services.evaluator.service import Evaluator, eval_items

    try:
        cfg = section(ctx.cfg, "evaluator", EvaluatorConfig)
        items = eval_items(cfg.task_entries(ctx.cfg.feed), cfg.items_per_task)
    except ValueError as exc:  # ConfigError, TaskError
        log.error("evaluator: %s", exc)
        return 2
    if cfg.threads:
        import torch

        torch.set_num_threads(cfg.threads)
    from rollstream.services.models.load import model_dir_of

    user_model = (ctx.args.model or ctx.cfg.model.path) is not None
    model_dir = model_dir_of(ctx.cfg.model, ctx.args.model)
    from rollstream.services.models.weights import default_store

    ev = Evaluator(
        cfg,
        ctx.kafka,
        run=ctx.cfg.name,
        policy=ctx.cfg.model.policy,
        model_dir=model_dir,
        items=items,
        metrics=ctx.metrics,
        bus_metrics=ctx.bus_metrics,
        store=default_store(ctx.cfg.weights.uri, ctx.args.run_dir),
        template=ctx.cfg.model.template,
        system_prompt=ctx.cfg.model.system_prompt,
        user_model=user_model,
    )
    ctx.start()
    try:
        return ev.run(lambda: ctx.stopping)
    finally:
        ev.close()
        ctx.close()
