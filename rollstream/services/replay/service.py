"""Replay loop: groups in, batches out against the learner's credits.

Reads: `groups.kept` (every partition, no consumer group: replay positions itself, see
resume.py), `learner.feedback` (credits, learner version, priorities; only this learner's),
`control` (live knobs, background). Writes: `batches.train` keyed by learner_id, each batch
with the `replay-resume` header; `groups.dropped` for groups that leave untrained (reason
"expired": past the staleness bound; "evicted": pushed out at capacity), keyed by group_id;
`control`, keyed `replay.applied`: the live knobs in force after each revision it applied
(runtime/knobs.py).

Back-pressure: a batch goes out only while the learner has granted more batches in total
than replay has sent (Credits); otherwise groups wait in the buffer. At capacity a FIFO
replay stops reading groups.kept (the groups wait there, nothing dropped); a prioritized one
evicts by its rule and reports what it evicted.

Delivery: a restart rebuilds the buffer from Kafka (resume header, batches already sent,
groups from the oldest live one) before it sends anything, so no group is lost or sent twice;
DropRecords may repeat after a restart (same group_id; the ledger counts a rollout once).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from rollstream.schemas import DropRecord, Feedback, Group, TrainBatch, encode
from rollstream.services.replay.buffer import ReplayBuffer
from rollstream.services.replay.config import LIVE_KNOBS, ReplayConfig, validate_control
from rollstream.services.replay.credits import Credits
from rollstream.services.replay.metrics import ReplayMetrics
from rollstream.services.replay.resume import MARGIN_MS, Resume, last_resume, sent_batches
from rollstream.services.runtime.bus import Consumer, Producer
from rollstream.services.runtime.knobs import LiveKnobs
from rollstream.services.runtime.metrics import BusMetrics, StageMetrics
from rollstream.services.runtime.settings import KafkaSettings

log = logging.getLogger(__name__)


class Replay:
    """The buffer, its credits, and the bookkeeping that makes a restart exact."""

    def __init__(
        self,
        cfg: ReplayConfig,
        kafka: KafkaSettings,
        metrics: StageMetrics | None = None,
        bus_metrics: BusMetrics | None = None,
    ) -> None:
        self.cfg = cfg
        self.kafka = kafka
        stage = metrics or StageMetrics("replay")
        self.m = ReplayMetrics(stage)
        bus = bus_metrics or BusMetrics(stage)
        self.buffer = ReplayBuffer(cfg)
        self.base_cfg = cfg  # the run's config; live knobs apply onto it
        self.credits = Credits()
        self.producer = Producer(kafka, "replay", bus)
        self.groups = Consumer(
            kafka, "replay", ["groups.kept"], group=None, producer=self.producer, metrics=bus
        )
        self.feedback = Consumer(
            kafka, "replay", ["learner.feedback"], group=None, producer=self.producer, metrics=bus
        )
        # where each live group came from: gid -> (partition, offset, arrival ms)
        self.origin: dict[str, tuple[int, int, int]] = {}
        self.live: dict[int, dict[int, str]] = {}  # partition -> {offset: gid}, offset order
        self.next_group: dict[int, int] = {}  # partition -> next unread offset
        self.next_feedback: dict[int, int] = {}
        self._success_seen = 0

    # ---- restart ----------------------------------------------------------------------------
    def rebuild(self) -> Resume:
        """Re-apply what was sent, then position the consumers (see resume.py)."""
        resume = last_resume(self.kafka, self.cfg.learner_id, self.cfg.rebuild_timeout_s)
        if resume.since_ms is not None:
            n = 0
            for batch in sent_batches(self.kafka, self.cfg.learner_id, resume.since_ms):
                self.buffer.mark_emitted(batch)
                self.credits.observe_sent(batch.seq)
                n += 1
            log.info("replay: resumed after batch %d (%d batches re-applied)", self.credits.sent, n)
        self.groups.seek("groups.kept", resume.groups)
        self.feedback.seek("learner.feedback", resume.feedback)
        self.next_group = dict(resume.groups)
        self.next_feedback = dict(resume.feedback)
        return resume

    # ---- input ------------------------------------------------------------------------------
    def on_group(self, group: Group, partition: int, offset: int) -> None:
        self.next_group[partition] = offset + 1
        res = self.buffer.add(group)
        self._drop(res.removed)
        if res.added:
            self.origin[group.group_id] = (partition, offset, int(time.time() * 1000))
            self.live.setdefault(partition, {})[offset] = group.group_id
            self.m.added.inc()
        elif not res.removed:
            self.m.duplicates.inc()

    def on_feedback(self, fb: Feedback, partition: int, offset: int) -> None:
        self.next_feedback[partition] = offset + 1
        if fb.learner_id != self.cfg.learner_id:
            return
        self.credits.grant(fb.credits_total)
        self._drop(self.buffer.set_learner_version(fb.learner_version))
        if fb.priorities:
            self.buffer.update_priorities(fb.priorities)

    def _use_knobs(self, cfg: ReplayConfig, changed: frozenset[str]) -> None:
        """LiveKnobs' callback: the buffer reads its config at every batch and expiry."""
        self.buffer.cfg = cfg

    # ---- output -----------------------------------------------------------------------------
    def batch_ready(self) -> bool:
        """A full batch is there, `min_batch_groups` groups are, or the oldest group has
        waited `partial_after_s`."""
        self._drop(self.buffer.expire())
        if len(self.buffer) == 0:
            return False
        if self.buffer.has_full_batch():
            return True
        least = self.buffer.cfg.min_batch_groups
        if least is not None and len(self.buffer) >= least:
            return True
        after = self.buffer.cfg.partial_after_s
        since = self._oldest_arrival_ms()
        if after is None or since is None:
            return False
        return time.time() * 1000 - since >= after * 1000

    def maybe_send(self) -> TrainBatch | None:
        """Build and send one batch if the learner has a credit and a batch is ready."""
        if not self.credits.can_send() or not self.batch_ready():
            return None
        t0 = time.perf_counter()
        since = self._oldest_arrival_ms()
        draft = self.buffer.build_batch()
        self._drop(draft.expired)
        if not draft.items:
            return None
        seq = self.credits.record_sent()
        batch = TrainBatch(
            batch_id=f"{self.cfg.learner_id}-{seq}",
            learner_id=self.cfg.learner_id,
            seq=seq,
            items=draft.items,
            learner_version=self.buffer.learner_version,
            produced_at=time.time(),
        )
        for item in draft.items:
            gid = item.group.group_id
            if gid not in self.buffer:  # reached its reuse cap
                self._forget(gid)
                self.m.consumed.inc()
        resume = Resume(
            groups=self._group_positions(),
            feedback=dict(self.next_feedback),
            since_ms=(since if since is not None else int(time.time() * 1000)) - MARGIN_MS,
        )
        self.producer.send_raw(
            "batches.train", encode(batch), self.cfg.learner_id, batch.headers() + [resume.header()]
        )
        self.producer.flush()
        self._observe(batch, time.perf_counter() - t0)
        return batch

    def _group_positions(self) -> dict[int, int]:
        pos = dict(self.next_group)
        for p, offsets in self.live.items():
            if offsets:
                pos[p] = next(iter(offsets))
        return pos

    def _oldest_arrival_ms(self) -> int | None:
        firsts = [self.origin[next(iter(o.values()))][2] for o in self.live.values() if o]
        return min(firsts, default=None)

    def _forget(self, gid: str) -> None:
        where = self.origin.pop(gid, None)
        if where is not None:
            self.live[where[0]].pop(where[1], None)

    def _drop(self, removed: list[Any]) -> None:
        """Forget groups that left; publish a DropRecord for each that was never trained."""
        now = time.time()
        for r in removed:
            self._forget(r.group.group_id)
            trained = "yes" if r.uses else "no"
            (self.m.expired if r.reason == "expired" else self.m.evicted).labels(trained).inc()
            if r.uses:
                continue  # trained at least once: not a drop
            g = r.group
            own = [s.rollout.rollout_id for s in g.samples if s.rollout.group_id == g.group_id]
            rec = DropRecord(
                group_id=g.group_id,
                task_id=g.task_id,
                reason=r.reason,
                filter="replay",
                rollout_ids=own,
                stats={"staleness": float(self.buffer.learner_version - g.policy_version)},
                policy_version=g.policy_version,
                produced_at=now,
            )
            self.producer.send("groups.dropped", rec, g.group_id)
            self.m.dropped.labels(r.reason).inc(len(own))

    def _observe(self, batch: TrainBatch, build_s: float) -> None:
        m = self.m
        m.batches.inc()
        m.build.observe(build_s)
        replayed = sum(i.replayed for i in batch.items)
        m.sent.labels("yes").inc(replayed)
        m.sent.labels("no").inc(len(batch.items) - replayed)
        m.replay_fraction.set(replayed / len(batch.items))
        for item in batch.items:
            m.uses.observe(item.uses)
            m.staleness.observe(batch.learner_version - item.group.policy_version)

    def publish_gauges(self) -> None:
        m, s = self.m, self.buffer.stats()
        m.groups.set(s["size"])
        m.fresh.set(s["fresh"])
        m.occupancy.set(s["size"] / s["capacity"])
        m.granted.set(self.credits.granted)
        m.outstanding.set(self.credits.outstanding)
        m.version.set(self.buffer.learner_version)
        mixed = int(s.get("success_mixed", 0))
        if mixed > self._success_seen:
            m.success.inc(mixed - self._success_seen)
            self._success_seen = mixed

    # ---- loop -------------------------------------------------------------------------------
    def poll_once(self, timeout_s: float = 0.1) -> None:
        # a batch that waits only for a credit: block on feedback, not on groups, so that it
        # goes out as soon as the learner asks
        for_credit = not self.credits.can_send() and self.batch_ready()
        for r in self.feedback.poll(100, timeout_s if for_credit else 0.0):
            self.on_feedback(r.value, r.partition, r.offset)
        if self.cfg.policy == "fifo" and self.buffer.full:
            time.sleep(timeout_s)  # back-pressure: groups wait on groups.kept, none evicted
            return
        for r in self.groups.poll(500, 0.0 if for_credit else timeout_s):
            self.on_group(r.value, r.partition, r.offset)

    def run(self, stopping: Callable[[], bool], control: Any | None = None) -> int:
        self.rebuild()
        knobs = LiveKnobs(
            "replay",
            self.base_cfg,
            validate_control,
            self._use_knobs,
            LIVE_KNOBS,
            follower=control,
            counter=self.m.control,
            producer=self.producer,  # answers what it applied (the generators pace by it)
        )
        last_gauges = 0.0
        while not stopping():
            knobs.poll()
            self.poll_once()
            while self.maybe_send() is not None:
                pass
            if time.monotonic() - last_gauges > 1.0:
                self.groups.lag()
                self.publish_gauges()
                last_gauges = time.monotonic()
        return 0

    def close(self) -> None:
        try:
            self.producer.flush()
        finally:
            self.groups.close()
            self.feedback.close()
