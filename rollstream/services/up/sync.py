"""`rollstream up --mode sync`: the same stage code in one process, in lockstep, with no bus —
generate → score → filter → train → publish, one step at a time. The baseline every benchmark
compares the streaming pipeline against.

This module is a composition root: unlike a stage, it imports each stage's pure core (feed
pool, generator backend, reward combiner, filter core, replay buffer, learner trainer) and
drives them directly. Weights are "published" by copying the learner's tensors into the
generator's model in memory; evaluation runs in-process on the held-out split. At the end
(its target, or Ctrl-C: the step in progress finishes first) the trained policy is written
in the run folder as the stream's learner lays out its versions,
`<run>/weights/<policy>/v<version>`: an ordinary model directory that `from_pretrained` loads.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from rollstream.schemas import Group, Rollout, TrainBatch
from rollstream.services.runtime.config import RunConfig, dump, section


def run_sync(cfg: RunConfig, run_dir: Path | None = None, log: Any = print) -> int:
    # A stage runs `python -m` from up's directory, which puts that directory on its import
    # path after the plugin folders: so does this one process, for a user's module there
    # (`up` run as the `rollstream` script lacks it).
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(len(cfg.plugins), os.getcwd())
    return SyncRun(cfg, run_dir, log).run()


class SyncRun:
    """One lockstep run: `run()` evaluates, then repeats generate → score → filter → train
    (every full batch replay can build) until the run's target, and writes the summary."""

    def __init__(self, cfg: RunConfig, run_dir: Path | None, log: Any) -> None:
        import torch

        from rollstream.services.evaluator.config import EvaluatorConfig
        from rollstream.services.evaluator.service import eval_items
        from rollstream.services.feed.config import FeedConfig
        from rollstream.services.feed.items import build_pool
        from rollstream.services.filter.config import FilterConfig
        from rollstream.services.filter.core import FilterCore
        from rollstream.services.generator.backend import make_backend
        from rollstream.services.generator.config import GeneratorConfig
        from rollstream.services.learner.config import LearnerConfig
        from rollstream.services.learner.trainer import Trainer
        from rollstream.services.models.load import (
            load_model,
            load_tokenizer,
            model_dir_of,
            resolve_template,
        )
        from rollstream.services.replay.buffer import ReplayBuffer
        from rollstream.services.replay.config import ReplayConfig
        from rollstream.services.scorer.combine import Combiner
        from rollstream.services.scorer.config import ScorerConfig
        from rollstream.services.up.main import new_run_dir

        self.cfg, self.log = cfg, log
        self.feed = section(cfg, "feed", FeedConfig)
        self.gen = gen = section(cfg, "generator", GeneratorConfig)
        self.rep = section(cfg, "replay", ReplayConfig)
        self.lcfg = section(cfg, "learner", LearnerConfig)
        self.ecfg = section(cfg, "evaluator", EvaluatorConfig)
        self.combiner = Combiner.from_config(section(cfg, "scorer", ScorerConfig))
        self.run_dir = run_dir or new_run_dir(cfg.name + "-sync")
        (self.run_dir / "config.yaml").write_text(dump(cfg))
        torch.manual_seed(cfg.seed)
        if self.lcfg.deterministic:  # as the learner stage: the same batches, the same weights
            # (process-wide here, generation included: cuBLAS needs a fixed workspace for it)
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True)
            self.threads = 1
        else:
            self.threads = cfg.up.sync_threads or min(usable_cores(), SYNC_THREADS_MAX)
        torch.set_num_threads(self.threads)
        self.model_dir = model_dir = model_dir_of(cfg.model, in_child=True)
        if cfg.model.path is None:
            log(f"base model: {model_dir}")  # as a stream run says
        self.backend = make_backend(
            "transformers" if gen.backend == "auto" else gen.backend,
            model_dir,
            seed=cfg.seed,
            dtype=cfg.model.dtype,
            share_prompts=gen.share_prompts,
            static_cache=gen.static_cache,
            cuda_graphs=gen.cuda_graphs,
        )
        self.tok = tok = load_tokenizer(model_dir)
        # held-out prompts as the evaluator stage puts them: the model's own template
        self.eval_template = resolve_template(cfg.model.template, cfg.model.path, tok)
        # prompts as the generator stage would send them: its template and system prompt
        self.template = gen.template or self.eval_template
        self.system = gen.system_prompt or cfg.model.system_prompt
        self.overrides = self.feed.sampling_overrides()  # the feed's per-prompt sampling
        model = load_model(model_dir, dtype="float32")
        self.trainer = Trainer(self.lcfg, model, pad_id=tok.pad_token_id or 0)
        self.core = FilterCore(section(cfg, "filter", FilterConfig))
        self.buffer = ReplayBuffer(self.rep)
        seed = self.feed.seed if self.feed.seed is not None else cfg.seed
        self.pool = build_pool(self.feed, seed)
        self.items = eval_items(self.ecfg.task_entries(cfg.feed), self.ecfg.items_per_task)
        self.started = time.time()
        self.evals: list[dict[str, Any]] = []
        self.generated = 0
        # by rollout id, as the stream's ledger counts: with reuse (max_uses > 1) or success
        # replay a sample can be handed out, trained or dropped more than once
        self.trained_ids: set[str] = set()
        self.dropped_ids: set[str] = set()
        self.reuses = 0  # groups handed out again after their first training
        self.stale: list[int] = []  # versions behind at training, per trained sample
        self.phase = {"generate": 0.0, "train": 0.0}  # seconds in the two big phases
        self.interrupted = False  # Ctrl-C: stop after the step in progress
        self.saved: dict[str, Any] | None = None  # the trained policy written at the end
        self.epoch, self.cursor, self.order, self.seq = 0, 0, self._order(0), 0
        self.calls = 0  # generate calls so far

    def _order(self, epoch: int) -> list[int]:
        from rollstream.services.feed.items import epoch_order

        return epoch_order(len(self.pool), self.cfg.seed, epoch, self.feed.shuffle)

    def evaluate(self) -> None:
        from rollstream.services.models.evaluate import heldout_accuracy

        if not self.items:
            return
        t, e = self.trainer, self.ecfg
        acc = heldout_accuracy(
            t.model,
            self.tok,
            self.items,
            batch_size=e.batch_size,
            max_new_tokens=e.max_new_tokens,
            template=self.eval_template,  # as the evaluator stage, for comparable figures
            system_prompt=self.cfg.model.system_prompt,
        )
        rec = {
            "t": time.time() - self.started,
            "wall": time.time(),
            "version": t.version,
            "step": t.step,
            "accuracy": acc.accuracy,
            "per_task": acc.per_task,
            "n": acc.n,
        }
        self.evals.append(rec)
        with open(self.run_dir / "eval.jsonl", "a") as f:  # as it happens, for live readers
            f.write(json.dumps(rec) + "\n")
        from rollstream.services.up.view import per_task_text

        self.log(  # as the stream's progress line
            f"[sync {rec['t']:6.0f}s] step {t.step} version {t.version} "
            f"accuracy {acc.accuracy:.1%} ({per_task_text(acc.per_task)})"
        )

    def done(self) -> bool:
        if self.interrupted:
            return True
        t = self.cfg.target
        if t.steps and self.trainer.step >= t.steps:
            return True
        if t.minutes and time.time() - self.started >= t.minutes * 60:
            return True
        return bool(t.accuracy and self.evals and self.evals[-1]["accuracy"] >= t.accuracy)

    def generate(self) -> list[Rollout]:
        """The next `batch_prompts` prompts of the feed's order, sampled as the stages do."""
        from rollstream.services.generator.rollouts import request_of, rollouts_of

        picked = []
        while len(picked) < self.gen.batch_prompts:
            if self.cursor >= len(self.order):
                self.epoch, self.cursor = self.epoch + 1, 0
                self.order = self._order(self.epoch)
            picked.append(self.pool[self.order[self.cursor]])
            self.cursor += 1
        now, f, e = time.time(), self.feed, self.epoch
        tasks = [it.prompt_task(f.n, e, now, self.overrides, f.template) for it in picked]
        # the call's own number in the group id: a call's picks can wrap into the next epoch,
        # and two calls can share a learner step (self.seq), so neither tells calls apart;
        # a repeated id made replay drop the second group unseen and the ledger unbalanced
        self.calls += 1
        reqs = [
            request_of(
                t,
                f"{t.task_id}@{e}.{self.calls}.{i}",
                self.gen.sampling,
                self.tok,
                self.template,
                self.system,
            )
            for i, t in enumerate(tasks)
        ]
        t_gen = time.perf_counter()
        outs = self.backend.generate(reqs)
        self.phase["generate"] += time.perf_counter() - t_gen
        now, version = time.time(), self.trainer.version
        rollouts = [
            ro
            for task, req, samples in zip(tasks, reqs, outs, strict=True)
            for ro in rollouts_of(task, req, samples, version, now)
        ]
        self.generated += len(rollouts)
        return rollouts

    def score_and_filter(self, rollouts: list[Rollout]) -> None:
        """Score every rollout; the groups the filter keeps go into replay."""
        now = time.time()
        scores = asyncio.run(_score_all(self.combiner, rollouts))
        for ro, sc in zip(rollouts, scores, strict=True):
            _, outcome = self.core.add(sc.of(ro, 0.0, now), now)
            if outcome is None:
                continue
            for d in outcome.drops:
                self.dropped_ids.update(d.rollout_ids)
            if outcome.group is not None:
                added = self.buffer.add(outcome.group)
                self._dropped(r.group for r in added.removed if r.uses == 0)  # evicted, stale

    def train_ready(self) -> None:
        """Train every full batch replay can build; publish by copying the weights over."""
        t, buffer = self.trainer, self.buffer
        self._advance(t.version)
        while len(buffer) >= self.rep.batch_groups and not self.done():
            draft = buffer.build_batch()
            self._dropped(r.group for r in draft.expired if r.uses == 0)  # expired before use
            if not draft.items:
                break
            self.seq += 1
            batch = TrainBatch(
                batch_id=f"sync-{self.seq}",
                learner_id=self.lcfg.learner_id,
                seq=self.seq,
                items=draft.items,
                learner_version=t.version,
                produced_at=time.time(),
            )
            result = t.train(batch)
            rejected = {gid for gid, _ in t.rejected}  # untrainable (a bad token id): dropped
            self._dropped(it.group for it in draft.items if it.group.group_id in rejected)
            if result is None:
                continue
            self.phase["train"] += result.compute_s
            for it in draft.items:
                if it.group.group_id not in rejected:
                    self.trained_ids.update(s.rollout.rollout_id for s in it.group.samples)
                    self.reuses += it.uses > 1
            self.stale.extend(result.staleness)
            if t.step % self.lcfg.publish_every == 0:
                t.version += 1
                self.backend.model.load_state_dict(t.model.state_dict())  # type: ignore[attr-defined]
                self._advance(t.version)

    def run(self) -> int:
        with self._stop_on_ctrl_c():
            self.evaluate()
            last_eval = last_save = time.time()
            every = self.cfg.up.sync_save_every_s
            while not self.done():
                self.score_and_filter(self.generate())
                self.train_ready()
                if time.time() - last_eval >= self.ecfg.min_interval_s:
                    self.evaluate()
                    last_eval = time.time()
                if every and time.time() - last_save >= every and not self.done():
                    self.save_policy_so_far()
                    last_save = time.time()
            if self.interrupted:
                self.log(f"sync run: stopped by a signal after step {self.trainer.step}")
            if not self.evals or self.evals[-1]["step"] != self.trainer.step:
                self.evaluate()
            if not (self.saved and self.saved["step"] == self.trainer.step):
                self.save()
            self.write_summary()
        return 0

    @contextlib.contextmanager
    def _stop_on_ctrl_c(self) -> Iterator[None]:
        """While the run goes (main thread only): the first Ctrl-C or SIGTERM ends it after the
        step in progress, with its evaluation, policy and summary; a second Ctrl-C interrupts
        at once. The handler only sets a flag (printing from it could re-enter a print)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def first(signum: int, frame: Any) -> None:
            self.interrupted = True
            signal.signal(signal.SIGINT, signal.default_int_handler)

        old = {sig: signal.signal(sig, first) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in old.items():
                signal.signal(sig, handler)

    def save(self) -> None:
        """Write the trained policy as a weight version, as the stream's learner does."""
        from rollstream.services.models.weights import default_store, publish_version

        t, w = self.trainer, self.cfg.weights
        # Always the run folder: a shared `weights.uri` (a stream run's config names its
        # store) would have this version replace or prune that run's own.
        store = default_store(None, str(self.run_dir))
        assert store is not None
        upd = publish_version(
            t.model,
            store=store,
            policy=self.cfg.model.policy,
            version=t.version,
            step=t.step,
            model_dir=self.model_dir,
            wire_dtype=None if w.wire_dtype == "auto" else w.wire_dtype,  # as trained
        )
        self.saved = {
            "uri": upd.uri,
            "version": upd.version,
            "sha256": upd.sha256,  # weightfile.digest_file(<uri>/model.safetensors, chunk_bytes)
            "chunk_bytes": upd.chunk_bytes,
            "step": t.step,
        }

    def save_policy_so_far(self) -> None:
        """While the run goes (`up.sync_save_every_s`): the newest version and a summary
        naming it, unless no version was published since the last one."""
        t = self.trainer
        if t.version == 0 or (self.saved and self.saved["version"] == t.version):
            return  # nothing published since (publish_every > 1): one folder per version
        self.save()
        self.write_summary(finished=False)
        assert self.saved is not None
        self.log(
            f"[sync {time.time() - self.started:6.0f}s] policy v{self.saved['version']} "
            f"(step {self.trainer.step}) written: {self.saved['uri']}"
        )

    def _advance(self, version: int) -> None:
        """Replay's learner version; what that makes too stale never trained is dropped."""
        self._dropped(r.group for r in self.buffer.set_learner_version(version) if r.uses == 0)

    def _dropped(self, groups: Iterable[Group]) -> None:
        for g in groups:
            self.dropped_ids.update(s.rollout.rollout_id for s in g.samples)

    def ledger(self) -> dict[str, int]:
        """Each rollout generated so far in one place, by id as the stream's ledger counts:
        trained (at least once), else dropped (by the filter, evicted, expired unused,
        untrainable), else pending (in replay's buffer, not handed out yet). Each generate
        call's groups finish within it: none wait in the filter."""
        dropped = self.dropped_ids - self.trained_ids
        pending = self.buffer.untrained_ids() - self.trained_ids - dropped
        return {
            "generated": self.generated,
            "trained": len(self.trained_ids),
            "dropped": len(dropped),
            "pending": len(pending),
            "reuses": self.reuses,
        }

    def write_summary(self, finished: bool = True) -> None:
        """`sync_summary.json`: the run's figures and the policy written last; `finished`
        false while the run goes (a periodic save), true at its end."""
        evals, stale = self.evals, self.stale
        summary = {
            "mode": "sync",
            "finished": finished,
            "wall_s": time.time() - self.started,
            "steps": self.trainer.step,
            "version": self.trainer.version,
            "evals": evals,
            **self.ledger(),
            "staleness_mean": sum(stale) / len(stale) if stale else None,
            "staleness_max": max(stale, default=None),
            "generate_s": self.phase["generate"],
            "train_s": self.phase["train"],
            "threads": self.threads,
            "interrupted": self.interrupted,
            "policy": self.saved,
        }
        tmp = self.run_dir / "sync_summary.json.tmp"  # replaced whole: a reader never sees half
        tmp.write_text(json.dumps(summary, indent=2))
        tmp.replace(self.run_dir / "sync_summary.json")
        if not finished:
            return
        from rollstream.services.up.main import accuracy_lines

        self.log(
            f"sync run: {self.trainer.step} steps in {summary['wall_s']:.0f}s on "
            f"{self.threads} thread(s); run folder {self.run_dir}"
        )
        for line in accuracy_lines(self.run_dir):  # as a stream run ends
            self.log(line)
        if self.saved:
            self.log(f"trained policy v{self.saved['version']}: {self.saved['uri']}")


async def _score_all(combiner: Any, rollouts: list[Rollout]) -> list[Any]:
    return await asyncio.gather(*(combiner.score(r) for r in rollouts))


SYNC_THREADS_MAX = 4
"""Default torch threads of `--mode sync` at most: on 16 cores + an H100, 16 threads made
1.16x the learner steps of 4 for 2.2x the CPU, and reached +30 points no sooner once started
(benchmarks/RESULTS.md, twelfth session). `up.sync_threads` sets any number."""


def usable_cores() -> int:
    """The cores this process may use (its affinity: taskset, a CPU-limited pod's cpuset)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # no affinity on this platform
        return os.cpu_count() or 1
