"""The supervising loop of `rollstream up`: start the stage processes, scrape their metrics
once a second into `metrics.jsonl`, collect `eval.results` into `eval.jsonl`, restart a
process that died, draw the live view, and stop everything at the target or on Ctrl-C."""

from __future__ import annotations

import json
import logging
import signal
import time
from pathlib import Path
from typing import Any

from rollstream.services.runtime.bus import Consumer
from rollstream.services.runtime.config import RunConfig
from rollstream.services.up.scrape import drops_by_reason, scrape, total
from rollstream.services.up.supervisor import Supervisor
from rollstream.services.up.tbevents import EventWriter, WandbSink
from rollstream.services.up.view import per_task_text, render, summarize_stage

log = logging.getLogger(__name__)
BUCKETS_EVERY_S = 10.0  # metrics.jsonl: histogram buckets in one record every this many seconds
ORDER = ("feed", "generator", "scorer", "filter", "replay", "learner", "evaluator")


class Loop:
    def __init__(
        self,
        cfg: RunConfig,
        run_dir: Path,
        config_path: Path,
        view: bool = True,
        resume: bool = False,
    ) -> None:
        self.cfg, self.run_dir, self.view = cfg, run_dir, view
        self.sup = Supervisor(run_dir, config_path, cfg.kafka.bootstrap, cfg.kafka.namespace)
        for stage in ORDER:
            spec = cfg.stages.get(stage)
            for i in range(cfg.replicas(stage)):
                self.sup.add(stage, i, spec.env if spec else None)
        self.stopping = False
        self.signals = 0  # Ctrl-C / SIGTERM received
        self.started = time.time()
        self.opened = self.started  # this session's start (`started` moves back on a resume)
        self.buckets_at = -float("inf")  # when metrics.jsonl last got histogram buckets
        self.accuracy: list[tuple[float, float]] = []
        self.reward: list[float] = []
        self.prev: dict[str, tuple[float, dict[str, float]]] = {}
        self.restarts = 0
        self.failed: dict[str, list[str]] = {}
        """Stages given up on (name -> the reason and their last error lines)."""
        self.unclean: dict[str, int] = {}
        self.per_task: dict[str, float] = {}
        self.last_line = 0.0
        self.tb: EventWriter | None = None
        self.seen_evals: set[tuple[int, int]] = set()
        if resume:
            self._continue_history()
        self.wandb: WandbSink | None = None

    def _on_signal(self, signum: int, frame: object) -> None:
        """The first Ctrl-C (or SIGTERM) stops the run cleanly; another while it stops kills
        the stages that have not exited yet, as a crash would (a run on a Kafka that keeps its
        data resumes from their last checkpoints)."""
        self.signals += 1
        if self.signals > 1:  # not the first: a stop a failing stage began is still clean
            self.sup.hurry = True
        self.stopping = True

    def progress(self, step: float) -> tuple[float, str, bool]:
        t = self.cfg.target
        minutes = (time.time() - self.started) / 60
        parts, fracs, done = [], [], False
        if t.steps:
            fracs.append(step / t.steps)
            parts.append(f"step {step:.0f}/{t.steps}")
            done |= step >= t.steps
        if t.minutes:
            fracs.append(minutes / t.minutes)
            parts.append(f"{minutes:.1f}/{t.minutes:g} min")
            done |= minutes >= t.minutes
        if t.accuracy:
            acc = self.accuracy[-1][1] if self.accuracy else 0.0
            fracs.append(acc / t.accuracy)
            parts.append(f"accuracy {acc:.1%}/{t.accuracy:.0%}")
            done |= acc >= t.accuracy
        label = "target: " + (
            ", ".join(parts) if parts else f"none ({minutes:.1f} min; Ctrl-C stops)"
        )
        return (max(fracs) if fracs else 0.0), label, done

    def tick(self, evals: Consumer, hist, evf) -> Any:  # type: ignore[no-untyped-def]
        now = time.time()
        stages: dict[str, dict[str, Any]] = {}
        record: dict[str, Any] = {"t": now - self.started}
        # histogram buckets are 70 % of a record: in one record every BUCKETS_EVERY_S
        buckets = now - self.buckets_at >= BUCKETS_EVERY_S
        if buckets:
            self.buckets_at = now
        learner_step = 0.0
        for stage in ORDER:
            procs = [p for p in self.sup.procs if p.stage == stage]
            if not procs:
                continue
            snap: dict[str, float] = {}
            for p in procs:
                for k, v in scrape(p.port).items():
                    snap[k] = snap.get(k, 0.0) + v
            p0 = f"rollstream_{stage}_"
            cur = {
                "in": total(snap, p0 + "messages_in_total"),
                "out": total(snap, p0 + "messages_out_total"),
                "tokens": total(snap, p0 + "tokens_total"),
            }
            last_t, last = self.prev.get(stage, (now, cur))
            dt = max(now - last_t, 1e-6)
            rates = {k: (cur[k] - last.get(k, 0.0)) / dt for k in cur} if last is not cur else {}
            self.prev[stage] = (now, cur)
            s = summarize_stage(stage, snap, rates)
            s["procs"] = f"{sum(p.alive() for p in procs)}/{len(procs)}"
            stages[stage] = s
            record[stage] = {
                k: v
                for k, v in snap.items()
                if k.startswith("rollstream_") and (buckets or "_bucket{" not in k)
            }
            if stage == "learner":
                learner_step = total(snap, "rollstream_learner_step")
            if stage == "scorer" and "rollstream_scorer_reward_mean{reward=total}" in snap:
                self.reward.append(snap["rollstream_scorer_reward_mean{reward=total}"] / len(procs))
        hist.write(json.dumps(record) + "\n")
        hist.flush()
        series = self.tb_series(stages, record)
        for sink in (self.tb, self.wandb):
            if sink is not None:
                sink.scalars(series, int(learner_step), now)
        self.take_evals(evals.poll(100, 0.0), evf, now)
        self.supervise(now)
        stages["_restarts"] = {p.name: p.restarts for p in self.sup.procs if p.restarts}
        stages["_errors"] = {
            p.name: p.last_error for p in self.sup.procs if p.last_error and not p.alive()
        }
        frac, label, done = self.progress(learner_step)
        return stages, frac, label, done

    def last_evals(self, evals: Any, wait_s: float = 5.0) -> None:
        """The results published since the last tick (the evaluator's final one among them),
        read to the end of eval.results."""
        deadline = time.time() + wait_s
        try:
            with open(self.run_dir / "eval.jsonl", "a") as evf:
                while time.time() < deadline:
                    self.take_evals(evals.poll(100, 0.2), evf, time.time())
                    if evals.at_end():
                        break
        except Exception as exc:  # the broker went first: the results it had are in Kafka
            print(f"note: last evaluation results not read: {exc}", flush=True)

    def take_evals(self, recs: list[Any], evf: Any, now: float) -> None:
        """New EvalResults: to the view's series, TensorBoard/W&B and eval.jsonl, each at the
        time it was produced (read later at a stop: the evaluator's final one)."""
        for r in recs:
            e = r.value
            # not after it was read (another host's clock), nor before this session began (a
            # result of the run's earlier session that it never wrote: at the resume, not
            # back before the resumed clock's start)
            at = min(max(e.produced_at, self.opened), now)
            if (e.policy_version, e.step) in self.seen_evals:
                continue  # written before a resume
            self.seen_evals.add((e.policy_version, e.step))
            self.accuracy.append((at - self.started, e.accuracy))
            self.per_task = dict(e.per_task)
            acc = {"accuracy/held_out": e.accuracy}
            acc.update({f"accuracy/{k}": v for k, v in e.per_task.items()})
            for sink in (self.tb, self.wandb):
                if sink is not None:
                    sink.scalars(acc, e.step, at)
            evf.write(
                json.dumps(
                    {
                        "t": at - self.started,
                        "wall": at,
                        "version": e.policy_version,
                        "step": e.step,
                        "accuracy": e.accuracy,
                        "per_task": e.per_task,
                        "n": e.n,
                    }
                )
                + "\n"
            )
            evf.flush()

    def _continue_history(self) -> None:
        """A resumed run: its clock goes on from the last metrics record, the evals it already
        has are not written twice (eval.results is read from the beginning), and the view and
        the accuracy target start from the last accuracy."""
        last_t = 0.0
        hist = self.run_dir / "metrics.jsonl"
        if hist.exists():
            for line in hist.read_text().splitlines():
                if line.strip():
                    last_t = max(last_t, json.loads(line).get("t", 0.0))
        self.started = time.time() - last_t
        evf = self.run_dir / "eval.jsonl"
        for line in evf.read_text().splitlines() if evf.exists() else []:
            if line.strip():
                e = json.loads(line)
                self.seen_evals.add((e["version"], e["step"]))
                self.accuracy.append((e["t"], e["accuracy"]))
                self.per_task = dict(e.get("per_task") or {})

    def tb_series(self, stages: dict[str, Any], record: dict[str, Any]) -> dict[str, float]:
        """The plots' series as TensorBoard scalars (accuracy is written as evals arrive)."""
        out: dict[str, float] = {}
        if self.reward:
            out["reward/mean"] = self.reward[-1]
        for stage, s in stages.items():
            if stage.startswith("_"):
                continue
            out[f"throughput/{stage}_out_per_s"] = s["out_rate"]
            out[f"lag/{stage}"] = s["lag"]
        if "staleness" in stages.get("replay", {}):
            out["staleness/mean_at_handout"] = stages["replay"]["staleness"]
        for reason, v in drops_by_reason(record).items():
            out[f"drops/{reason}"] = v
        learner = record.get("learner", {})
        if "rollstream_learner_loss" in learner:
            out["learner/loss"] = total(learner, "rollstream_learner_loss")
        out["restarts"] = float(self.restarts)
        return out

    def supervise(self, now: float) -> None:
        """Restart a process that died with an error (backing off 2^k s); one that failed
        `up.fail_restarts` times within `up.fail_window_s` stops the run with its error."""
        rule = self.cfg.up
        for p in self.sup.dead():
            if p.popen is None or p.popen.returncode == 0:
                continue  # finished its work (e.g. a feed with a fixed number of epochs)
            if self.stopping:
                continue
            code = p.popen.returncode
            if self.sup.note_failure(p, now):
                recent = [t for t in p.failures if now - t <= rule.fail_window_s]
                why = f"exited with {code}"
                print(f"{p.name} {why}; last lines of {p.log}:", flush=True)
                for line in p.last_error:
                    print(f"    {line}", flush=True)
                if len(recent) >= rule.fail_restarts:
                    self.failed[p.name] = [
                        f"{why} {len(recent)} times within {rule.fail_window_s:g} s "
                        f"(up.fail_restarts={rule.fail_restarts}); log {p.log}",
                        *p.last_error,
                    ]
                    self.stopping = True
                    continue
            if time.time() - p.started_at >= min(30.0, 2.0**p.restarts):
                # back off: a process that keeps dying is restarted at most every 2^k s
                log.warning("%s exited with %s; restarting", p.name, code)
                self.restarts += 1
                self.sup.restart(p)

    def progress_line(self, stages: dict[str, Any], label: str) -> str:
        """One line for logs and pipes: everything a user watches, in one place."""
        learner = stages.get("learner", {})
        gen = stages.get("generator", {})
        replay = stages.get("replay", {})
        acc = f"{self.accuracy[-1][1]:.1%}" if self.accuracy else "-"
        tasks = per_task_text(self.per_task)
        live = [s for k, s in stages.items() if not k.startswith("_")]
        lag = sum(s.get("lag", 0.0) for s in live)
        drops = sum(s.get("drops", 0.0) for s in live)
        expired = sum(s.get("expired", 0.0) for s in live)
        stale = replay.get("staleness")
        return (
            f"[{time.time() - self.started:5.0f}s] step {learner.get('step', 0):.0f} "
            f"version {learner.get('version', '-')} accuracy {acc}"
            + (f" ({tasks})" if tasks else "")
            + (f" reward {self.reward[-1]:.3f}" if self.reward else " reward -")
            + f" rollouts/s {gen.get('out_rate', 0.0):.1f}"
            + (f" staleness {stale:.2f}" if stale is not None else " staleness -")
            + f" lag {lag:.0f} dropped {drops:.0f} expired {expired:.0f}"
            + f" restarts {self.restarts} · {label}"
        )

    def summary(self) -> list[str]:
        """What went wrong, for the end of `up`'s output (empty when nothing did)."""
        lines = []
        for name, why in self.failed.items():
            lines.append(f"FAILED: {name} {why[0]}")
            lines += [f"    {x}" for x in why[1:]]
        if self.unclean:
            lines.append(f"FAILED: stages that did not exit cleanly at stop: {self.unclean}")
        for p in self.sup.procs:
            if p.restarts and p.name not in self.failed:
                lines.append(f"note: {p.name} was restarted {p.restarts} time(s); log {p.log}")
        return lines

    def run(self) -> int:
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGTERM, self._on_signal)
        self.sup.start_all()
        evals = Consumer(
            self.cfg.kafka,
            "up",
            ["eval.results"],
            group=None,
            from_beginning=True,
            dead_letters=False,  # a bad record is skipped and logged, never the end of `up`
        )
        title = f"rollstream up · {self.run_dir.name} · {self.cfg.kafka.bootstrap}"
        live = None
        if self.view:
            from rich.live import Live

            live = Live(refresh_per_second=2, transient=False)
            live.start()
        self.tb = EventWriter(self.run_dir / "tensorboard")
        self.wandb = WandbSink.open(
            self.run_dir.name, self.run_dir, self.cfg.model_dump(mode="json")
        )
        try:
            with (
                open(self.run_dir / "metrics.jsonl", "a") as hist,
                open(self.run_dir / "eval.jsonl", "a") as evf,
            ):
                while not self.stopping:
                    time.sleep(1.0)
                    stages, frac, label, done = self.tick(evals, hist, evf)
                    if live is not None:
                        live.update(
                            render(
                                title,
                                stages,
                                self.accuracy,
                                self.reward,
                                frac,
                                label,
                                self.per_task,
                            )
                        )
                    elif time.time() - self.last_line >= self.cfg.up.progress_every_s or done:
                        self.last_line = time.time()
                        print(self.progress_line(stages, label), flush=True)
                    if done:
                        break
        finally:
            if live is not None:
                live.stop()
            print(
                "stopping: SIGTERM to every stage, the evaluator once the others have exited "
                "(they commit and checkpoint; it evaluates the last version; Ctrl-C again to "
                "kill them now)...",
                flush=True,
            )
            # the evaluator last: once the learner has exited it evaluates the final version
            codes = self.sup.stop_all(grace_s=60.0, order=ORDER, after=("evaluator",))
            self.last_evals(evals)
            evals.close()
            self.tb.close()
            if self.wandb is not None:
                self.wandb.close()
            self.unclean = {
                k: v for k, v in codes.items() if v not in (0, -15) and k not in self.failed
            }
        return 1 if (self.failed or self.unclean) else 0
