"""The scorer's faust app: `rollouts.raw` -> `rollouts.scored`.

Reads `rollouts.raw` (key group_id) as raw bytes. Writes, with the same key, one ScoredRollout
per Rollout to `rollouts.scored`, and a DeadLetter to `rollouts.raw.dlq` for a message that does
not decode or whose reward raised (the worker goes on). Follows `control` (stage "scorer":
live reward weights, timeouts, fallbacks).

Concurrency and delivery: one agent (concurrency=1). When every reward is inline (cheap and
synchronous, e.g. the built-in checkers) it scores each rollout in the agent itself, sends the
result and the stream acks the event after it (in order). Otherwise it reads with manual acks
and starts one task per rollout, up to `max_in_flight` at once, so slow rewards (sandbox,
judge) overlap; past that it stops reading (back-pressure). Results are sent and events acked
strictly in arrival order:
faust commits the first run of consecutive acked offsets and, acked out of order, could commit
past a rollout still being scored (faust-streaming issue #606). Results go out through
librdkafka (runtime/faust/sender.py), whose flush is part of faust's producer flush, and faust
flushes the producer before each offset commit, so delivery is at least once: after a crash the
rollouts since the last commit are scored again, and the filter drops the repeats by rollout_id.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from rollstream.schemas import Rollout, SchemaError, ScoredRollout, decode, encode
from rollstream.schemas.topics import dlq_name, qualified
from rollstream.services.runtime.faust.app import consumer_lag, make_app, send_dead_letter
from rollstream.services.runtime.faust.sender import Sender
from rollstream.services.runtime.knobs import LiveKnobs
from rollstream.services.runtime.metrics import BusMetrics
from rollstream.services.runtime.settings import KafkaSettings
from rollstream.services.scorer.combine import KNOBS, Combiner, Score, ScorerKnobs
from rollstream.services.scorer.config import ScorerConfig
from rollstream.services.scorer.metrics import RunningStats, ScorerMetrics
from rollstream.services.scorer.reward import RewardError

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
        self._reward_time: dict[str, Any] = {}  # key -> its histogram child (no .labels())
        self._verdicts: dict[bool | None, Any] = {}
        self.knobs = LiveKnobs(
            "scorer",
            ScorerKnobs(),
            self._check_knobs,
            self._use_knobs,
            KNOBS,
            counter=metrics.control if metrics is not None else None,
        )

    async def score(self, data: bytes) -> tuple[ScoredRollout | None, str]:
        """(scored message, "") or (None, why it goes to the dead-letter topic). When every
        reward runs inline this never suspends: awaited in the agent, it scores in place."""
        try:
            rollout = decode(data, Rollout)
        except SchemaError as exc:
            return None, str(exc)
        start = time.perf_counter()
        try:
            score = await self.combiner.score(rollout)
        except RewardError as exc:
            return None, self._failed(exc)
        return self._scored(rollout, score, start), ""

    def _failed(self, exc: RewardError) -> str:
        if self.metrics is not None:
            self.metrics.errors.labels(exc.reward).inc()
        return str(exc)

    def _scored(self, rollout: Rollout, score: Score, start: float) -> ScoredRollout:
        elapsed = time.perf_counter() - start
        msg = score.of(rollout, elapsed, time.time())
        self._observe(msg, score.latency_s, elapsed)
        return msg

    def _observe(self, msg: ScoredRollout, latency: dict[str, float], elapsed: float) -> None:
        m = self.metrics
        if m is None:
            return
        m.scored.inc()
        m.score_time.observe(elapsed)
        for key, value in msg.rewards.items():
            self._stats(key).add(value)
        self._stats("total").add(msg.reward)
        for key, seconds in latency.items():
            child = self._reward_time.get(key)
            if child is None:
                child = self._reward_time[key] = m.reward_time.labels(key)
            child.observe(seconds)
        for key in msg.timed_out:
            m.timeouts.labels(key).inc()
        verdict = self._verdicts.get(msg.correct)
        if verdict is None:
            name = {None: "none", True: "correct", False: "wrong"}[msg.correct]
            verdict = self._verdicts[msg.correct] = m.correct.labels(name)
        verdict.inc()
        if msg.rollout.policy_version > self.version:
            self.version = msg.rollout.policy_version
            m.version.set(self.version)

    def _stats(self, key: str) -> RunningStats:
        """The running stats of `key`; its mean/std gauges read them when scraped."""
        stats = self.stats.get(key)
        if stats is None:
            stats = self.stats[key] = RunningStats()
            if self.metrics is not None:
                self.metrics.reward_mean.labels(key).set_function(lambda: stats.mean)
                self.metrics.reward_std.labels(key).set_function(lambda: stats.std)
        return stats

    def _check_knobs(self, params: dict[str, Any], base: ScorerKnobs) -> ScorerKnobs:
        self.combiner.overridden(params)  # RewardConfigError (a ValueError) names a bad entry
        return ScorerKnobs.model_validate({**base.model_dump(), **params})

    def _use_knobs(self, knobs: ScorerKnobs, changed: frozenset[str]) -> None:
        self.combiner.update(knobs.model_dump())


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
    sender = Sender(kafka, "scorer")  # outputs through librdkafka, flushed with faust's producer
    sender.attach(app)
    source = app.topic(qualified(SOURCE, ns))
    sink_name = qualified(SINK, ns)
    dlq = app.topic(qualified(dlq_name(SOURCE), ns))
    group = qualified("rollstream-scorer", ns)
    messages_in = bus.messages_in.labels(SOURCE)
    messages_out = bus.messages_out.labels(SINK)
    positions: dict[Any, int] = {}  # tp -> next offset to read

    async def deliver(event: Any, msg: ScoredRollout | None, error: str) -> None:
        """Send the scored rollout, or the input as a dead letter (the caller acks)."""
        m = event.message
        if msg is not None:
            sender.send(sink_name, encode(msg), m.key, headers=msg.headers())
            messages_out.inc()
            return
        await send_dead_letter(dlq, bus, SOURCE, m, error, group, log)

    if scorer.combiner.inline_only:
        # Every reward is cheap and synchronous: score in the agent, send, and let the
        # stream ack each event after its body (in order); no task or queue per rollout.
        @app.agent(source, name="score", concurrency=1)
        async def score_inline(stream: Any) -> None:
            async for event in stream.events():
                messages_in.inc()
                positions[event.message.tp] = event.message.offset + 1
                try:
                    msg, error = await scorer.score(event.message.value)
                except Exception as exc:  # a bug, not a reward: never kill the stream
                    log.exception("scorer: scoring failed")
                    msg, error = None, f"internal error: {type(exc).__name__}: {exc}"
                await deliver(event, msg, error)

        return _common(app, scorer, bus, positions, control, sender)

    window: asyncio.Queue[tuple[Any, asyncio.Future[Any]]] = asyncio.Queue()
    slots = asyncio.Semaphore(config.max_in_flight)

    @app.agent(source, name="score", concurrency=1)
    async def score_agent(stream: Any) -> None:
        async for event in stream.noack().events():
            messages_in.inc()
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
            await deliver(event, msg, error)
            event.ack()
            slots.release()

    return _common(app, scorer, bus, positions, control, sender)


def _common(
    app: Any,
    scorer: Scorer,
    bus: BusMetrics,
    positions: dict[Any, int],
    control: Any,
    sender: Sender,
) -> Any:
    """The timers and shutdown hook of either scoring path."""

    scorer.knobs.follower = control

    @app.timer(interval=1.0)
    async def follow_control() -> None:
        scorer.knobs.poll()

    @app.timer(interval=5.0)
    async def lag() -> None:
        bus.consumer_lag.labels(SOURCE).set(consumer_lag(app, positions))

    @app.on_before_shutdown.connect
    async def close_rewards(app: Any, **kwargs: Any) -> None:
        await scorer.combiner.close()
        await sender.flush()

    return app
