"""`rollstream run replay [--config run.yaml]`: the buffer between filter and learner."""

from __future__ import annotations

import logging

from rollstream.services.runtime.config import section
from rollstream.services.runtime.stage import StageContext, follow_control, stage_parser

log = logging.getLogger("rollstream")


def main(argv: list[str]) -> int:
    parser = stage_parser("replay", "Buffer kept groups; send TrainBatches against credits.")
    ctx = StageContext.from_argv("replay", argv, parser)
    from rollstream.services.replay.config import ReplayConfig
    from rollstream.services.replay.service import Replay

    try:
        cfg = section(ctx.cfg, "replay", ReplayConfig)
    except ValueError as exc:
        log.error("replay: %s", exc)
        return 2
    ctx.start()
    replay = Replay(cfg, ctx.kafka, ctx.metrics, ctx.bus_metrics)
    control = follow_control(ctx.kafka, "replay")
    try:
        return replay.run(lambda: ctx.stopping, control)
    finally:
        control.stop()
        replay.close()
        ctx.close()
