"""The scorer's faust app: `rollouts.raw` -> `rollouts.scored`.

Reads `rollouts.raw` (key group_id) as raw bytes. Writes, with the same key, one ScoredRollout
per Rollout to `rollouts.scored`, and a DeadLetter to `rollouts.raw.dlq` for a message that does
not decode or whose reward raised (the worker goes on). Follows `control` (stage "scorer":
live reward weights, timeouts, fallbacks).

Concurrency and delivery: one agent (concurrency=1) reads with manual acks and starts one task
per rollout, up to `max_in_flight` at once, so slow rewards (sandbox, judge) overlap; past that
it stops reading (back-pressure). Results are sent and events acked strictly in arrival order:
faust commits the first run of consecutive acked offsets and, acked out of order, could commit
past a rollout still being scored (research/ecosystem.md, faust #606). faust flushes the
producer before each offset commit, so delivery is at least once: after a crash the rollouts
since the last commit are scored again, and the filter drops the repeats by rollout_id.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from rollstream.schemas import DeadLetter, Rollout, SchemaError, ScoredRollout, decode, encode
from rollstream.schemas.topics import dlq_name, qualified
from rollstream.services.runtime.faust_app import make_app
from rollstream.services.runtime.metrics import BusMetrics
from rollstream.services.runtime.service import apply_control
from rollstream.services.runtime.settings import KafkaSettings
from rollstream.services.scorer.combine import Combiner
from rollstream.services.scorer.config import ScorerConfig
from rollstream.services.scorer.metrics import RunningStats, ScorerMetrics
from rollstream.services.scorer.reward import RewardConfigError, RewardError

log = logging.getLogger("rollstream.scorer")

SOURCE = "rollouts.raw"
SINK = "rollouts.scored"


class Scorer:
    """Turns raw Rollout bytes into ScoredRollout bytes (or a dead-letter reason)."""

    def __init__(self, combiner: Combiner, metrics: ScorerMetrics | None = None) -> None:
        self.combiner = combiner
        self.metrics = metrics
        self.stats: dict[str, RunningStats] = {}
        self.version = 0

    async def score(self, data: bytes) -> tuple[ScoredRollout | None, str]:
        """(scored message, "") or (None, why it goes to the dead-letter topic)."""
        try:
            rollout = decode(data, Rollout)
        except SchemaError as exc:
            return None, str(exc)
        start = time.perf_counter()
        try:
            score = await self.combiner.score(rollout)
        except RewardError as exc:
            if self.metrics is not None:
                self.metrics.errors.labels(exc.reward).inc()
            return None, str(exc)
        elapsed = time.perf_counter() - start
        msg = ScoredRollout(
            rollout=rollout,
            reward=score.reward,
            rewards=score.components,
            correct=score.correct,
            timed_out=score.timed_out,
            score_s=elapsed,
            produced_at=time.time(),
        )
        self._observe(msg, score.latency_s, elapsed)
        return msg, ""

    def _observe(self, msg: ScoredRollout, latency: dict[str, float], elapsed: float) -> None:
        m = self.metrics
        if m is None:
            return
        m.scored.inc()
        m.score_time.observe(elapsed)
        for key, value in [*msg.rewards.items(), ("total", msg.reward)]:
            stats = self.stats.setdefault(key, RunningStats())
            stats.add(value)
            m.reward_mean.labels(key).set(stats.mean)
            m.reward_std.labels(key).set(stats.std)
        for key, seconds in latency.items():
            m.reward_time.labels(key).observe(seconds)
        for key in msg.timed_out:
            m.timeouts.labels(key).inc()
        verdict = "none" if msg.correct is None else ("correct" if msg.correct else "wrong")
        m.correct.labels(verdict).inc()
        if msg.rollout.policy_version > self.version:
            self.version = msg.rollout.policy_version
            m.version.set(self.version)

    def apply_control(self, params: dict[str, Any]) -> bool:
        """Apply live knobs; False (and a log line) when they are invalid."""
        counter = self.metrics.control if self.metrics is not None else None
        return apply_control("scorer", self.combiner.update, params, counter, (RewardConfigError,))


def build_app(
    kafka: KafkaSettings,
    config: ScorerConfig,
    scorer: Scorer,
    bus: BusMetrics,
    *,
    instance: str | None = None,
    control: Any = None,
) -> Any:
    """The faust app (see module docstring). `control` is a runtime Follower or None."""
    ns = kafka.namespace
    app = make_app("scorer", kafka, instance=instance)
    source = app.topic(qualified(SOURCE, ns))
    sink = app.topic(qualified(SINK, ns))
    dlq = app.topic(qualified(dlq_name(SOURCE), ns))
    window: asyncio.Queue[tuple[Any, asyncio.Future[Any]]] = asyncio.Queue()
    slots = asyncio.Semaphore(config.max_in_flight)
    group = qualified("rollstream-scorer", ns)

    positions: dict[Any, int] = {}  # tp -> next offset to read

    @app.agent(source, name="score", concurrency=1)
    async def score_agent(stream: Any) -> None:
        async for event in stream.noack().events():
            bus.messages_in.labels(SOURCE).inc()
            positions[event.message.tp] = event.message.offset + 1
            await slots.acquire()
            window.put_nowait((event, asyncio.ensure_future(scorer.score(event.message.value))))
            if scorer.metrics is not None:
                scorer.metrics.in_flight.set(window.qsize())

    @app.task
    async def publish() -> None:
        """Send results and ack events in arrival order."""
        while True:
            event, task = await window.get()
            try:
                msg, error = await task
            except Exception as exc:  # a bug, not a reward: still never kill the stream
                log.exception("scorer: scoring failed")
                msg, error = None, f"internal error: {type(exc).__name__}: {exc}"
            key = event.message.key
            if msg is not None:
                await sink.send(key=key, value=encode(msg), headers=msg.headers())
                bus.messages_out.labels(SINK).inc()
            else:
                m = event.message
                log.warning("dead letter %s[%d]@%d: %s", SOURCE, m.partition, m.offset, error)
                letter = DeadLetter(
                    topic=SOURCE,
                    partition=m.partition,
                    offset=m.offset,
                    key=key,
                    value=bytes(m.value or b""),
                    error=error,
                    consumer=group,
                    produced_at=time.time(),
                )
                await dlq.send(key=key, value=encode(letter), headers=letter.headers())
                bus.dead_letters.labels(SOURCE).inc()
            event.ack()
            slots.release()

    seen = {"seq": 0}

    @app.timer(interval=1.0)
    async def follow_control() -> None:
        if control is None or control.seq == seen["seq"] or control.latest is None:
            return
        seen["seq"] = control.seq
        scorer.apply_control(dict(control.latest.params))

    @app.timer(interval=5.0)
    async def lag() -> None:
        bus.consumer_lag.labels(SOURCE).set(consumer_lag(app, positions))

    @app.on_before_shutdown.connect
    async def close_rewards(app: Any, **kwargs: Any) -> None:
        await scorer.combiner.close()

    return app


def consumer_lag(app: Any, positions: dict[Any, int]) -> int:
    """Messages between what this worker has read and the end of its assigned partitions."""
    total = 0
    try:
        assigned = app.consumer.assignment()
    except Exception:
        return 0
    for tp, position in list(positions.items()):
        if tp not in assigned:
            continue
        try:
            high = app.consumer.highwater(tp)
        except Exception:  # partition revoked or metadata not there yet
            continue
        if high is not None and high >= 0:
            total += max(0, high - position)
    return total
