"""Generator loop: prompts in, one Rollout per sample out.

Reads `prompts` (consumer group `generator`; several generator processes split its partitions),
`control` (live sampling knobs for stage `generator`) and `weights` (new policy versions).
Writes `rollouts.raw`, keyed by group_id, so every sample of a prompt lands on one partition.

Delivery: a batch of prompts is committed only after all its rollouts are acknowledged. A crash
in between regenerates those prompts; their group_id and rollout_ids are derived from the
prompt's partition and offset, so downstream dedup by rollout_id drops the repeats.
Back-pressure: sampling pauses while the scorer lags more than `max_raw_lag` rollouts behind
on `rollouts.raw`, or while these weights are more than `max_staleness` versions behind the
newest published version (e.g. after a refused swap); paused time is a metric.
Weights: a new WeightUpdate is fetched from the weight store, its sha256 verified, and loaded in
place between batches; a bad file or an older version is refused and sampling continues on the
current weights. Every rollout carries the exact version that produced it.
"""

from __future__ import annotations

import logging
import threading
import time

from pydantic import ValidationError

from rollstream.schemas import (
    PromptTask,
    Rollout,
    Sampling,
    WeightUpdate,
    encode,
    pack_floats,
    pack_ids,
)
from rollstream.services.generator.backend import Backend, GenRequest, GenSample, RequestError
from rollstream.services.generator.config import LIVE_KNOBS, GeneratorConfig
from rollstream.services.generator.metrics import GeneratorMetrics
from rollstream.services.models.load import encode_prompt, resolve_template
from rollstream.services.runtime.bus import Consumer, Producer, Record
from rollstream.services.runtime.service import StageContext, follow_control, follow_weights

log = logging.getLogger(__name__)


class Generator:
    def __init__(
        self,
        ctx: StageContext,
        cfg: GeneratorConfig,
        backend: Backend,
        tokenizer: object,
        model_name: str,
    ) -> None:
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
        self.producer = Producer(ctx.kafka, "generator", ctx.bus_metrics)
        self.consumer = Consumer(
            ctx.kafka,
            "generator",
            ["prompts"],
            group="generator",
            producer=self.producer,
            metrics=ctx.bus_metrics,
        )
        self.control = follow_control(ctx.kafka, "generator")
        self.weights = follow_weights(ctx.kafka, "generator", ctx.cfg.model.policy, last=True)
        self.version = 0
        self.on_version = 0  # rollouts published on the current version
        self.budget_hit: float | None = None  # when rollouts_per_version was reached
        self.newest = 0
        self._control_seq = 0
        self._weights_seq = 0
        self.raw_lag = 0  # last probed lag of the scorer group on rollouts.raw
        self._sent = 0  # rollouts published by this process
        self._sent_at_probe = 0  # ... when the last probe started
        self._lag_thread = threading.Thread(target=self._watch_lag, daemon=True, name="raw-lag")

    # ---- live knobs -------------------------------------------------------------------------
    def apply_control(self) -> None:
        if self.control.seq == self._control_seq:
            return
        self._control_seq = self.control.seq
        params = dict(self.control.latest.params)
        unknown = set(params) - LIVE_KNOBS
        sampling = {k: params.pop(k) for k in list(params) if k in self.cfg.sampling.model_fields}
        try:
            if unknown:
                raise ValueError(f"unknown knob(s) {sorted(unknown)}; live: {sorted(LIVE_KNOBS)}")
            new = self.cfg.model_copy(update={k: v for k, v in params.items()})
            new.sampling = self.cfg.sampling.model_validate(
                {**self.cfg.sampling.model_dump(), **sampling}
            )
            self.cfg = GeneratorConfig.model_validate(new.model_dump())
        except (ValidationError, ValueError) as exc:
            self.m.control.labels("rejected").inc()
            log.warning("control update rejected: %s", exc)
            return
        self.m.control.labels("applied").inc()
        log.info("control applied: %s", self.control.latest.params)

    # ---- weights ----------------------------------------------------------------------------
    def maybe_swap(self) -> bool:
        """Load a newer WeightUpdate if one arrived; True if the weights changed."""
        if self.weights.seq == self._weights_seq:
            return False
        self._weights_seq = self.weights.seq
        upd: WeightUpdate = self.weights.latest
        self.newest = max(self.newest, upd.version)
        if upd.version <= self.version:
            if upd.version < self.version:
                self.m.refused.labels("older").inc()
                log.warning(
                    "refused weights v%d: older than the loaded v%d", upd.version, self.version
                )
            return False
        from rollstream.services.models.weights import WeightError, fetch_version

        t0 = time.perf_counter()
        try:
            local = fetch_version(
                upd.uri,
                upd.sha256,
                upd.weights_file,
                verify=self.ctx.cfg.weights.verify,
                expected_size=upd.size_bytes,
            )
            self.backend.load_weights(str(local))
        except (WeightError, OSError, ValueError, RuntimeError) as exc:
            self.m.refused.labels("bad_file").inc()
            log.error(
                "refused weights v%d from %s: %s; staying on v%d",
                upd.version,
                upd.uri,
                exc,
                self.version,
            )
            return False
        self.version = upd.version
        self.on_version, self.budget_hit = 0, None
        self.m.version.set(self.version)
        self.m.swap.observe(time.perf_counter() - t0)
        log.info("loaded weights v%d in %.3fs", upd.version, time.perf_counter() - t0)
        return True

    # ---- flow control -----------------------------------------------------------------------
    def _watch_lag(self) -> None:
        from rollstream.services.runtime.admin import group_lag

        while not self.ctx.stopping:
            sent = self._sent  # published before the probe reads the end offsets
            try:
                lag = group_lag(self.ctx.kafka, "rollstream-scorer", "rollouts.raw")
            except Exception as exc:  # the probe is advisory
                log.debug("lag probe: %s", exc)
            else:
                self.raw_lag, self._sent_at_probe = lag, sent
                self.m.raw_lag.set(lag)
            time.sleep(1.0)

    def lag_estimate(self) -> int:
        """The last probed lag plus what this process published since (the probe runs once a
        second; without this a fast engine would overshoot max_raw_lag by a second's output)."""
        return self.raw_lag + self._sent - self._sent_at_probe

    def pause_reason(self) -> str | None:
        if self.newest - self.version > self.cfg.max_staleness:
            return "staleness"
        if self.lag_estimate() > self.cfg.max_raw_lag:
            return "raw_lag"
        budget = self.cfg.rollouts_per_version
        if budget and self.on_version >= budget:
            if self.budget_hit is None:
                self.budget_hit = time.monotonic()
            if time.monotonic() - self.budget_hit < self.cfg.version_wait_s:
                return "version_budget"
            self.on_version, self.budget_hit = 0, None  # waited long enough: another budget
        return None

    # ---- one batch --------------------------------------------------------------------------
    def request(self, rec: Record[PromptTask]) -> GenRequest:
        task = rec.value
        s = self.cfg.sampling.model_dump()
        if task.sampling is not None:
            s.update({k: v for k, v in _struct_items(task.sampling) if v is not None and k != "n"})
        template = task.template or self.cfg.template or self.template
        system = self.cfg.system_prompt or self.ctx.cfg.model.system_prompt
        ids = encode_prompt(self.tokenizer, task.prompt, template, system)
        return GenRequest(
            request_id=f"{task.task_id}@{rec.partition}.{rec.offset}",
            prompt_ids=list(ids),
            n=task.n,
            **s,
        )

    def run_batch(self, recs: list[Record[PromptTask]]) -> None:
        started = time.time()
        reqs = [self.request(r) for r in recs]
        while True:
            t0 = time.perf_counter()
            version = self.version
            recs, reqs, outs = self.generate(recs, reqs)
            gen_s = time.perf_counter() - t0
            # abort policy: a version that arrived mid-batch means regenerate on it
            if self.cfg.swap_policy == "abort" and self.maybe_swap():
                log.info("batch aborted by weights v%d; regenerating", self.version)
                continue
            break
        self.m.gen_time.observe(gen_s)
        self.m.occupancy.set(len(recs) / self.cfg.batch_prompts)
        for rec, req, samples in zip(recs, reqs, outs, strict=True):
            self.publish(rec, req, samples, version, started, gen_s)
        self.consumer.commit()

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
        task = rec.value
        group_id = req.request_id
        sampling = Sampling(
            n=req.n,
            temperature=req.temperature,
            top_p=req.top_p,
            top_k=req.top_k,
            max_tokens=req.max_tokens,
            stop=req.stop or None,
            seed=req.seed,
            regex=req.regex,
            choice=req.choice,
            json_schema=req.json_schema,
        )
        prompt_ids = pack_ids(req.prompt_ids)
        queued = max(0.0, started - rec.timestamp_ms / 1000) if rec.timestamp_ms > 0 else 0.0
        now = time.time()
        for i, s in enumerate(samples):
            ro = Rollout(
                rollout_id=f"{group_id}#{i}",
                group_id=group_id,
                task_id=task.task_id,
                task=task.task,
                sample_index=i,
                group_size=req.n,
                prompt=task.prompt,
                completion=s.text,
                prompt_ids=prompt_ids,
                completion_ids=pack_ids(s.completion_ids),
                logprobs=pack_floats(s.logprobs),
                finish_reason=s.finish_reason,  # type: ignore[arg-type]
                policy_version=version,
                sampling=sampling,
                answer=task.answer,
                reference=task.reference,
                generator_id=self.ctx.instance,
                queued_s=queued,
                generate_s=gen_s,
                produced_at=now,
            )
            self.producer.send("rollouts.raw", ro, key=group_id)
            self.m.tokens.inc(len(s.completion_ids))
            self.m.finish.labels(s.finish_reason).inc()
            self.m.length.observe(len(s.completion_ids))
        self.m.rollouts.inc(len(samples))
        self.on_version += len(samples)
        self._sent += len(samples)

    # ---- loop -------------------------------------------------------------------------------
    def run(self) -> None:
        self._lag_thread.start()
        self.weights.caught_up.wait(10.0)  # start on the newest published version
        self.control.caught_up.wait(10.0)
        self.m.version.set(self.version)
        while not self.ctx.stopping:
            self.apply_control()
            self.maybe_swap()
            reason = self.pause_reason()
            if reason:
                time.sleep(0.1)
                self.m.paused.labels(reason).inc(0.1)
                continue
            recs = self.consumer.poll(self.cfg.batch_prompts, self.cfg.poll_timeout_s)
            if recs:
                self.run_batch(recs)

    def close(self) -> None:
        self.control.stop()
        self.weights.stop()
        try:
            self.consumer.commit()
        finally:
            self.consumer.close()
            self.producer.close()
            self.backend.close()


def _struct_items(s: Sampling) -> list[tuple[str, object]]:
    return [(f, getattr(s, f)) for f in s.__struct_fields__]
