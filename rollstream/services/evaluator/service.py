"""Evaluator loop: held-out greedy accuracy of the newest verified policy version.

Reads `weights` (compacted, no group: every WeightUpdate of the run's policy) and the weight
files they point to (verified by models.weights.fetch_update). Writes one EvalResult per
evaluated version to `eval.results`, keyed by run name, and each refused WeightUpdate to
`weights.dlq` (a DeadLetter with the reason and the update's coordinates, keyed by the
update's key); it is also the one stage that dead-letters undecodable records on `weights`
(runtime/stage.py DEAD_LETTERED_BY), so each bad record there has one dead letter.

At start it evaluates the starting model as version 0, unless a newer version is already
published and verifies (a restart mid-run evaluates that one instead). Then it follows the
newest *verified* version: the updates newer than the last verified one are tried newest
first; the first that verifies (files inside the store, every digest right, the tensors fit
the model) is followed, those above it are refused (metric, log line, dead letter; never
retried) and those below it are superseded, not checked. A forged far-future version is
therefore refused and never holds back later evaluations. A followed version is evaluated when
`min_interval_s` has passed since the last evaluation began; when it stops, the newest
version is evaluated if it has not been (`evaluate_final`). Delivery: each result is flushed
before the next evaluation; a crash can lose at most the result being computed (the restart
evaluates the newest again). torch and transformers are imported only when the Evaluator is
built.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from rollstream.schemas import DeadLetter, EvalResult, WeightUpdate, encode
from rollstream.services.evaluator.config import EvaluatorConfig
from rollstream.services.runtime.bus import Producer, Record
from rollstream.services.runtime.metrics import BusMetrics, StageMetrics
from rollstream.services.runtime.settings import KafkaSettings
from rollstream.services.runtime.stage import Follower
from rollstream.services.tasks import Item, heldout_items

log = logging.getLogger(__name__)

EVAL_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
KEEP_UPDATES = 10_000  # WeightUpdates remembered between two looks (older ones are superseded)
START_WAIT_S = 10.0  # longest wait at start for the weights topic to be read to its end


@dataclass
class EvalSchedule:
    """When to evaluate: a newer version than the last one, at most every `min_interval_s`."""

    min_interval_s: float
    last_version: int = -1
    last_start: float = -float("inf")

    def due(self, version: int | None, now: float) -> bool:
        if version is None or version <= self.last_version:
            return False
        return now - self.last_start >= self.min_interval_s

    def started(self, version: int, now: float) -> None:
        self.last_version = version
        self.last_start = now


def eval_items(entries: Sequence[tuple[str, int | None]], per_task: int) -> list[Item]:
    """The first `per_task` items of each entry's fixed held-out split."""
    from rollstream.services.tasks import get_task

    resolved = [(name, get_task(name).resolve_difficulty(d)) for name, d in entries]
    return heldout_items(resolved, size=per_task)


class EvaluatorMetrics:
    def __init__(self, m: StageMetrics) -> None:
        self.accuracy = m.gauge("heldout_accuracy", "Held-out greedy accuracy, all tasks")
        self.task_accuracy = m.gauge(
            "heldout_task_accuracy", "Held-out greedy accuracy per task", ["task"]
        )
        self.eval_seconds = m.histogram(
            "eval_seconds", "Seconds per held-out evaluation", buckets=EVAL_BUCKETS
        )
        self.version = m.gauge("policy_version", "Policy version last evaluated")
        self.evaluations = m.counter("evaluations_total", "Held-out evaluations published")
        self.refused = m.counter(
            "refused_versions_total", "Weight versions that could not be loaded", ["reason"]
        )


class Evaluator:
    """Loads the policy, follows `weights`, evaluates and publishes EvalResults."""

    def __init__(
        self,
        cfg: EvaluatorConfig,
        kafka: KafkaSettings,
        *,
        run: str,
        policy: str,
        model_dir: str,
        items: Sequence[Item],
        metrics: StageMetrics | None = None,
        bus_metrics: BusMetrics | None = None,
        store: str | None = None,
        template: str | None = "plain",
        system_prompt: str | None = None,
        user_model: bool = False,
    ) -> None:
        """`template`: plain, chat, or auto (chat for a `user_model` dir whose tokenizer has a
        chat template), as the generator puts prompts to the same model."""
        self.store = store  # the weight store updates must point into (None: unchecked)
        if not items:
            raise ValueError("no held-out items to evaluate (set evaluator.tasks)")
        import torch

        from rollstream.services.models.load import (
            describe,
            load_model,
            load_tokenizer,
            resolve_device,
            resolve_template,
        )

        self.cfg, self.run_name, self.items = cfg, run, list(items)
        stage_metrics = metrics or StageMetrics("evaluator")
        self.m = EvaluatorMetrics(stage_metrics)
        self.device = torch.device(resolve_device(cfg.device))
        self.tokenizer = load_tokenizer(model_dir)
        self.model = load_model(model_dir, device=str(self.device))
        self.model.eval()
        self.template = resolve_template(
            template, model_dir if user_model else None, self.tokenizer
        )
        self.system_prompt = system_prompt
        log.info(
            "evaluator: %s (%s), prompts as %s, %d held-out items",
            describe(self.model),
            model_dir,
            self.template,
            len(self.items),
        )
        self.producer = Producer(kafka, "evaluator", bus_metrics or BusMetrics(stage_metrics))
        self.weights = Follower(
            kafka,
            "evaluator",
            "weights",
            lambda m: isinstance(m, WeightUpdate) and m.policy == policy,
            lambda a, b: True,
            keep=KEEP_UPDATES,
        )
        self.weights.start()
        self.verified = -1  # newest version that verified and loaded (-1: none yet)
        self.verified_step = 0  # the learner step it was published at
        self.last_eval_s = 0.0  # how long the last evaluation took
        self.schedule = EvalSchedule(cfg.min_interval_s)

    def follow(self) -> WeightUpdate | None:
        """Load the newest of the updates that arrived since the last call that verifies (see
        the module docstring); the update now in the model, or None if none is new."""
        fresh = [r for r in self.weights.take() if r.value.version > self.verified]
        for rec in sorted(fresh, key=lambda r: r.value.version, reverse=True):
            if self.load(rec):
                self.verified, self.verified_step = rec.value.version, rec.value.step
                return rec.value
        return None

    def load(self, rec: Record[WeightUpdate]) -> bool:
        """Fetch, verify and load one version into the model; False (a log line, a metric and
        a dead letter on `weights.dlq`) if it is refused."""
        from rollstream.services.models.weights import WeightError, fetch_update

        upd = rec.value
        try:
            _, state = fetch_update(
                upd, store=self.store, pinned=str(self.device).startswith("cuda")
            )  # views of the verified bytes: load_state_dict copies them in place
            own = self.model.state_dict()
            missing = [k for k in own if k not in state and not k.endswith("lm_head.weight")]
            unexpected = [k for k in state if k not in own]
            wrong = [k for k in state if k in own and state[k].shape != own[k].shape]
            if missing or unexpected or wrong:  # checked before a single tensor is copied
                raise ValueError(
                    f"weights do not fit the model: missing {missing[:3]},"
                    f" unexpected {unexpected[:3]}, other shapes {wrong[:3]}"
                )
            self.model.load_state_dict(state, strict=False)
        except Exception as exc:  # any bad update (safetensors' own errors too) is refused
            reason = "checksum" if isinstance(exc, WeightError) else "bad_file"
            self.m.refused.labels(reason).inc()
            log.error("evaluator: refused weights v%d from %s: %s", upd.version, upd.uri, exc)
            self.dead_letter(rec, f"weight update refused ({reason}): {exc}")
            return False
        return True

    def dead_letter(self, rec: Record[WeightUpdate], error: str) -> None:
        letter = DeadLetter(
            topic=rec.topic,
            partition=rec.partition,
            offset=rec.offset,
            key=rec.key,
            value=encode(rec.value),
            error=error,
            consumer="evaluator",
            produced_at=time.time(),
        )
        self.producer.send("weights.dlq", letter, rec.key)
        self.producer.flush()

    def evaluate(self, version: int, step: int) -> EvalResult:
        """Held-out greedy accuracy of the loaded model, published as `version`."""
        from rollstream.services.models.evaluate import heldout_accuracy

        t0 = time.perf_counter()
        acc = heldout_accuracy(
            self.model,
            self.tokenizer,
            self.items,
            batch_size=self.cfg.batch_size,
            max_new_tokens=self.cfg.max_new_tokens,
            template=self.template,
            system_prompt=self.system_prompt,
        )
        took = time.perf_counter() - t0
        self.last_eval_s = took
        result = EvalResult(
            run=self.run_name,
            policy_version=version,
            step=step,
            accuracy=acc.accuracy,
            n=acc.n,
            per_task=dict(acc.per_task),
            eval_s=took,
            produced_at=time.time(),
        )
        # Metrics first: whoever has read the published result finds them already set.
        self.m.accuracy.set(result.accuracy)
        for task, value in result.per_task.items():
            self.m.task_accuracy.labels(task).set(value)
        self.m.eval_seconds.observe(took)
        self.m.version.set(version)
        self.m.evaluations.inc()
        self.producer.send("eval.results", result, self.run_name)
        self.producer.flush()
        log.info(
            "evaluator: v%d step %d accuracy %.3f on %d items (%.1fs)",
            version,
            step,
            result.accuracy,
            result.n,
            took,
        )
        return result

    def step(self) -> EvalResult | None:
        """Evaluate the newest verified version if one is due; the published result, else
        None."""
        now = time.monotonic()
        if now - self.schedule.last_start < self.schedule.min_interval_s:
            return None  # not yet: let updates gather
        upd = self.follow()
        if upd is None or not self.schedule.due(upd.version, now):
            return None
        self.schedule.started(upd.version, now)
        return self.evaluate(upd.version, upd.step)

    def run(self, stopping: Callable[[], bool]) -> int:
        """Evaluate the newest published version that verifies, or version 0 if there is none
        (the starting model), then each due version."""
        self.weights.caught_up.wait(START_WAIT_S)
        if self.step() is None and self.cfg.evaluate_initial and self.verified <= 0:
            self.schedule.started(0, time.monotonic())
            self.evaluate(0, 0)
        while not stopping():
            if self.step() is None:
                time.sleep(0.2)
        if self.cfg.evaluate_final:
            self.final()
        return 0

    def final(self, sync_s: float = 5.0) -> EvalResult | None:
        """Evaluate the newest version that verifies if it has not been (its result, else
        None): what the run ends with, which `min_interval_s` may have skipped."""
        began = time.monotonic()
        if not self.weights.sync(sync_s):
            log.warning(
                "evaluator: weights not read to the end in %.0fs: may miss the last", sync_s
            )
        self.follow()
        if self.verified <= self.schedule.last_version:
            return None
        spent = time.monotonic() - began  # reading and loading the last weights
        if spent + self.last_eval_s > self.cfg.evaluate_final_max_s:
            log.warning(
                "evaluator: stopping; v%d not evaluated: loading it took %.0fs and the last "
                "evaluation %.0fs (evaluate_final_max_s %.0fs)",
                self.verified,
                spent,
                self.last_eval_s,
                self.cfg.evaluate_final_max_s,
            )
            return None
        self.schedule.started(self.verified, time.monotonic())
        log.info("evaluator: stopping; evaluating the last version, v%d", self.verified)
        return self.evaluate(self.verified, self.verified_step)

    def close(self) -> None:
        self.weights.stop()
        self.producer.close()
