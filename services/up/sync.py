"""`rollstream up --mode sync`: the same stage code in one process, in lockstep, with no bus —
generate → score → filter → train → publish, one step at a time. The baseline every benchmark
compares the streaming pipeline against.

This module is a composition root: unlike a stage, it imports each stage's pure core (feed
pool, generator backend, reward combiner, filter core, replay buffer, learner trainer) and
drives them directly. Weights are "published" by copying the learner's tensors into the
generator's model in memory; evaluation runs in-process on the held-out split.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

from rollstream.schemas import Rollout, TrainBatch
from rollstream.services.runtime.config import RunConfig, dump, section


def run_sync(cfg: RunConfig, run_dir: Path | None = None, log: Any = print) -> int:
    import torch

    from rollstream.services.evaluator.config import EvaluatorConfig
    from rollstream.services.evaluator.service import eval_items
    from rollstream.services.feed.config import FeedConfig
    from rollstream.services.feed.items import build_pool, epoch_order
    from rollstream.services.filter.config import FilterConfig
    from rollstream.services.filter.core import FilterCore
    from rollstream.services.generator.backend import make_backend
    from rollstream.services.generator.config import GeneratorConfig
    from rollstream.services.generator.rollouts import request_of, rollouts_of
    from rollstream.services.learner.config import LearnerConfig
    from rollstream.services.learner.trainer import Trainer
    from rollstream.services.models.evaluate import heldout_accuracy
    from rollstream.services.models.load import (
        ensure_base_model,
        load_model,
        load_tokenizer,
        resolve_template,
    )
    from rollstream.services.replay.buffer import ReplayBuffer
    from rollstream.services.replay.config import ReplayConfig
    from rollstream.services.scorer.combine import Combiner
    from rollstream.services.scorer.config import ScorerConfig
    from rollstream.services.up.main import new_run_dir

    feed = section(cfg, "feed", FeedConfig)
    gen = section(cfg, "generator", GeneratorConfig)
    filt = section(cfg, "filter", FilterConfig)
    rep = section(cfg, "replay", ReplayConfig)
    lcfg = section(cfg, "learner", LearnerConfig)
    ecfg = section(cfg, "evaluator", EvaluatorConfig)
    combiner = Combiner.from_config(section(cfg, "scorer", ScorerConfig))
    run_dir = run_dir or new_run_dir(cfg.name + "-sync")
    (run_dir / "config.yaml").write_text(dump(cfg))
    torch.manual_seed(cfg.seed)
    if lcfg.threads:
        torch.set_num_threads(lcfg.threads)
    model_dir = cfg.model.path or str(ensure_base_model())
    backend = make_backend(
        "transformers" if gen.backend == "auto" else gen.backend,
        model_dir,
        seed=cfg.seed,
        dtype=cfg.model.dtype,
    )
    tok = load_tokenizer(model_dir)
    # prompts as the generator stage would send them: its template and system prompt
    template = gen.template or resolve_template(cfg.model.template, cfg.model.path, tok)
    system = gen.system_prompt or cfg.model.system_prompt
    overrides = feed.sampling_overrides()  # the feed's per-prompt sampling, as it sends it
    trainer = Trainer(lcfg, load_model(model_dir, dtype="float32"), pad_id=tok.pad_token_id or 0)
    core = FilterCore(filt)
    buffer = ReplayBuffer(rep)
    pool = build_pool(feed, feed.seed if feed.seed is not None else cfg.seed)
    items = eval_items(ecfg.task_entries(cfg.feed), ecfg.items_per_task)
    started = time.time()
    evals: list[dict[str, Any]] = []
    counts = {"generated": 0, "trained": 0, "dropped": 0}
    stale: list[int] = []  # versions behind at training, per trained sample
    phase = {"generate": 0.0, "train": 0.0}  # seconds in the two big phases

    def evaluate() -> None:
        if not items:
            return
        acc = heldout_accuracy(
            trainer.model,
            tok,
            items,
            batch_size=ecfg.batch_size,
            max_new_tokens=ecfg.max_new_tokens,
        )
        rec = {
            "t": time.time() - started,
            "wall": time.time(),
            "version": trainer.version,
            "step": trainer.step,
            "accuracy": acc.accuracy,
            "per_task": acc.per_task,
            "n": acc.n,
        }
        evals.append(rec)
        with open(run_dir / "eval.jsonl", "a") as f:  # as it happens, for live readers
            f.write(json.dumps(rec) + "\n")
        log(
            f"[sync {rec['t']:6.0f}s] step {trainer.step} v{trainer.version} "
            f"accuracy {acc.accuracy:.3f} {acc.per_task}"
        )

    def done() -> bool:
        t = cfg.target
        if t.steps and trainer.step >= t.steps:
            return True
        if t.minutes and time.time() - started >= t.minutes * 60:
            return True
        return bool(t.accuracy and evals and evals[-1]["accuracy"] >= t.accuracy)

    evaluate()
    epoch, cursor, order = 0, 0, epoch_order(len(pool), cfg.seed, 0, feed.shuffle)
    last_eval = time.time()
    seq = 0
    while not done():
        batch_items = []
        while len(batch_items) < gen.batch_prompts:
            if cursor >= len(order):
                epoch, cursor = epoch + 1, 0
                order = epoch_order(len(pool), cfg.seed, epoch, feed.shuffle)
            batch_items.append(pool[order[cursor]])
            cursor += 1
        now = time.time()
        tasks = [it.prompt_task(feed.n, epoch, now, overrides, feed.template) for it in batch_items]
        reqs = [
            request_of(t, f"{t.task_id}@{epoch}.{seq}.{i}", gen.sampling, tok, template, system)
            for i, t in enumerate(tasks)
        ]
        t_gen = time.perf_counter()
        outs = backend.generate(reqs)
        phase["generate"] += time.perf_counter() - t_gen
        now = time.time()
        rollouts = [
            ro
            for task, req, samples in zip(tasks, reqs, outs, strict=True)
            for ro in rollouts_of(task, req, samples, trainer.version, now)
        ]
        counts["generated"] += len(rollouts)
        scores = asyncio.run(_score_all(combiner, rollouts))
        for ro, sc in zip(rollouts, scores, strict=True):
            sr = sc.of(ro, 0.0, now)
            _, outcome = core.add(sr, now)
            if outcome is None:
                continue
            counts["dropped"] += sum(len(d.rollout_ids) for d in outcome.drops)
            if outcome.group is not None:
                buffer.add(outcome.group)
        buffer.set_learner_version(trainer.version)
        while len(buffer) >= rep.batch_groups and not done():
            draft = buffer.build_batch()
            counts["dropped"] += sum(len(r.group.samples) for r in draft.expired)
            if not draft.items:
                break
            seq += 1
            batch = TrainBatch(
                batch_id=f"sync-{seq}",
                learner_id=lcfg.learner_id,
                seq=seq,
                items=draft.items,
                learner_version=trainer.version,
                produced_at=time.time(),
            )
            result = trainer.train(batch)
            if result is None:
                continue
            phase["train"] += result.compute_s
            counts["trained"] += result.rollouts
            stale.extend(result.staleness)
            if trainer.step % lcfg.publish_every == 0:
                trainer.version += 1
                backend.model.load_state_dict(trainer.model.state_dict())  # type: ignore[attr-defined]
                buffer.set_learner_version(trainer.version)
        if time.time() - last_eval >= ecfg.min_interval_s:
            evaluate()
            last_eval = time.time()
    evaluate()
    summary = {
        "mode": "sync",
        "wall_s": time.time() - started,
        "steps": trainer.step,
        "version": trainer.version,
        "evals": evals,
        **counts,
        "staleness_mean": sum(stale) / len(stale) if stale else None,
        "staleness_max": max(stale, default=None),
        "generate_s": phase["generate"],
        "train_s": phase["train"],
    }
    (run_dir / "sync_summary.json").write_text(json.dumps(summary, indent=2))
    log(
        f"sync run: {trainer.step} steps in {summary['wall_s']:.0f}s; accuracy "
        f"{evals[0]['accuracy'] if evals else float('nan'):.3f} -> "
        f"{evals[-1]['accuracy'] if evals else float('nan'):.3f}; run folder {run_dir}"
    )
    return 0


async def _score_all(combiner: Any, rollouts: list[Rollout]) -> list[Any]:
    return await asyncio.gather(*(combiner.score(r) for r in rollouts))
