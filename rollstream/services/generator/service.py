"""Generator loop: prompts in, one Rollout per sample out.

Reads `prompts` (consumer group `generator`; several generator processes split its partitions),
`control` (live sampling knobs for stage `generator`; with pacing also replay's and the
learner's answers, the knobs they applied: batch_groups and publish_every set the kept groups a
version, and a revision they refuse never paces it) and `weights` (new policy versions).
Writes `rollouts.raw`, keyed by group_id, so every sample of a prompt lands on one partition.

Delivery: a batch of prompts is committed only after all its rollouts are acknowledged. A crash
in between regenerates those prompts; their group_id and rollout_ids are derived from the
prompt's partition and offset, so downstream dedup by rollout_id drops the repeats.
Back-pressure: sampling pauses while the scorer lags more than `max_raw_lag` rollouts behind
on `rollouts.raw`, while these weights are more than `staleness.max_versions` behind the
newest published version (e.g. after a refused swap), and, with `ahead_batches`, while the
kept groups on their way would keep the learner busy for more than that many batches
(pacing.py; the counts come from topic end offsets, read every `pace_interval_s`). Time per
phase (generate, publish, waiting for prompts, paused by reason) and the idle fraction are
metrics.
Weights: a new WeightUpdate is fetched from the weight store, its sha256 verified, and loaded in
place between batches (or, with `swap_policy: inflight`, between two decoding steps); a bad file
or an older version is refused and sampling continues on the current weights. Every rollout
carries the version that sampled its last token.
"""

from __future__ import annotations

import logging
import threading
import time

from rollstream.schemas import ControlUpdate, DropRecord, PromptTask, WeightUpdate, encode
from rollstream.services.generator.backend import Backend, GenRequest, GenSample, RequestError
from rollstream.services.generator.config import KNOB_FIELDS, GeneratorConfig, validate_control
from rollstream.services.generator.metrics import GeneratorMetrics
from rollstream.services.generator.pacing import PACED_TOPICS, UNUSED, Pacer, Unscored
from rollstream.services.generator.rollouts import request_of, rollouts_of
from rollstream.services.models.load import resolve_template
from rollstream.services.runtime.bus import Consumer, Producer, Record, join_group
from rollstream.services.runtime.config import RunConfig
from rollstream.services.runtime.knobs import LiveKnobs
from rollstream.services.runtime.metrics import Busy
from rollstream.services.runtime.stage import (
    Follower,
    StageContext,
    follow_applied_knobs,
    follow_control,
    follow_weights,
)

log = logging.getLogger(__name__)


def join_prompts(ctx: StageContext) -> tuple[Producer, Consumer]:
    """The generator's producer and its consumer of `prompts` (bus.join_group)."""
    return join_group(ctx.kafka, "generator", ["prompts"], "generator", ctx.bus_metrics)


class Generator:
    def __init__(
        self,
        ctx: StageContext,
        cfg: GeneratorConfig,
        backend: Backend,
        tokenizer: object,
        model_name: str,
        bus: tuple[Producer, Consumer] | None = None,
    ) -> None:
        """`bus`: join_prompts(ctx), when the caller joined the group before loading."""
        self.ctx, self.cfg, self.backend, self.tokenizer = ctx, cfg, backend, tokenizer
        self.model_name = model_name
        user_model = ctx.cfg.model.path or getattr(getattr(ctx, "args", None), "model", None)
        self.template = resolve_template(ctx.cfg.model.template, user_model, tokenizer)
        log.info(
            "generator: prompts as %s%s",
            self.template,
            " (chat template of the model's tokenizer)" if self.template == "chat" else "",
        )
        self.m = GeneratorMetrics(ctx.metrics)
        self.producer, self.consumer = bus or join_prompts(ctx)
        self.control = follow_control(ctx.kafka, "generator")
        self.knobs = LiveKnobs(
            "generator",
            cfg,
            validate_control,
            self._use_knobs,
            KNOB_FIELDS,
            follower=self.control,
            counter=self.m.control,
        )
        self.weights = follow_weights(
            ctx.kafka,
            "generator",
            ctx.cfg.model.policy,
            last=True,
            fetch_wait_ms=cfg.weights_wait_ms,
        )
        self.version = 0
        self.on_version = 0  # rollouts published on the current version
        self.budget_hit: float | None = None  # when rollouts_per_version was reached
        self.newest = 0
        self._weights_seq = 0
        self.raw_lag = 0  # last probed lag of the scorer group on rollouts.raw
        self._sent = 0  # rollouts published by this process
        self._sent_at_probe = 0  # ... when the last probe started
        self._groups_sent = 0
        self._groups_at_probe = 0
        self.pacer: Pacer | None = None
        self.unused_groups = 0  # DropRecords replay wrote (groups it dropped untrained)
        self._unused: Follower | None = None
        self._paced_by: Follower | None = None  # replay's and the learner's answers
        self._paced_params: dict[str, dict[str, int]] = {}  # knobs they applied, by stage
        if cfg.ahead_batches > 0:
            per_version = _groups_per_version(ctx.cfg)
            self.pacer = Pacer(per_version, cfg.ahead_batches, cfg.oversample)
            self._unused = Follower(
                ctx.kafka, "generator", "groups.dropped", self._count_unused, lambda a, b: False
            )
            self._unused.start()  # now, as the other followers: the first probe waits for it
            self._paced_by = follow_applied_knobs(ctx.kafka, "generator", tuple(PACED_BY))
        self.paced_since: float | None = None
        self._probe_deadline = time.monotonic() + cfg.version_wait_s  # see pause_reason
        self._unpaced_warned = False
        self.asked = cfg.batch_prompts  # prompts the last poll asked for
        self.busy = Busy()
        self._lag_thread = threading.Thread(target=self._watch_lag, daemon=True, name="raw-lag")

    # ---- live knobs -------------------------------------------------------------------------
    def _use_knobs(self, cfg: GeneratorConfig, changed: frozenset[str]) -> None:
        """LiveKnobs' callback: the config with the knobs in force (sampling, budgets, template)
        is read afresh by every batch."""
        self.cfg = cfg

    # ---- weights ----------------------------------------------------------------------------
    def maybe_swap(self) -> bool:
        """Load a newer WeightUpdate if one arrived; True if the weights changed."""
        if self.weights.seq == self._weights_seq:
            return False
        self._weights_seq = self.weights.seq
        upd: WeightUpdate = self.weights.latest
        if upd.version <= self.version:
            if upd.version < self.version:
                self.m.refused.labels("older").inc()
                log.warning(
                    "refused weights v%d: older than the loaded v%d", upd.version, self.version
                )
            return False
        from rollstream.services.models.weights import fetch_update, fetch_version

        t0 = time.perf_counter()
        where = dict(files=upd.files, store=self._store(), verify=self.ctx.cfg.weights.verify)
        try:
            load_state = getattr(self.backend, "load_state", None)
            if load_state is not None:  # one read: the bytes hashed are the bytes loaded
                _, state = fetch_update(
                    upd,
                    store=self._store(),
                    verify=self.ctx.cfg.weights.verify,
                    pinned=getattr(self.backend, "pinned", False),
                )
                load_state(state)
            else:  # the engine reads the verified directory itself (vLLM)
                local = fetch_version(
                    upd.uri,
                    upd.sha256,
                    upd.weights_file,
                    expected_size=upd.size_bytes,
                    chunk_bytes=upd.chunk_bytes,
                    **where,
                )
                self.backend.load_weights(str(local))
        except Exception as exc:  # any bad update (safetensors' own errors too) is refused
            self.m.refused.labels("bad_file").inc()
            log.error(
                "refused weights v%d from %s: %s; staying on v%d",
                upd.version,
                upd.uri,
                exc,
                self.version,
            )
            return False
        # Only a verified version counts as published: a forged v+1000 must not make the
        # staleness bound pause this generator forever.
        self.newest = max(self.newest, upd.version)
        self.version = upd.version
        self.on_version, self.budget_hit = 0, None
        self.m.swap.observe(time.perf_counter() - t0)
        self.m.version_delay.observe(max(0.0, time.time() - upd.produced_at))
        self.m.version.set(self.version)  # last: who sees the version sees the rest
        log.info("loaded weights v%d in %.3fs", upd.version, time.perf_counter() - t0)
        return True

    def _store(self) -> str | None:
        """The weight store updates must point into (None: not known here, not checked)."""
        from rollstream.services.models.weights import default_store

        return default_store(self.ctx.cfg.weights.uri, self.ctx.args.run_dir)

    # ---- flow control -----------------------------------------------------------------------
    def _watch_lag(self) -> None:
        from rollstream.services.runtime.admin import FlowProbe

        probe, unscored = None, Unscored()
        n_default = float(self.ctx.cfg.feed.get("n", 8))  # samples a group, until one is sent
        if self._unused is not None:  # count replay's drops from before the pacer's start
            self._unused.caught_up.wait(10.0)
        while not self.ctx.stopping:
            sent, groups = self._sent, self._groups_sent  # published before the probe reads
            try:
                if probe is None:
                    topics = [*PACED_TOPICS, *(f"{t}.dlq" for t in PACED_TOPICS)]
                    topics.append("rollouts.scored")
                    probe = FlowProbe(self.ctx.kafka, topics, "rollstream-scorer", "rollouts.raw")
                totals, committed_lag = probe.read()
                lag = unscored.read(totals, committed_lag, time.monotonic())
            except Exception as exc:  # the probe is advisory
                log.debug("flow probe: %s", exc)
            else:
                if self.pacer is not None:
                    size = self._sent / self._groups_sent if self._groups_sent else n_default
                    self.pacer.observe({**totals, UNUSED: self.unused_groups}, size, lag)
                    self.m.keep_rate.set(self.pacer.keep_rate)
                self.raw_lag, self._sent_at_probe, self._groups_at_probe = lag, sent, groups
                self.m.raw_lag.set(lag)
            time.sleep(self.cfg.pace_interval_s if self.pacer else 1.0)
        if probe is not None:
            probe.close()

    def _follow_paced_knobs(self) -> None:
        """Groups a version as replay's batch_groups and the learner's publish_every are where
        they run (what each answered it applied; the run's config until then): the pacer
        resizes from the newest version."""
        if self._paced_by is None or self.pacer is None:
            return
        recs = self._paced_by.take()
        if not recs:
            return
        take_answers(self._paced_params, [r.value for r in recs])
        per_version = _groups_per_version(self.ctx.cfg, self._paced_params)
        if per_version != self.pacer.batch_groups:
            log.info(
                "pacing: %d kept groups a version from v%d (was %d)",
                per_version,
                self.newest,
                self.pacer.batch_groups,
            )
            self.pacer.resize(per_version, self.newest)

    def _count_unused(self, msg: object) -> bool:
        """Follower filter on groups.dropped: counts replay's drops, keeps none."""
        if isinstance(msg, DropRecord) and msg.filter == "replay" and msg.scope == "group":
            self.unused_groups += 1
        return False

    def lag_estimate(self) -> int:
        """The last probed lag plus what this process published since (the probe runs every
        `pace_interval_s` with pacing, else every second; without this a fast engine would
        overshoot max_raw_lag by what it sends between two probes)."""
        return self.raw_lag + self._sent - self._sent_at_probe

    def pause_reason(self) -> str | None:
        if self.newest - self.version > self.cfg.max_staleness:
            return "staleness"
        if self.lag_estimate() > self.cfg.max_raw_lag:
            return "raw_lag"
        if self.pacer is not None and self.pacer.start is None:
            # no topic counts yet: what is sampled before the first probe would be outside
            # every count (a lead on top of `ahead_batches` for the whole run); wait for it,
            # or sample unpaced if the probe cannot read the counts at all
            if time.monotonic() < self._probe_deadline:
                return "pacing"
            if not self._unpaced_warned:
                self._unpaced_warned = True
                log.warning(
                    "pacing: no topic counts after %.0f s (version_wait_s): sampling unpaced "
                    "until they come",
                    self.cfg.version_wait_s,
                )
        elif self.pacer is not None and self.weights.caught_up.is_set():
            # (not before the newest version is known: the pacer counts from the first one)
            unseen = self._groups_sent - self._groups_at_probe
            first = self.pacer.version0 is None
            pause = self.pacer.should_pause(self.newest, unseen)
            if first and self.pacer.version0 is not None:
                log.info(
                    "pacing from v%d: %.1f kept groups already on their way, target %.1f",
                    self.pacer.version0,
                    self.pacer.lead0,
                    self.pacer.target(self.newest),
                )
            if pause:
                if self.paced_since is None:
                    self.paced_since = time.monotonic()
                if time.monotonic() - self.paced_since < self.cfg.version_wait_s:
                    return "pacing"
            self.paced_since = None
        budget = self.cfg.rollouts_per_version
        if budget and self.on_version >= budget:
            if self.budget_hit is None:
                self.budget_hit = time.monotonic()
            if time.monotonic() - self.budget_hit < self.cfg.version_wait_s:
                return "version_budget"
            self.on_version, self.budget_hit = 0, None  # waited long enough: another budget
        return None

    def batch_size(self) -> int:
        """Prompts the next batch takes: `batch_prompts`, or with `batch_prompts_max` and
        pacing, enough for one learner batch of kept groups (Pacer.batch_prompts)."""
        least, most = self.cfg.batch_prompts, self.cfg.batch_prompts_max
        if self.pacer is None or most <= least:
            return least
        return self.pacer.batch_prompts(least, most)

    # ---- one batch --------------------------------------------------------------------------
    def request(self, rec: Record[PromptTask]) -> GenRequest:
        return request_of(
            rec.value,
            f"{rec.value.task_id}@{rec.partition}.{rec.offset}",
            self.cfg.sampling,
            self.tokenizer,
            self.cfg.template or self.template,
            self.cfg.system_prompt or self.ctx.cfg.model.system_prompt,
        )

    def run_batch(self, recs: list[Record[PromptTask]]) -> None:
        started = time.time()
        reqs = [self.request(r) for r in recs]
        while True:
            t0 = time.perf_counter()
            recs, reqs, outs = self.generate(recs, reqs)
            version = self.version  # in flight: the newest version that sampled a token
            gen_s = time.perf_counter() - t0
            self.busy.add("generate", gen_s)
            # abort policy: a version that arrived mid-batch means regenerate on it
            if self.cfg.swap_policy == "abort" and self.maybe_swap():
                log.info("batch aborted by weights v%d; regenerating", self.version)
                continue
            break
        self.m.gen_time.observe(gen_s)
        self.m.occupancy.set(len(recs) / self.asked)
        t0 = time.perf_counter()
        for rec, req, samples in zip(recs, reqs, outs, strict=True):
            self.publish(rec, req, samples, version, started, gen_s)
        self.consumer.commit()
        self.busy.add("publish", time.perf_counter() - t0)

    def generate(
        self, recs: list[Record[PromptTask]], reqs: list[GenRequest]
    ) -> tuple[list[Record[PromptTask]], list[GenRequest], list[list[GenSample]]]:
        """backend.generate; a prompt the backend refuses (RequestError) goes to `prompts.dlq`
        and the rest of the batch is generated without it."""
        try:
            return recs, reqs, self.backend.generate(reqs)
        except RequestError as exc:
            if len(reqs) == 1:
                self.refuse(recs[0], exc)
                return [], [], []
        kept = []
        for rec, req in zip(recs, reqs, strict=True):
            try:
                kept.append((rec, req, self.backend.generate([req])[0]))
            except RequestError as exc:
                self.refuse(rec, exc)
        return [k[0] for k in kept], [k[1] for k in kept], [k[2] for k in kept]

    def refuse(self, rec: Record[PromptTask], exc: Exception) -> None:
        value = encode(rec.value)
        self.consumer.dead_letter(rec.topic, rec.partition, rec.offset, rec.key, value, str(exc))

    def publish(
        self,
        rec: Record[PromptTask],
        req: GenRequest,
        samples: list[GenSample],
        version: int,
        started: float,
        gen_s: float,
    ) -> None:
        queued = max(0.0, started - rec.timestamp_ms / 1000) if rec.timestamp_ms > 0 else 0.0
        rollouts = rollouts_of(
            rec.value,
            req,
            samples,
            version,
            time.time(),
            generator_id=self.ctx.instance,
            queued_s=queued,
            generate_s=gen_s,
        )
        for ro, s in zip(rollouts, samples, strict=True):
            self.producer.send("rollouts.raw", ro, key=req.request_id)
            self.m.tokens.inc(len(s.completion_ids))
            self.m.finish.labels(s.finish_reason).inc()
            self.m.length.observe(len(s.completion_ids))
        self.m.rollouts.inc(len(samples))
        self.on_version += len(samples)
        self._sent += len(samples)
        self._groups_sent += 1

    # ---- loop -------------------------------------------------------------------------------
    def _inflight(self) -> None:
        """Between two decoding steps (swap_policy inflight): take a newer version now."""
        if self.cfg.swap_policy == "inflight" and self.maybe_swap():
            self.m.inflight_swaps.inc()

    def run(self) -> None:
        if hasattr(self.backend, "between_steps"):
            self.backend.between_steps = self._inflight
        elif self.cfg.swap_policy == "inflight":
            name = self.backend.name
            log.warning("swap_policy inflight: the %s backend swaps between batches", name)
        self._lag_thread.start()
        self.weights.caught_up.wait(10.0)  # start on the newest published version
        self.control.caught_up.wait(10.0)
        if self._paced_by is not None:  # the groups a version in force, before pacing starts
            self._paced_by.caught_up.wait(10.0)
            self._follow_paced_knobs()
        self._probe_deadline = time.monotonic() + self.cfg.version_wait_s
        self.m.version.set(self.version)
        while not self.ctx.stopping:
            self.knobs.poll()
            self._follow_paced_knobs()
            t0 = time.perf_counter()
            self.maybe_swap()
            t1 = time.perf_counter()
            self.busy.add("swap", t1 - t0)
            reason = self.pause_reason()
            if reason:
                time.sleep(0.02 if reason == "pacing" else 0.1)
                paused = time.perf_counter() - t1  # the swap above is counted as swap only
                self.m.paused.labels(reason).inc(paused)
                self.busy.add("paused", paused)
                self._export_busy()
                continue
            t0 = time.perf_counter()
            self.asked = self.batch_size()
            recs = self.consumer.poll(self.asked, self.cfg.poll_timeout_s, fill=True)
            self.busy.add("wait_prompts", time.perf_counter() - t0)
            if recs:
                self.run_batch(recs)
            self._export_busy()

    def _export_busy(self) -> None:
        for phase, secs in self.busy.take().items():
            self.m.phase.labels(phase).inc(secs)
        self.m.idle.set(self.busy.idle_fraction("generate"))

    def close(self) -> None:
        self.knobs.close()
        self.weights.stop()
        for f in (self._unused, self._paced_by):
            if f is not None:
                f.stop()
        try:
            self.consumer.commit()
        finally:
            self.consumer.close()
            self.producer.close()
            self.backend.close()


PACED_BY = {"replay": "batch_groups", "learner": "publish_every"}
"""The knobs of other stages that set the kept groups a version, by the stage that owns them."""


def take_answers(paced: dict[str, dict[str, int]], answers: list[ControlUpdate]) -> None:
    """Put into `paced` (by stage) the pacing knobs of replay's and the learner's `answers`,
    oldest first: the last answer of a stage is what it runs now. An answer neither would
    write is logged and ignored."""
    for answer in answers:
        knobs = _pacing_knobs(answer)
        if isinstance(knobs, str):
            log.warning("pacing: %s's answer ignored: %s", answer.stage, knobs)
            continue
        paced[answer.stage] = knobs


def _pacing_knobs(answer: ControlUpdate) -> dict[str, int] | str:
    """The pacing knob of an answer of replay or the learner on `control` (ControlUpdate with
    `applied`: the knobs that stage checked and runs), or why it cannot pace by it (a record
    some other writer put there). The generator cannot check a revision as those stages do (it
    does not import their config models), so it never paces by a revision, only by answers."""
    knob = PACED_BY[answer.stage]
    if knob not in answer.params:
        return {}
    value = answer.params[knob]
    if type(value) is not int or value < 1:
        return f"{knob}={value!r} is not a whole number >= 1"
    return {knob: value}


def _groups_per_version(cfg: RunConfig, live: dict[str, dict[str, int]] | None = None) -> int:
    """Kept groups the learner trains per published version: replay's batch_groups times the
    learner's publish_every (from the run config's raw sections: a stage does not import
    another stage's config model), each as `live[stage]` sets it if it does (what that stage
    last answered it runs)."""
    live = live or {}
    batch = live.get("replay", {}).get("batch_groups", cfg.replay.get("batch_groups", 8))
    every = live.get("learner", {}).get("publish_every", cfg.learner.get("publish_every", 1))
    return int(batch) * int(every)  # type: ignore[call-overload]
