"""`rollstream report RUN`: rebuild a run's plots from its metrics history and print a summary,
and for a stream run where its time went, window by window (`phases`).

Plots (PNG, in the run folder): accuracy.png (held-out accuracy and reward against wall time
and against learner step), throughput.png (messages out per second per stage), staleness.png
(mean version lag of trained samples), drops.png (dropped rollouts by reason)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from rollstream.services.tools.target import is_sync_run
from rollstream.services.up.scrape import by_label, drops_by_reason, total

STAGES = ("feed", "generator", "scorer", "filter", "replay", "learner")


def _jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def series(hist: list[dict[str, Any]], stage: str, metric: str) -> tuple[list[float], list[float]]:
    ts, vs = [], []
    for rec in hist:
        if stage in rec:
            ts.append(rec["t"])
            vs.append(total(rec[stage], metric))
    return ts, vs


def rate(ts: list[float], vs: list[float]) -> tuple[list[float], list[float]]:
    out_t, out_v = [], []
    for i in range(1, len(ts)):
        dt = ts[i] - ts[i - 1]
        if dt > 0:
            out_t.append(ts[i])
            out_v.append(max(0.0, (vs[i] - vs[i - 1]) / dt))
    return out_t, out_v


def _ledger_step(run: Path) -> int:
    """The learner step of the ledger `up` saved when the run stopped (0 if none)."""
    path = run / "ledger.json"
    return (
        int(json.loads(path.read_text())["ledger"].get("learner_step", 0)) if path.exists() else 0
    )


def write_report(run: Path, hist: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Plots and the summary of `run`; `hist`: its metrics history, if already read."""
    import matplotlib

    matplotlib.use("Agg")
    hist = _jsonl(run / "metrics.jsonl") if hist is None else hist
    evals = _jsonl(run / "eval.jsonl")
    _plot_accuracy(run, hist, evals)
    if is_sync_run(run) and (run / "sync_summary.json").exists():
        return _sync_summary(run, evals)
    _plot_throughput(run, hist)
    _plot_staleness(run, hist)
    drops = _drops(hist)
    _plot_drops(run, drops)
    _plot_idle(run, hist)
    summary = {
        "run": run.name,
        "wall_minutes": round(hist[-1]["t"] / 60, 2) if hist else 0.0,
        "base_accuracy": evals[0]["accuracy"] if evals else None,
        "final_accuracy": evals[-1]["accuracy"] if evals else None,
        "best_accuracy": max(e["accuracy"] for e in evals) if evals else None,
        "eval_points": len(evals),
        # the learner's own step gauge (scraped now and then: its last sample may be a step or
        # two short), the step of the last version evaluated, and the ledger's (from the
        # learner's feedback, read when the run stopped): the most of them, as `up` printed
        "learner_steps": int(
            max(
                *(total(r.get("learner", {}), "rollstream_learner_step") for r in hist),
                *(e.get("step") or 0 for e in evals[-1:]),
                _ledger_step(run),
                0,
            )
        ),
        "learner_step_at_last_eval": evals[-1]["step"] if evals else None,
        "drops": drops,
        **idle_shares(hist[-1] if hist else {}),
        **pipeline_latency(hist[-1] if hist else {}),
    }
    (run / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def _sync_summary(run: Path, evals: list[dict[str, Any]]) -> dict[str, Any]:
    """A `--mode sync` run has no stages to scrape: its figures are in sync_summary.json
    (only the accuracy plot applies)."""
    sync = json.loads((run / "sync_summary.json").read_text())
    for stale in ("throughput.png", "staleness.png", "drops.png", "idle.png"):
        (run / stale).unlink(missing_ok=True)  # empty axes would say nothing happened
    summary = {
        "run": run.name,
        "mode": "sync",
        "finished": sync.get("finished", True),
        "wall_minutes": round(sync["wall_s"] / 60, 2),
        "base_accuracy": evals[0]["accuracy"] if evals else None,
        "final_accuracy": evals[-1]["accuracy"] if evals else None,
        "best_accuracy": max(e["accuracy"] for e in evals) if evals else None,
        "eval_points": len(evals),
        "learner_steps": sync["steps"],
        "learner_step_at_last_eval": evals[-1]["step"] if evals else None,
        **{k: sync.get(k) for k in ("generated", "trained", "dropped", "pending")},
        "staleness_mean": sync.get("staleness_mean"),
        "generate_s": sync.get("generate_s"),
        "train_s": sync.get("train_s"),
        "threads": sync.get("threads"),
        "policy": (sync.get("policy") or {}).get("uri"),
    }
    (run / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def _plot_accuracy(run: Path, hist: list[dict[str, Any]], evals: list[dict[str, Any]]) -> None:
    """accuracy.png: held-out accuracy and the scorer's mean reward, against wall time and
    against learner step."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    if evals:
        axes[0].plot(
            [e["t"] / 60 for e in evals],
            [e["accuracy"] for e in evals],
            "o-",
            label="held-out accuracy",
        )
        axes[1].plot(
            [e["step"] for e in evals],
            [e["accuracy"] for e in evals],
            "o-",
            label="held-out accuracy",
        )
    t_r, reward = [], []
    for rec in hist:
        value = rec.get("scorer", {}).get("rollstream_scorer_reward_mean{reward=total}")
        if value is not None:
            t_r.append(rec["t"])
            reward.append(value)
    if any(reward):
        axes[0].plot([t / 60 for t in t_r], reward, alpha=0.6, label="reward mean (scorer)")
        steps = [
            total(rec.get("learner", {}), "rollstream_learner_step")
            for rec in hist
            if "rollstream_scorer_reward_mean{reward=total}" in rec.get("scorer", {})
        ]
        if len(steps) == len(reward):
            axes[1].plot(steps, reward, alpha=0.6, label="reward mean (scorer)")
    axes[0].set_xlabel("wall time (min)")
    axes[1].set_xlabel("learner step")
    for ax in axes:
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        _legend(ax, loc="lower right")
    fig.suptitle(f"{run.name}: held-out accuracy and reward")
    fig.tight_layout()
    fig.savefig(run / "accuracy.png", dpi=110)
    plt.close(fig)


def _plot_throughput(run: Path, hist: list[dict[str, Any]]) -> None:
    """throughput.png: messages out per second, per stage."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    for stage in STAGES:
        t, v = rate(*series(hist, stage, f"rollstream_{stage}_messages_out_total"))
        if any(v):
            ax.plot([x / 60 for x in t], v, label=stage)
    ax.set(xlabel="wall time (min)", ylabel="messages out / s", title="throughput per stage")
    _legend(ax)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(run / "throughput.png", dpi=110)
    plt.close(fig)


def _plot_staleness(run: Path, hist: list[dict[str, Any]]) -> None:
    """staleness.png: mean staleness of the groups replay handed out."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    # replay's histogram: learner version - group version at hand-out, the bound's definition
    ts, sums = series(hist, "replay", "rollstream_replay_staleness_versions_sum")
    _, counts = series(hist, "replay", "rollstream_replay_staleness_versions_count")
    mean = [s / c if c else 0.0 for s, c in zip(sums, counts, strict=True)]
    ax.plot([t / 60 for t in ts], mean)
    ax.set(
        xlabel="wall time (min)",
        ylabel="versions",
        title="mean staleness of handed-out groups (bound: staleness.max_versions)",
    )
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(run / "staleness.png", dpi=110)
    plt.close(fig)


def _drops(hist: list[dict[str, Any]]) -> dict[str, float]:
    """Dropped rollouts by reason at the end of the run (the filter's and replay's)."""
    return drops_by_reason(hist[-1]) if hist else {}


def _plot_drops(run: Path, drops: dict[str, float]) -> None:
    """drops.png: dropped rollouts by reason."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    if drops:
        ax.barh(list(drops), list(drops.values()))
    ax.set(xlabel="rollouts", title="dropped rollouts by reason")
    fig.tight_layout()
    fig.savefig(run / "drops.png", dpi=110)
    plt.close(fig)


def _plot_idle(run: Path, hist: list[dict[str, Any]]) -> None:
    """idle.png: the generator's and learner's idle share over the last minute."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    for stage in ("generator", "learner"):
        ts, idle = series(hist, stage, f"rollstream_{stage}_idle_ratio")
        if ts:
            ax.plot([t / 60 for t in ts], [100 * v for v in idle], label=stage)
    ax.set(xlabel="wall time (min)", ylabel="% idle (last minute)", title="idle share")
    ax.set_ylim(0, 100)
    _legend(ax)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(run / "idle.png", dpi=110)
    plt.close(fig)


def idle_shares(last: dict[str, Any]) -> dict[str, float | None]:
    """Idle share of the learner and generator over the whole run, from their phase totals:
    learner waiting for a batch / all its time; generator not in a generate call / all, and
    of the generator's time the shares held back (`generator_paused`: pacing, rollout lag)
    and waiting for prompts (`generator_starved`: the feed not far enough ahead)."""
    lrn = by_label(last.get("learner", {}), "rollstream_learner_step_phase_seconds_sum", "phase")
    gen = by_label(last.get("generator", {}), "rollstream_generator_phase_seconds_total", "phase")
    keys = ("learner_idle", "generator_idle", "generator_paused", "generator_starved")
    out: dict[str, float | None] = dict.fromkeys(keys)
    if sum(lrn.values()) > 0:
        out["learner_idle"] = round(lrn.get("wait", 0.0) / sum(lrn.values()), 3)
    if (all_s := sum(gen.values())) > 0:
        out["generator_idle"] = round(1.0 - gen.get("generate", 0.0) / all_s, 3)
        out["generator_paused"] = round(gen.get("paused", 0.0) / all_s, 3)
        out["generator_starved"] = round(gen.get("wait_prompts", 0.0) / all_s, 3)
    return out


PHASE_COLUMNS = {
    "steps_per_s": "steps\n/s",
    "learner_waiting": "learner\nwaits",
    "generating": "gen.\nsamples",
    "paused": "gen.\npaused",
    "no_prompts": "no\nprompts",
    "publishing": "gen.\nsends",
    "loading_weights": "gen.\nloads",
    "keep_rate": "keep\nrate",
    "feed_paused": "feed\npaused",
}
"""Columns of `phases` (after the window's end time), and their titles in the report."""


LEARNER_PHASES = ("wait", "compute", "publish")
GENERATOR_PHASES = {
    "generating": "generate",
    "paused": "paused",
    "no_prompts": "wait_prompts",
    "publishing": "publish",
    "loading_weights": "swap",
}


def _phase_totals(snap: dict[str, Any]) -> dict[str, float]:
    """The counters `phases` reads, summed over replicas (as the supervisor snapshots them)."""
    lrn, gen, filt = snap.get("learner", {}), snap.get("generator", {}), snap.get("filter", {})
    learner = by_label(lrn, "rollstream_learner_step_phase_seconds_sum", "phase")
    generator = by_label(gen, "rollstream_generator_phase_seconds_total", "phase")
    return {
        "steps": total(lrn, "rollstream_learner_step"),
        **{f"learner_{p}": learner.get(p, 0.0) for p in LEARNER_PHASES},
        **{key: generator.get(p, 0.0) for key, p in GENERATOR_PHASES.items()},
        "kept": total(filt, "rollstream_filter_groups_kept_total"),
        "dropped": total(filt, "rollstream_filter_groups_dropped_total"),
        "feed_paused": total(snap.get("feed", {}), "rollstream_feed_paused_seconds_total"),
    }


def phases(hist: list[dict[str, Any]], window_s: float) -> list[dict[str, float]]:
    """Where the run's time went, window by window (`window_s` seconds or the next snapshot
    after; a last shorter window when it is at least half as long): per window its end
    (`t`), the learner's steps a second and the share of its time it waited for a batch; the
    share of the generators' time (all replicas) sampling, paused (pacing, `max_raw_lag`,
    staleness), waiting for prompts (an empty queue, or the wait to fill a batch,
    `poll_timeout_s`), publishing and loading weights; the share of finished groups the
    filter kept; and the share of the window the feed was paused at its run-ahead bound.

    A whole-run share hides how a run changes as the model learns: on a GPU the keep rate fell
    from 0.56 to 0.16 over 150 s and the learner's steps a second from 7 to 2
    (benchmarks/RESULTS.md, twenty-second session). A counter that went down (a stage
    restarted, or one replica's scrape failed) ends a window without a row: its deltas would
    be wrong. Empty for a sync run (one process)."""
    live = [s for s in hist if s.get("learner") and s.get("generator")]
    rows: list[dict[str, float]] = []
    if not live:
        return rows
    prev, t_prev = _phase_totals(live[0]), live[0]["t"]
    for i, snap in enumerate(live[1:], start=2):
        dt = snap["t"] - t_prev
        last = i == len(live)
        if dt < window_s and not (last and dt >= window_s / 2):
            continue
        now = _phase_totals(snap)
        d = {k: now[k] - prev[k] for k in now}
        prev, t_prev = now, snap["t"]
        if min(d.values()) < 0 or dt <= 0:
            continue  # a counter went back: no row for this window
        learner_s = sum(d[f"learner_{p}"] for p in LEARNER_PHASES)
        generator_s = sum(d[key] for key in GENERATOR_PHASES)
        finished = d["kept"] + d["dropped"]
        row = {"t": snap["t"], "steps_per_s": d["steps"] / dt}
        row["learner_waiting"] = d["learner_wait"] / learner_s if learner_s else 0.0
        for key in GENERATOR_PHASES:
            row[key] = d[key] / generator_s if generator_s else 0.0
        row["keep_rate"] = d["kept"] / finished if finished > 0 else float("nan")
        row["feed_paused"] = d["feed_paused"] / dt
        rows.append(row)
    return rows


def auto_window(hist: list[dict[str, Any]]) -> float:
    """About 8 rows for the run's length, at least 10 s a row."""
    span = hist[-1]["t"] - hist[0]["t"] if hist else 0.0
    return max(10.0, round(span / 8 / 5) * 5)


def _legend(ax: Any, **kw: Any) -> None:
    """A legend when something was plotted (a run with no data yet: an empty plot, no warning)."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(**kw)


def pipeline_latency(last: dict[str, Any]) -> dict[str, float | None]:
    """Mean seconds a trained sample spent in each hop from generation start to training
    (`latency_<hop>_s`, from the learner's `sample_latency_seconds` histogram; the hops are
    rollstream/services/learner/metrics.HOPS), and `version_delay_s`: mean seconds from a
    weight version's publication to its load on a generator (pacing moves on it)."""
    from rollstream.services.learner.metrics import HOPS

    name = "rollstream_learner_sample_latency_seconds"
    learner = last.get("learner", {})
    out = {f"latency_{hop}_s": _mean(learner, name, f"{{hop={hop}}}") for hop in HOPS}
    gen = last.get("generator", {})
    out["version_delay_s"] = _mean(gen, "rollstream_generator_version_delay_seconds")
    return out


def _mean(snap: dict[str, float], name: str, labels: str = "") -> float | None:
    """A histogram's mean from its _sum and _count in a snapshot (None when it has none)."""
    n = snap.get(f"{name}_count{labels}") or 0
    return round(snap.get(f"{name}_sum{labels}", 0.0) / n, 4) if n else None


def main(args: argparse.Namespace) -> int:
    from rich import box
    from rich.console import Console
    from rich.table import Table

    from rollstream.services.tools.target import latest_run

    run = Path(args.run) if args.run else latest_run()
    if run is None:
        print(
            "error: no run under ./runs (give RUN, or run `rollstream up` first)", file=sys.stderr
        )
        return 2
    if not (run / "config.yaml").exists():
        what = "no such folder" if not run.exists() else "not a run folder (no config.yaml)"
        print(f"error: {run}: {what}", file=sys.stderr)
        return 2
    hist = _jsonl(run / "metrics.jsonl")
    summary = write_report(run, hist)
    table = Table("field", "value", title=f"run {run}")
    for k, v in summary.items():
        table.add_row(k, f"{v:.3f}" if isinstance(v, float) else str(v))
    console = Console()
    console.print(table)
    window = getattr(args, "window", None)
    window = auto_window(hist) if window is None else window
    rows = phases(hist, window) if window > 0 else []
    if rows:
        title = f"where the time went, every {window:g} s (% of each window; gen.: the generators)"
        by_window = Table(title=title, box=box.SIMPLE_HEAD, padding=(0, 0))
        for header in ("t\n(s)", *PHASE_COLUMNS.values()):
            by_window.add_column(header, justify="right", no_wrap=True)
        for r in rows:
            cells = [f"{r['steps_per_s']:.2f}"]
            cells += [f"{100 * r[k]:.0f}" for k in list(PHASE_COLUMNS)[1:-2]]
            keep = "-" if r["keep_rate"] != r["keep_rate"] else f"{r['keep_rate']:.2f}"  # NaN
            cells += [keep, f"{100 * r['feed_paused']:.0f}"]
            by_window.add_row(f"{r['t']:.0f}", *cells)
        console.print(by_window)
    print(f"plots: {', '.join(p.name for p in sorted(run.glob('*.png')))}")
    return 0
