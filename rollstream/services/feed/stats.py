"""The latest PromptStats per task_id, followed in the background for the curriculum.

Reads `prompt.stats` from the beginning, without a consumer group (nothing is committed; a
restarted feed reads the whole history again and ends with the same latest stats);
`caught_up` is set once everything that was on the topic at start has been read. Writes
undecodable messages to `prompt.stats.dlq` through the feed's producer. A newer message for
a task_id replaces the older one (more groups wins; equal groups: the later produced_at).
"""

from __future__ import annotations

import logging
import threading
import time

from rollstream.schemas import PromptStats
from rollstream.services.feed.offsets import OffsetProbe
from rollstream.services.runtime.bus import Consumer, Producer
from rollstream.services.runtime.metrics import BusMetrics
from rollstream.services.runtime.settings import KafkaSettings

log = logging.getLogger(__name__)


def newer(a: PromptStats, b: PromptStats) -> bool:
    """Whether `a` describes a later state of the prompt than `b`."""
    return (a.groups, a.produced_at) > (b.groups, b.produced_at)


class StatsBook:
    """Latest stats per task_id, plus the stats that arrived since the last `take_new`."""

    def __init__(self) -> None:
        self.latest: dict[str, PromptStats] = {}
        self._new: list[PromptStats] = []
        self._lock = threading.Lock()

    def add(self, stats: PromptStats) -> None:
        with self._lock:
            old = self.latest.get(stats.task_id)
            if old is None or newer(stats, old):
                self.latest[stats.task_id] = stats
                self._new.append(stats)

    def get(self, task_id: str) -> PromptStats | None:
        with self._lock:
            return self.latest.get(task_id)

    def take_new(self) -> list[PromptStats]:
        with self._lock:
            new, self._new = self._new, []
        return new


class StatsFollower(threading.Thread):
    """Background reader of `prompt.stats` into a StatsBook."""

    def __init__(
        self,
        kafka: KafkaSettings,
        book: StatsBook,
        producer: Producer | None = None,
        metrics: BusMetrics | None = None,
    ) -> None:
        super().__init__(name="follow-prompt.stats", daemon=True)
        self.book = book
        probe = OffsetProbe(kafka, "prompt.stats", "feed")
        ends, starts = probe.ends(), probe.starts()
        # partition -> offset of the last message there at start (what catching up means)
        self._todo = {p: end - 1 for p, end in ends.items() if end > starts.get(p, 0)}
        self.caught_up = threading.Event()
        self.consumer = Consumer(
            kafka, "feed", ["prompt.stats"], group=None, producer=producer, metrics=metrics
        )
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            if not self._todo:
                self.caught_up.set()
            try:
                recs = self.consumer.poll(500, 0.2)
            except Exception as exc:  # keep following through broker hiccups
                log.warning("prompt.stats: %s", exc)
                time.sleep(0.5)
                continue
            for r in recs:
                self.book.add(r.value)
                if r.offset >= self._todo.get(r.partition, r.offset + 1):
                    del self._todo[r.partition]
        self.consumer.close()

    def stop(self) -> None:
        self._halt.set()
