"""`rollstream run filter [--config run.yaml]`: assemble groups, filter, compute advantages."""

from __future__ import annotations

import logging

from rollstream.services.runtime.config import section
from rollstream.services.runtime.stage import (
    StageContext,
    follow_control,
    follow_weights,
    stage_parser,
)

log = logging.getLogger("rollstream")


def main(argv: list[str]) -> int:
    parser = stage_parser(
        "filter", "Assemble and filter groups: rollouts.scored -> groups.kept / groups.dropped."
    )
    ctx = StageContext.from_argv("filter", argv, parser)
    from rollstream.services.filter.chain import FilterChain
    from rollstream.services.filter.config import FilterConfig

    try:
        cfg = section(ctx.cfg, "filter", FilterConfig)
        FilterChain.from_specs(cfg.chain)  # fail at start on bad filter params
    except ValueError as exc:  # ConfigError, FilterConfigError
        log.error("filter: %s", exc)
        return 2
    from rollstream.services.filter.app import build_app, prepare_topics
    from rollstream.services.filter.metrics import register
    from rollstream.services.runtime.faust.app import run_worker

    ctx.start()
    control = follow_control(ctx.kafka, "filter")
    weights = follow_weights(ctx.kafka, "filter", ctx.cfg.model.policy)
    app = build_app(
        ctx.kafka,
        cfg,
        register(ctx.metrics),
        ctx.bus_metrics,
        partitions=prepare_topics(ctx.kafka),
        instance=ctx.instance,
        data_dir=f"{ctx.args.run_dir}/filter-{ctx.instance}" if ctx.args.run_dir else None,
        control=control,
        weights=weights,
    )
    try:
        return run_worker(app, ctx.args.log_level)
    finally:
        control.stop()
        weights.stop()
        ctx.close()
