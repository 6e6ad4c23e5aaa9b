"""Feed loop: walk the pool epoch by epoch, ask the curriculum, publish PromptTasks.

Reads: `prompt.stats` (background, no group; only when the curriculum needs stats), the
generator group's committed offsets on `prompts` (admin API, every `poll_s`), and on start the
tail of `prompts` to resume after the last prompt it published. Writes: `prompts`, keyed by
task_id, each with a `feed_pos` header (pool fingerprint, epoch, index).

Live knobs (`rollstream control feed ...`: n, sampling, template, max_ahead, poll_s) are read
from `control` in the background and applied between two prompts; a removed knob reverts to
the run file's value (rollstream/services/runtime/knobs.py).

Back-pressure: the feed never has more prompts on `prompts` that the generator group has not
committed than its run-ahead bound: `max_ahead`, or `lead_polls` poll intervals of the
generators' measured consumption when that is more (runahead.py says why); at the bound it
pauses (paused seconds are a metric) and measures again every `poll_s`. Delivery: at least
once. A restart resumes after the last prompt acknowledged by the broker, so prompts in flight
at a crash may be sent twice; their task_id is the same (stable per item), and the generator
derives group ids per message.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from rollstream.schemas import encode
from rollstream.services.feed.config import LIVE_KNOBS, FeedConfig, validate_control
from rollstream.services.feed.curriculum import Policy
from rollstream.services.feed.items import FeedItem, epoch_order, fingerprint
from rollstream.services.feed.offsets import FEED_PRODUCER, OffsetProbe, pos_header
from rollstream.services.feed.runahead import RunAhead
from rollstream.services.feed.stats import StatsBook, StatsFollower
from rollstream.services.runtime.bus import Producer
from rollstream.services.runtime.knobs import LiveKnobs
from rollstream.services.runtime.metrics import BusMetrics, StageMetrics
from rollstream.services.runtime.settings import KafkaSettings

log = logging.getLogger(__name__)

IDLE_S = 1.0  # wait after an epoch in which the curriculum skipped every prompt
STATS_WAIT_S = 30.0  # longest wait at start for the history of prompt.stats


class FeedMetrics:
    def __init__(self, m: StageMetrics) -> None:
        self.sent = m.counter("prompts_sent_total", "PromptTasks published", ["task"])
        self.skipped = m.counter(
            "prompts_skipped_total", "Candidates the curriculum skipped", ["reason"]
        )
        self.paused = m.counter(
            "paused_seconds_total", "Seconds paused at the run-ahead bound (max_ahead)"
        )
        self.epoch = m.gauge("epoch", "Epoch being fed (0-based)")
        self.unconsumed = m.gauge(
            "unconsumed_prompts", "Prompts the generator group has not committed yet"
        )
        self.pool = m.gauge("pool_prompts", "Distinct prompts in the pool")
        self.curriculum = m.gauge(
            "curriculum_param", "Adaptive parameters of the curriculum policy", ["name"]
        )
        self.control = m.counter("control_updates_total", "Control updates", ["result"])
        self.max_ahead = m.gauge(
            "max_ahead", "Run-ahead bound in force (max_ahead, or lead_polls of the measured rate)"
        )


class Feed:
    """Publishes the pool's prompts under the run-ahead bound and the curriculum's say."""

    def __init__(
        self,
        cfg: FeedConfig,
        kafka: KafkaSettings,
        pool: Sequence[FeedItem],
        policy: Policy,
        seed: int,
        metrics: StageMetrics | None = None,
        bus_metrics: BusMetrics | None = None,
        control: Any = None,
    ) -> None:
        """`control`: a runtime Follower of this stage's ControlUpdates, or None."""
        if not pool:
            raise ValueError("the feed's pool is empty")
        self.cfg = cfg
        self.pool = list(pool)
        self.policy = policy
        self.seed = seed
        self.sampling = cfg.sampling_overrides()
        self.fingerprint = fingerprint(self.pool, seed, cfg.shuffle)
        stage_metrics = metrics or StageMetrics("feed")
        self.m = FeedMetrics(stage_metrics)
        bus_metrics = bus_metrics or BusMetrics(stage_metrics)
        self.m.pool.set(len(self.pool))
        self.producer = Producer(kafka, "feed", bus_metrics, extra=FEED_PRODUCER)
        self.probe = OffsetProbe(kafka, "prompts", cfg.consumer_group)
        self.ahead = RunAhead(cfg.max_ahead, cfg.lead_polls, cfg.poll_s)
        self.knobs = LiveKnobs(
            "feed", cfg, validate_control, self._set_knobs, LIVE_KNOBS, control, self.m.control
        )
        self._measured_at = -float("inf")
        self.book = StatsBook()
        self.follower: StatsFollower | None = None
        if getattr(policy, "needs_stats", True):
            self.follower = StatsFollower(kafka, self.book, self.producer, bus_metrics)
            self.follower.start()

    def _set_knobs(self, cfg: FeedConfig, changed: frozenset[str]) -> None:
        self.cfg = cfg  # n, template and poll_s are read from it at each use
        self.sampling = cfg.sampling_overrides()
        self.ahead.max_ahead = cfg.max_ahead
        self.ahead.poll_s = cfg.poll_s
        self.m.max_ahead.set(self.ahead.bound)

    # -- run-ahead ------------------------------------------------------------------------

    def measure(self) -> int:
        """Flush, then count what the generator group has not committed (and remember it).
        If the broker does not answer, the estimate stays (it only over-counts) until the
        next try."""
        self.producer.flush()  # a failed send raises: the restart resumes after the last acked
        self._measured_at = time.monotonic()
        try:
            count = self.probe.unconsumed()
        except Exception as exc:  # a broker hiccup: keep the conservative estimate
            log.warning("feed: cannot measure the generators' progress: %s", exc)
            return self.ahead.ahead
        self.ahead.measured(count, self._measured_at)
        self.m.unconsumed.set(count)
        self.m.max_ahead.set(self.ahead.bound)
        return count

    def wait_for_room(self, stopping: Callable[[], bool]) -> bool:
        """Block until another prompt may go out; False when asked to stop first."""
        while True:
            if stopping():
                return False
            self.knobs.poll()
            if time.monotonic() - self._measured_at >= self.cfg.poll_s:
                self.measure()
            if self.ahead.room > 0:
                return True
            wait = max(0.0, self._measured_at + self.cfg.poll_s - time.monotonic())
            time.sleep(wait)
            self.m.paused.inc(wait)

    # -- curriculum -----------------------------------------------------------------------

    def _observe_stats(self) -> None:
        observe = getattr(self.policy, "observe", None)
        for stats in self.book.take_new():
            if observe is not None:
                observe(stats)
        gauges = getattr(self.policy, "gauges", None)
        for name, value in (gauges() if gauges is not None else {}).items():
            self.m.curriculum.labels(name).set(value)

    def decide(self, item: FeedItem) -> str | None:
        """The curriculum's verdict on `item` given everything observed so far."""
        self._observe_stats()
        return self.policy.decide(item, self.book.get(item.task_id))

    # -- the loop -------------------------------------------------------------------------

    def start_position(self) -> tuple[int, int]:
        """(epoch, index) to start at: after the last prompt of this pool, or the beginning."""
        if not self.cfg.resume:
            return 0, 0
        last = self.probe.last_position(self.fingerprint)
        if last is None:
            return 0, 0
        epoch, index = last
        log.info("feed: resuming after epoch %d, index %d", epoch, index)
        if index + 1 >= len(self.pool):
            return epoch + 1, 0
        return epoch, index + 1

    def _catch_up(self, stopping: Callable[[], bool]) -> None:
        """Let the curriculum see the stats already on `prompt.stats` before it decides."""
        if self.follower is None:
            return
        deadline = time.monotonic() + STATS_WAIT_S
        while not self.follower.caught_up.wait(0.1):
            if stopping() or time.monotonic() > deadline:
                log.warning("feed: starting before prompt.stats was read to its end")
                return

    def send(self, item: FeedItem, epoch: int, index: int) -> None:
        task = item.prompt_task(self.cfg.n, epoch, time.time(), self.sampling, self.cfg.template)
        headers = [*task.headers(), pos_header(self.fingerprint, epoch, index)]
        self.producer.send_raw("prompts", encode(task), item.task_id, headers)
        self.ahead.sent()
        self.m.sent.labels(item.task).inc()

    def run(self, stopping: Callable[[], bool]) -> int:
        """Feed until the last epoch is done (returns 0) or `stopping()` turns true."""
        epoch, start = self.start_position()
        self._catch_up(stopping)
        log.info(
            "feed: %d prompts in the pool, n=%d, max_ahead=%d, curriculum %s",
            len(self.pool),
            self.cfg.n,
            self.cfg.max_ahead,
            type(self.policy).__name__,
        )
        while self.cfg.epochs is None or epoch < self.cfg.epochs:
            self.m.epoch.set(epoch)
            order = epoch_order(len(self.pool), self.seed, epoch, self.cfg.shuffle)
            sent = 0
            for index in range(start, len(order)):
                if not self.wait_for_room(stopping):
                    return 0
                item = self.pool[order[index]]
                reason = self.decide(item)
                if reason is not None:
                    self.m.skipped.labels(reason).inc()
                    continue
                self.send(item, epoch, index)
                sent += 1
            log.info("feed: epoch %d done, %d prompts sent", epoch, sent)
            epoch, start = epoch + 1, 0
            if sent == 0 and _sleep(IDLE_S, stopping):
                return 0
        self.producer.flush()
        log.info("feed: all %d epochs sent", self.cfg.epochs)
        return 0

    def close(self) -> None:
        self.knobs.close()
        if self.follower is not None:
            self.follower.stop()
            self.follower.join(timeout=5)
        self.producer.close()


def _sleep(seconds: float, stopping: Callable[[], bool]) -> bool:
    """Sleep up to `seconds`; True if asked to stop meanwhile."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if stopping():
            return True
        time.sleep(min(0.1, deadline - time.monotonic()))
    return stopping()
