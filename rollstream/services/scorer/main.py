"""`rollstream run scorer [--config run.yaml]`: score rollouts.raw into rollouts.scored."""

from __future__ import annotations

import logging

from rollstream.services.runtime.config import section
from rollstream.services.runtime.stage import StageContext, follow_control, stage_parser

log = logging.getLogger("rollstream")


def main(argv: list[str]) -> int:
    parser = stage_parser("scorer", "Score rollouts: rollouts.raw -> rollouts.scored.")
    ctx = StageContext.from_argv("scorer", argv, parser)
    from rollstream.services.scorer.combine import Combiner
    from rollstream.services.scorer.config import ScorerConfig

    try:
        cfg = section(ctx.cfg, "scorer", ScorerConfig)
        combiner = Combiner.from_config(cfg)
    except ValueError as exc:  # ConfigError, RewardConfigError
        log.error("scorer: %s", exc)
        return 2
    from rollstream.services.runtime.faust.app import run_worker
    from rollstream.services.scorer.app import Scorer, build_app
    from rollstream.services.scorer.metrics import register

    ctx.start()
    control = follow_control(ctx.kafka, "scorer")
    scorer = Scorer(combiner, register(ctx.metrics))
    app = build_app(ctx.kafka, cfg, scorer, ctx.bus_metrics, instance=ctx.instance, control=control)
    try:
        return run_worker(app, ctx.args.log_level)
    finally:
        control.stop()
        ctx.close()
