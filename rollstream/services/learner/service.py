"""Learner loop: batches in, feedback and weight versions out.

Reads: `batches.train` (consumer group `learner-<learner_id>`; only this learner's batches are
trained), `weights` once at start (background follower: the last version announced).
Writes: `learner.feedback` keyed by learner_id when a new batch arrives (before training it),
after every step and every `feedback_every_s` while idle (credits_total = newest batch seq
received + prefetch, the version, the ids just trained, new priorities); `weights` keyed by
the policy name (one WeightUpdate per version, the tensors go to the weight store through
the publisher); `control` keyed `learner.applied`, the live knobs in force after each revision
it applied (runtime/knobs.py); checkpoints on disk.

Live knobs (`rollstream control learner ...`: lr, max_grad_norm, token_budget, prefetch,
publish_every, feedback_every_s) are read from `control` in the background and applied between
two steps, on every rank; a removed knob reverts to the run file's value (runtime/knobs.py).

Order per step: train, send Feedback, and every `publish_every` steps: version + 1, when one
is due (`checkpoint_every_s`) write the checkpoint (model, optimizer, step, version, trained
batch ids, offsets) and commit the consumed offsets, then publish the version. A crash rolls
back to the last checkpoint and re-reads from its committed offsets: batches in the checkpoint
are skipped by id, later ones are trained again (their Feedback repeats with the same batch
ids, which the ledger counts once). A version is never announced with two different weights:
versions announced after the checkpoint went with the steps that made them, so the resumed
learner numbers on from the newest one announced; a checkpoint's version the topic does not
have yet is re-published at start.

Under torchrun this loop runs on rank 0 only; the trainer relays batches, checkpoints and
publishes to the other ranks (trainer.py, distributed.py).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rollstream.schemas import WeightUpdate, encode
from rollstream.services.learner.config import LIVE_KNOBS, LearnerConfig, validate_control
from rollstream.services.learner.metrics import LearnerMetrics, pipeline_latency
from rollstream.services.learner.trainer import StepResult, Trainer
from rollstream.services.runtime.bus import Consumer, Producer, join_group
from rollstream.services.runtime.knobs import LiveKnobs
from rollstream.services.runtime.metrics import BusMetrics, Busy, StageMetrics
from rollstream.services.runtime.settings import KafkaSettings

log = logging.getLogger(__name__)

# publisher(model, version, step) -> the WeightUpdate to announce (files already in the store)
Publisher = Callable[[Any, int, int], WeightUpdate]


class Learner:
    def __init__(
        self,
        trainer: Trainer,
        kafka: KafkaSettings,
        checkpoint_dir: str | Path,
        publisher: Publisher,
        policy: str,
        metrics: StageMetrics | None = None,
        bus_metrics: BusMetrics | None = None,
        control: Any = None,
        joined: tuple[Producer, Consumer] | None = None,
    ) -> None:
        """`control`: a runtime Follower of this stage's ControlUpdates, or None. `joined`:
        the producer and the `batches.train` consumer of group `learner-<learner_id>`
        (bus.join_group), when the caller joined the group before loading the model."""
        self.trainer = trainer
        self.kafka = kafka
        self.ckpt = Path(checkpoint_dir)
        self.publisher = publisher
        self.policy = policy
        stage = metrics or StageMetrics("learner")
        self.m = LearnerMetrics(stage)
        bus = bus_metrics or BusMetrics(stage)
        self.producer, self.consumer = joined or join_group(
            kafka, "learner", ["batches.train"], trainer.cfg.consumer_group, bus
        )
        self.checkpointed_step = 0
        self.checkpointed_at = time.monotonic()  # when the last checkpoint ended (or start)
        self.checkpoint_s = 0.0  # how long it took
        self.last_feedback = 0.0
        self.busy = Busy()  # wait / compute / publish seconds, for the idle gauge
        self.knobs = LiveKnobs(
            "learner",
            trainer.cfg,
            validate_control,
            self._set_knobs,
            LIVE_KNOBS,
            control,
            self.m.control,
            self.producer,  # answers what it applied (the generators pace by publish_every)
        )

    def _set_knobs(self, cfg: LearnerConfig, changed: frozenset[str]) -> None:
        self.trainer.set_knobs(cfg, changed)
        self.m.lr.set(self.trainer.lr)

    # ---- start ------------------------------------------------------------------------------
    def start(self, announced: WeightUpdate | None = None) -> None:
        """Resume from the newest checkpoint; re-announce its version if `announced` (the last
        WeightUpdate on the topic for this policy) is older."""
        t = self.trainer
        if t.resume(self.ckpt):
            log.info("learner: resumed at step %d, version %d, seq %d", t.step, t.version, t.seq)
            self.checkpointed_step = t.step
        if announced is not None and announced.version > t.version:
            log.info(
                "learner: versions %d-%d were announced after the checkpoint; the next is %d",
                t.version + 1,
                announced.version,
                announced.version + 1,
            )
            t.version = announced.version
        elif t.version > 0 and (announced is None or announced.version < t.version):
            self._announce()
        self.checkpointed_at = time.monotonic()
        self.knobs.poll()  # after the checkpoint: the knobs in force win over its schedule
        self.m.version.set(self.trainer.version)
        self.send_feedback()

    # ---- steps ------------------------------------------------------------------------------
    def send_feedback(self, result: StepResult | None = None) -> None:
        fb = self.trainer.feedback(result)
        self.m.credits.set(fb.credits_total)  # first: who has read the feedback sees it
        self.producer.send("learner.feedback", fb, self.trainer.cfg.learner_id)
        self.producer.flush()
        self.last_feedback = time.monotonic()

    def poll_once(self, timeout_s: float = 0.5) -> int:
        """Wait for batches, train those that are new; returns how many were trained."""
        self.knobs.poll()
        t0 = time.perf_counter()
        recs = self.consumer.poll(1, timeout_s)
        self.busy.add("wait", time.perf_counter() - t0)
        self.m.phase.labels("wait").observe(time.perf_counter() - t0)
        trained = 0
        for rec in recs:
            if self.trainer.receive(rec.value):
                # credit now, not after the step: the next batch is built and on its way
                # while this one trains (a credit sent after the step left the learner
                # waiting one round trip per step: 0.17 s of a 0.36 s step, measured)
                self.send_feedback()
            started = time.time()
            result = self.trainer.train(rec.value)
            self.trainer.offsets[f"{rec.topic}:{rec.partition}"] = rec.offset + 1
            if self.trainer.rejected:  # rows that cannot be trained: dead letters, not a crash
                why = "; ".join(f"group {g}: {w}" for g, w in self.trainer.rejected)
                self.consumer.dead_letter(
                    rec.topic, rec.partition, rec.offset, rec.key, encode(rec.value), why
                )
            if result is None:
                self.m.duplicates.inc()
                continue
            trained += 1
            for hop, secs in pipeline_latency(rec.value, started).items():
                child = self.m.latency.labels(hop)  # one label lookup a hop, not a sample
                for s in secs:
                    child.observe(s)
            self.busy.add("compute", result.compute_s)
            self._observe(result)
            self.send_feedback(result)
            if self.trainer.step % self.trainer.cfg.publish_every == 0:
                self.publish()
        if not recs and time.monotonic() - self.last_feedback > self.trainer.cfg.feedback_every_s:
            self.send_feedback()
        if not recs and self.trainer.step > self.checkpointed_step and self.checkpoint_due():
            self.checkpoint()  # no data: what was trained is not left out of a checkpoint
        if not trained:
            self.trainer.idle()  # several ranks: the others wait on rank 0's next command
        return trained

    def publish(self) -> None:
        """New version: checkpoint if one is due, commit what it covers, then announce it."""
        t0 = time.perf_counter()
        self.trainer.version += 1
        if self.checkpoint_due():
            self.checkpoint()
        self._announce()
        took = time.perf_counter() - t0
        self.busy.add("publish", took)
        self.m.phase.labels("publish").observe(took)

    def checkpoint_due(self) -> bool:
        """`checkpoint_every_s` (0: always) since the last one ended, and at least nine times
        as long as it took, so that checkpoints take at most a tenth of the learner's time."""
        every = self.trainer.cfg.checkpoint_every_s
        wait = max(every, 9 * self.checkpoint_s) if every > 0 else 0.0
        return time.monotonic() - self.checkpointed_at >= wait

    def checkpoint(self) -> None:
        t0 = time.perf_counter()
        self.trainer.save(self.ckpt)
        self.consumer.commit()
        self.checkpointed_step = self.trainer.step
        self.checkpoint_s = time.perf_counter() - t0
        self.checkpointed_at = time.monotonic()
        self.m.checkpoint.observe(self.checkpoint_s)

    def _announce(self) -> None:
        t0 = time.perf_counter()
        t = self.trainer
        update = self.publisher(t.publishable(), t.version, t.step)
        self.m.version.set(t.version)  # written; set before the update that announces it
        self.producer.send("weights", update, self.policy)
        self.producer.flush()
        self.m.publish.observe(time.perf_counter() - t0)
        log.info("learner: published version %d (step %d)", t.version, t.step)

    def _observe(self, r: StepResult) -> None:
        m = self.m
        m.step.set(self.trainer.step)
        m.batches.inc()
        m.tokens.inc(r.tokens)
        m.samples.inc(r.rollouts)
        m.phase.labels("compute").observe(r.compute_s)
        m.tokens_per_s.set(r.tokens / r.compute_s if r.compute_s > 0 else 0.0)
        m.lr.set(self.trainer.scheduler.get_last_lr()[0])
        for key, gauge in m.values.items():
            if key in r.metrics:
                gauge.set(r.metrics[key])
        for lag in r.staleness:
            m.staleness.observe(lag)
        m.idle.set(self.busy.share("wait"))

    # ---- loop -------------------------------------------------------------------------------
    def run(self, stopping: Callable[[], bool]) -> int:
        while not stopping():
            self.poll_once()
        return 0

    def close(self) -> None:
        """Final checkpoint (no new version) so a restart does not train anything twice."""
        try:
            if self.trainer.step > self.checkpointed_step:
                self.checkpoint()
            self.producer.flush()
        finally:
            self.knobs.close()
            self.consumer.close()
