"""`rollstream run feed [--config run.yaml]`: publish prompts for the generators."""

from __future__ import annotations

import logging

from rollstream.services.runtime.config import section
from rollstream.services.runtime.stage import StageContext, follow_control, stage_parser

log = logging.getLogger("rollstream")


def main(argv: list[str]) -> int:
    parser = stage_parser("feed", "Publish PromptTasks from tasks or datasets, with a curriculum.")
    ctx = StageContext.from_argv("feed", argv, parser)
    from rollstream.services.feed.config import FeedConfig
    from rollstream.services.feed.curriculum import make_policy
    from rollstream.services.feed.items import build_pool
    from rollstream.services.feed.service import Feed

    try:
        cfg = section(ctx.cfg, "feed", FeedConfig)
        seed = ctx.cfg.seed if cfg.seed is None else cfg.seed
        pool = build_pool(cfg, seed)
        policy = make_policy(cfg.curriculum.policy, cfg.curriculum.params, seed)
    except ValueError as exc:  # ConfigError, DatasetError, CurriculumError, TaskError
        log.error("feed: %s", exc)
        return 2
    ctx.start()
    control = follow_control(ctx.kafka, "feed")
    feed = Feed(cfg, ctx.kafka, pool, policy, seed, ctx.metrics, ctx.bus_metrics, control)
    try:
        return feed.run(lambda: ctx.stopping)
    finally:
        feed.close()
        ctx.close()
