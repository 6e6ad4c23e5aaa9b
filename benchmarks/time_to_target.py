"""Time to a trained model: several run configs side by side, the same seeds and budget, and a
table of wall time to +10 / +20 / +30 points of held-out accuracy.

    python benchmarks/time_to_target.py                       # the ablation, 2 seeds
    python benchmarks/time_to_target.py --rows sync async --seeds 0 --budget-s 60   # a smoke

Each run is `rollstream up --no-view` (async) or `rollstream up --mode sync`, started by this
script as its own process group. With enough cores every run gets `--cores-per-run` cores of
its own (`taskset`) and up to cores/cores-per-run runs go at once; otherwise they go one after
another on all cores. Time is wall clock from the launch of the process (broker, model load
and stage start-up included) to the first held-out evaluation at or above the run's own
starting accuracy + 10, 20, 30 points. Held-out items, evaluator, base model and budget are
the same for every row.

Prints the table; writes JSON (every run's evals and counts) and one PNG (accuracy against
wall time and against learner step, one line per row, seeds pooled by median).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stage_cpu import all_processes, cmdline, descendants, label

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
GAINS = (0.10, 0.20, 0.30)

# name -> (mode, --set overrides on top of the default run). Filters that drop what
# zero_variance keeps need bounds inside (1/8, 7/8): with groups of 8 a band of [0.05, 0.95]
# or learnability 0.09 drops exactly the zero-variance groups and nothing else.
ROWS: dict[str, tuple[str, list[str]]] = {
    "sync": ("sync", []),
    # the broker on cores of its own, outside the run's (see ELSEWHERE)
    "async-xb": ("async", []),
    "async-2gen-xb": ("async", ["stages.generator.replicas=2"]),
    "feed256": ("async", ["feed.max_ahead=256"]),  # more prompts queued for the generators
    "lead4": ("async", ["feed.lead_polls=4"]),  # the feed's bound grows to 2 s of the rate
    "fill20ms": ("async", ["generator.poll_timeout_s=0.02"]),  # a partial batch after 20 ms
    "weights500": ("async", ["generator.weights_wait_ms=500"]),  # new versions seen late
    "sync-2threads": ("sync", ["up.sync_threads=2"]),  # sync's one process on two cores
    "sync-1thread": ("sync", ["up.sync_threads=1"]),  # sync's default before the twelfth session
    "async": ("async", []),
    "ahead0": ("async", ["generator.ahead_batches=0"]),  # no pacing: sample flat out
    "ahead2": ("async", ["generator.ahead_batches=2"]),
    "ahead3": ("async", ["generator.ahead_batches=3"]),
    "ahead4": ("async", ["generator.ahead_batches=4"]),
    "async-2gen": ("async", ["stages.generator.replicas=2"]),  # for 4 cores a run
    "async-2gen-2t": ("async", ["stages.generator.replicas=2", "learner.threads=2"]),
    "a3s2": ("async", ["generator.ahead_batches=3", "staleness.max_versions=2"]),
    "a4s3": ("async", ["generator.ahead_batches=4", "staleness.max_versions=3"]),
    "fw20": ("async", ["kafka.fetch_wait_max_ms=20"]),  # shorter hops, busier broker
    "a4s2": ("async", ["generator.ahead_batches=4", "staleness.max_versions=2"]),
    "a5s4": ("async", ["generator.ahead_batches=5", "staleness.max_versions=4"]),
    "parts8": ("async", ["kafka.partitions=8"]),
    # latency on a host with cores to spare: two of every per-rollout stage (a generate
    # call's burst is worked through by two scorers and two filters) and half-size generate
    # calls (bursts of 64 rollouts, new weights taken twice as often)
    "2gen-lat": (
        "async",
        [
            "stages.generator.replicas=2",
            "stages.scorer.replicas=2",
            "stages.filter.replicas=2",
            "generator.batch_prompts=8",
        ],
    ),
    # two generators and hops as short as the broker allows: fetches wait 10 ms, producers
    # send at once (more broker CPU; for hosts with cores to spare)
    "2gen-fw10": (
        "async",
        [
            "stages.generator.replicas=2",
            "kafka.fetch_wait_max_ms=10",
            "kafka.linger_ms=0",
            "generator.weights_wait_ms=10",
        ],
    ),
    # smaller generation batches: groups reach replay in smaller, more frequent bursts and the
    # generator takes new weights sooner (less latency, fresher samples; more CPU a rollout)
    "gb8": ("async", ["generator.batch_prompts=8"]),
    "a4s2-gb8": ("async", ["generator.ahead_batches=4", "generator.batch_prompts=8"]),
    "2gen-gb8": ("async", ["stages.generator.replicas=2", "generator.batch_prompts=8"]),
    # a generate call sized to fill one learner batch of kept groups (16 / keep rate prompts)
    "fill32": ("async", ["generator.batch_prompts_max=32"]),
    "fill48": ("async", ["generator.batch_prompts_max=48"]),
    "fill64": ("async", ["generator.batch_prompts_max=64"]),
    "fill128": ("async", ["generator.batch_prompts_max=128"]),
    "fill128-f256": ("async", ["generator.batch_prompts_max=128", "feed.max_ahead=256"]),
    # weights loaded between two decoding steps (PipelineRL's in-flight update)
    "inf": ("async", ["generator.swap_policy=inflight"]),
    "a4s2-inf": ("async", ["generator.ahead_batches=4", "generator.swap_policy=inflight"]),
    "a4s2-inf-gb32": (
        "async",
        [
            "generator.ahead_batches=4",
            "generator.swap_policy=inflight",
            "generator.batch_prompts=32",
        ],
    ),
    "a4s3-2gen": (
        "async",
        ["stages.generator.replicas=2", "generator.ahead_batches=4", "staleness.max_versions=3"],
    ),
    "a4s2-2gen-gb8": (
        "async",
        ["stages.generator.replicas=2", "generator.ahead_batches=4", "generator.batch_prompts=8"],
    ),  # the registry's partitions, as before
    # eager replay: a batch goes out once 8 (4) groups are there, its lr scaled to its size
    "eager8": ("async", ["replay.min_batch_groups=8", "learner.lr_batch_groups=16"]),
    "eager4": ("async", ["replay.min_batch_groups=4", "learner.lr_batch_groups=16"]),
    "eager8-a4": (
        "async",
        ["replay.min_batch_groups=8", "learner.lr_batch_groups=16", "generator.ahead_batches=4"],
    ),
    "sync-4threads": ("sync", ["up.sync_threads=4"]),
    # every row runs its own prompt, in generation and training (before prompt sharing)
    "sync-eager": ("sync", ["generator.cuda_graphs=false"]),  # generate, as before the 20th session
    "eager": ("async", ["generator.cuda_graphs=false"]),
    # generate on any device (the CPU's path before the 21st session)
    "sync-generate": ("sync", ["generator.static_cache=false"]),
    "generate": ("async", ["generator.static_cache=false"]),
    "sync-noshare": ("sync", ["generator.share_prompts=false", "learner.share_prompts=false"]),
    "noshare": ("async", ["generator.share_prompts=false", "learner.share_prompts=false"]),
    "ahead2-s1": ("async", ["generator.ahead_batches=2", "staleness.max_versions=1"]),
    "async-s0": ("async", ["staleness.max_versions=0"]),
    "async-s1": ("async", ["staleness.max_versions=1"]),
    "async-s4": ("async", ["staleness.max_versions=4"]),
    "priority": ("async", ["replay.policy=prioritized", "replay.max_uses=2"]),
    "band": (
        "async",
        [
            "filter.chain=[{name: zero_variance},"
            " {name: pass_rate_band, params: {lo: 0.2, hi: 0.8}}]"
        ],
    ),
    "learnability": (
        "async",
        ["filter.chain=[{name: zero_variance}, {name: learnability, params: {threshold: 0.2}}]"],
    ),
    "no-oversample": ("async", ["generator.oversample=false"]),
    "old-async": (
        "async",  # this round's starting point: partial batches, a fixed budget per version
        [
            "replay.partial_after_s=0.001",
            "generator.ahead_batches=0",
            "staleness.rollouts_per_version=128",
            "learner.prefetch=2",
        ],
    ),
}
ELSEWHERE = {"async-xb", "async-2gen-xb"}
"""Rows whose Kafka broker runs outside the run's cores, as a real cluster would: this script
starts a Tansu broker per run on the host's spare cores (those in no run's slot) and points
`rollstream up --bootstrap` at it, with the settings `up` gives its own broker (a partition
a topic for each replica of the most replicated stage, a 6 s session timeout). The broker's
CPU is reported (`broker-elsewhere`) but not counted in the run's CPU a step or cores busy."""
ELSEWHERE_LABEL = "broker-elsewhere"

DEFAULT_ROWS = [
    "sync",
    "async",
    "async-s0",
    "async-s1",
    "async-s4",
    "priority",
    "band",
    "learnability",
    "no-oversample",
]


@dataclass
class Run:
    row: str
    seed: int
    name: str
    cores: list[int] | None = None
    slot: int = 0
    proc: subprocess.Popen[bytes] | None = None
    launched: float = 0.0
    evals: list[dict[str, Any]] = field(default_factory=list)
    counts: dict[str, Any] = field(default_factory=dict)
    wall_s: float = 0.0
    returncode: int | None = None
    cpu_samples: list[tuple[float, dict[int, tuple[str, float]]]] = field(default_factory=list)
    """(time.time(), pid -> (label, CPU seconds so far)) of the run's process tree, every
    CPU_EVERY_S while it runs: where the cores went (see cpu_budget)."""
    cpu: dict[str, Any] | None = None  # cpu_budget of the samples, once collected
    broker: Any = None  # the EmbeddedBroker of an ELSEWHERE row, while it runs

    def run_dir(self, runs: Path) -> Path:
        mode = ROWS[self.row][0]
        return runs / (f"{self.name}-sync" if mode == "sync" else self.name)


def command(run: Run, budget_s: float, extra: list[str]) -> list[str]:
    mode, sets = ROWS[run.row]
    cmd = [sys.executable, "-m", "rollstream.services.cli", "up", "--name", run.name]
    cmd += ["--mode", "sync"] if mode == "sync" else ["--no-view"]
    if run.broker is not None:  # what `up` sets for its own broker (up/main.py)
        cmd += ["--bootstrap", run.broker.bootstrap]
        given = (x.split("=", 1) for x in [*sets, *extra])  # --set for every run counts too
        parts = max([1, *(int(v) for k, v in given if k.endswith(".replicas"))])
        sets = ["kafka.session_timeout_ms=6000", f"kafka.partitions={parts}", *sets]
    for s in [f"target.minutes={budget_s / 60:.4f}", f"seed={run.seed}", *sets, *extra]:
        cmd += ["--set", s]
    if run.cores:
        cmd = ["taskset", "-c", ",".join(map(str, run.cores)), *cmd]
    return cmd


def start_broker(run: Run, spare: list[int], logs: Path) -> None:
    """A broker of its own for an ELSEWHERE run, every thread pinned to the `spare` cores
    (main refused to start without any)."""
    from rollstream.services.runtime.broker import EmbeddedBroker

    run.broker = EmbeddedBroker(log_path=logs / f"{run.name}-broker.log").start()
    for tid in os.listdir(f"/proc/{run.broker.proc.pid}/task"):
        os.sched_setaffinity(int(tid), spare)


def start(run: Run, budget_s: float, extra: list[str], logs: Path, runs: Path) -> None:
    log = open(logs / f"{run.name}.log", "wb")  # noqa: SIM115 (closed with the process)
    env = dict(os.environ)
    if run.cores:  # torch and BLAS: no more threads than the cores this run has
        env.setdefault("OMP_NUM_THREADS", str(len(run.cores)))
    run.launched = time.time()
    run.proc = subprocess.Popen(
        command(run, budget_s, extra),
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=runs.parent,  # `rollstream up` writes its run folder to ./runs/<name>
        env=env,
        start_new_session=True,
    )


def stop(run: Run) -> None:
    if run.proc is None or run.proc.poll() is not None:
        return
    os.killpg(run.proc.pid, signal.SIGINT)
    try:
        run.proc.wait(90)
    except subprocess.TimeoutExpired:
        os.killpg(run.proc.pid, signal.SIGKILL)
        run.proc.wait()


def stop_broker(run: Run) -> None:
    if run.broker is not None:
        run.broker.stop()
        run.broker = None


def collect(run: Run, runs: Path) -> None:
    d = run.run_dir(runs)
    path = d / "eval.jsonl"
    if path.exists():
        run.evals = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    for e in run.evals:
        e["since_launch"] = e.get("wall", run.launched) - run.launched
    if (d / "ledger.json").exists():
        led = json.loads((d / "ledger.json").read_text()).get("ledger", {})
        run.counts = {k: v for k, v in led.items() if isinstance(v, int | float)}
        run.counts["dropped"] = led.get("dropped_total")
    elif (d / "sync_summary.json").exists():
        s = json.loads((d / "sync_summary.json").read_text())
        keys = ("generated", "trained", "dropped", "steps", "staleness_mean", "staleness_max")
        run.counts = {k: s.get(k) for k in keys}
    metrics = d / "metrics.jsonl"
    if metrics.exists():  # async: the learner's last step, and the stages' idle shares
        from rollstream.services.up.report import idle_shares, pipeline_latency

        last = _last_json_line(metrics)
        run.counts["steps"] = last.get("learner", {}).get("rollstream_learner_step")
        run.counts.update(idle_shares(last))
        run.counts.update(pipeline_latency(last))
        # buckets are in one record every few seconds (up's BUCKETS_EVERY_S)
        with_buckets = _last_json_line(metrics, "rollstream_learner_staleness_versions_bucket")
        run.counts.update(trained_staleness(with_buckets.get("learner", {})))
    budget = cpu_budget(run.cpu_samples, run.evals)
    run.counts["cpu_ms_per_step"] = budget["cpu_ms_per_step"] if budget else None
    run.counts["cores_busy"] = budget["cores_busy"] if budget else None
    run.cpu = budget


CPU_EVERY_S = 2.0


def tree_cpu(
    root: int, procs: dict[int, tuple[int, float]], name: str | None = None
) -> dict[int, tuple[str, float]]:
    """pid -> (stage label, CPU seconds user + system) for `root` and every descendant in
    `procs` (all_processes()): the `up` process (sync: the whole loop), its stages and the
    embedded broker. `name`: one label for all of them instead of each process's own."""
    return {pid: (name or label(cmdline(pid)), procs[pid][1]) for pid in descendants({root}, procs)}


def sample_cpu(run: Run) -> None:
    if run.proc is None:
        return
    last = run.cpu_samples[-1][0] if run.cpu_samples else 0.0
    if time.time() - last >= CPU_EVERY_S:
        everything = all_processes()  # one read of /proc for the run and its broker
        procs = tree_cpu(run.proc.pid, everything)
        if run.broker is not None and run.broker.alive():
            procs.update(tree_cpu(run.broker.proc.pid, everything, ELSEWHERE_LABEL))
        run.cpu_samples.append((time.time(), procs))


def cpu_budget(
    samples: list[tuple[float, dict[int, tuple[str, float]]]], evals: list[dict[str, Any]]
) -> dict[str, Any] | None:
    """Where the CPU went while the run trained: from its first evaluation after step 0
    (start-up over) to its last one. CPU seconds by stage label over that window, the cores
    kept busy (CPU seconds / wall seconds), and CPU milliseconds per learner step, in all and
    by stage. A process that ended inside the window counts up to its last sample. A broker
    outside the run's cores (ELSEWHERE_LABEL) is listed by stage but left out of the totals."""
    trained = [e for e in evals if e.get("step", 0) > 0 and "wall" in e]
    if len(trained) < 2 or len(samples) < 2:
        return None
    t0, t1 = trained[0]["wall"], trained[-1]["wall"]
    steps = trained[-1]["step"] - trained[0]["step"]
    if t1 <= t0 or steps <= 0:
        return None

    def at(t: float) -> dict[int, tuple[str, float]]:
        seen: dict[int, tuple[str, float]] = {}
        for when, procs in samples:
            if when > t:
                break
            seen.update(procs)
        return seen

    # a process's name from any sample that read one: one that has exited by the last sample
    # (the learner stops before the final evaluation) has no command line left to read
    names: dict[int, str] = {}
    for _, procs in samples:
        for pid, (name, _) in procs.items():
            if name != "?" or pid not in names:
                names[pid] = name
    before, after = at(t0), at(t1)
    by_stage: dict[str, float] = {}
    for pid, (_, cpu) in after.items():
        name = names[pid]
        by_stage[name] = by_stage.get(name, 0.0) + cpu - before.get(pid, (name, 0.0))[1]
    total = sum(v for k, v in by_stage.items() if k != ELSEWHERE_LABEL)
    return {
        "window_s": t1 - t0,
        "steps": steps,
        "cpu_s": by_stage,
        "cores_busy": total / (t1 - t0),
        "cpu_ms_per_step": 1000 * total / steps,
        "cpu_ms_per_step_by_stage": {k: 1000 * v / steps for k, v in by_stage.items()},
    }


def trained_staleness(learner: dict[str, float]) -> dict[str, float | None]:
    """Mean and largest versions-behind of the samples the learner trained (its histogram)."""
    name = "rollstream_learner_staleness_versions"
    n = learner.get(f"{name}_count") or 0
    if not n:
        return {"staleness_mean": None, "staleness_max": None}
    top = None
    for key, count in learner.items():
        if key.startswith(f"{name}_bucket") and "+Inf" not in key:
            le = float(key.split("le=")[1].rstrip("}"))
            if count >= n and (top is None or le < top):
                top = le  # the smallest bucket holding every sample
    return {"staleness_mean": learner[f"{name}_sum"] / n, "staleness_max": top}


def _last_json_line(path: Path, having: str = "") -> dict[str, Any]:
    """The last record that parses (and holds the text `having`, if given)."""
    lines = path.read_text().splitlines()
    for line in reversed(lines):
        if having not in line:
            continue
        try:
            return json.loads(line)
        except json.JSONDecodeError:
            continue
    return {}


def reached(evals: list[dict[str, Any]], gain: float, key: str) -> float | None:
    """First `key` (since_launch or step) at which accuracy >= start + gain."""
    if not evals:
        return None
    base = evals[0]["accuracy"]
    for e in evals:
        if e["accuracy"] >= base + gain - 1e-9:
            return float(e[key])
    return None


def summarize(runs: list[Run], rows: list[str]) -> list[dict[str, Any]]:
    out = []
    for row in rows:
        rs = [r for r in runs if r.row == row]
        entry: dict[str, Any] = {"row": row, "seeds": [r.seed for r in rs]}
        for g in GAINS:
            times = [reached(r.evals, g, "since_launch") for r in rs]
            steps = [reached(r.evals, g, "step") for r in rs]
            entry[f"t+{round(g * 100)}"] = times
            entry[f"step+{round(g * 100)}"] = steps
        entry["best"] = [max((e["accuracy"] for e in r.evals), default=None) for r in rs]
        entry["start"] = [r.evals[0]["accuracy"] if r.evals else None for r in rs]
        for k in ("steps", "generated", "trained", "dropped", "expired", "pending"):
            entry[k] = [r.counts.get(k) for r in rs]
        entry["learner_idle"] = [r.counts.get("learner_idle") for r in rs]
        for k in ("generator_idle", "generator_paused", "generator_starved"):
            entry[k] = [r.counts.get(k) for r in rs]
        entry["staleness_mean"] = [r.counts.get("staleness_mean") for r in rs]
        entry["staleness_max"] = [r.counts.get("staleness_max") for r in rs]
        for hop in ("replay", "total"):  # seconds from generation start to training
            entry[f"latency_{hop}_s"] = [r.counts.get(f"latency_{hop}_s") for r in rs]
        entry["version_delay_s"] = [r.counts.get("version_delay_s") for r in rs]
        entry["cpu_ms_per_step"] = [r.counts.get("cpu_ms_per_step") for r in rs]
        entry["cores_busy"] = [r.counts.get("cores_busy") for r in rs]
        stages = sorted({k for r in rs if r.cpu for k in r.cpu["cpu_ms_per_step_by_stage"]})
        entry["cpu_ms_per_step_by_stage"] = {
            k: [r.cpu["cpu_ms_per_step_by_stage"].get(k, 0.0) if r.cpu else None for r in rs]
            for k in stages
        }
        out.append(entry)
    return out


def _median(values: list[Any]) -> float | None:
    """Median over seeds; a seed that never got there counts as infinitely slow."""
    if not values:
        return None
    vals = [float("inf") if v is None else float(v) for v in values]
    m = statistics.median(vals)
    return None if m == float("inf") else m


def _fmt(v: float | None, unit: str = "") -> str:
    if v is None:
        return "—"
    return f"{v:,.0f}{unit}" if abs(v) >= 10 or unit == " s" else f"{v:.3g}{unit}"


def _share(v: float | None) -> str:
    return "—" if v is None else f"{v * 100:.0f} %"


def _generator_idle(e: dict[str, Any]) -> str:
    """Share of the generator's time outside generate calls, and of it the shares paused
    (pacing) and waiting for prompts (medians over seeds)."""
    idle = _median(e["generator_idle"])
    paused, starved = _median(e["generator_paused"]), _median(e["generator_starved"])
    if idle is None or paused is None or starved is None:
        return _share(idle)
    return f"{_share(idle)} ({_share(paused)} paused, {_share(starved)} no prompts)"


def _staleness(e: dict[str, Any]) -> str:
    """Versions behind at training: mean (largest), medians over seeds."""
    mean, top = _median(e["staleness_mean"]), _median(e["staleness_max"])
    if mean is None:
        return "—"
    return f"{mean:.2f} (≤ {top:.0f})" if top is not None else f"{mean:.2f}"


def _latency(e: dict[str, Any]) -> str:
    """Seconds from generation start to training, and of it waiting in replay; and from a
    weight version's publication to its load on a generator (medians)."""
    total, replay = _median(e["latency_total_s"]), _median(e["latency_replay_s"])
    if total is None:
        return "—"
    weights = _median(e.get("version_delay_s", []))
    more = "" if weights is None else f"; weights {weights:.2f} s"
    return f"{total:.2f} s ({replay or 0:.2f} s{more})"


def table(summary: list[dict[str, Any]]) -> str:
    head = (
        "| row | +10 pts | +20 pts | +30 pts | step at +30 | best | learner steps | generated |"
        " trained | dropped | expired | learner idle | generator idle | staleness trained |"
        " sample latency (in replay; weights) | CPU a step (cores busy) |"
    )
    lines = [head, "|" + "---|" * 16]
    for e in summary:
        cells = [
            e["row"],
            *(_fmt(_median(e[f"t+{g}"]), " s") for g in (10, 20, 30)),
            _fmt(_median(e["step+30"])),
            "—" if _median(e["best"]) is None else f"{_median(e['best']) * 100:.1f} %",
            *(_fmt(_median(e[k])) for k in ("steps", "generated", "trained", "dropped")),
            _fmt(_median(e["expired"])),
            _share(_median(e["learner_idle"])),
            _generator_idle(e),
            _staleness(e),
            _latency(e),
            _cpu(e),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _cpu(e: dict[str, Any]) -> str:
    """CPU milliseconds a learner step, all processes of the run (medians over seeds)."""
    ms, busy = _median(e["cpu_ms_per_step"]), _median(e["cores_busy"])
    if ms is None:
        return "—"
    return f"{ms:,.0f} ms ({busy or 0:.2f})"


def cpu_table(summary: list[dict[str, Any]]) -> str:
    """CPU milliseconds a learner step by process (medians over seeds), while training: what
    each learner step costs the cores, so cores / (CPU a step) bounds the steps a second."""

    def heaviest(k: str) -> float:  # the most any row spends in process k
        return max(_median(e["cpu_ms_per_step_by_stage"].get(k, [])) or 0.0 for e in summary)

    stages = sorted(
        {k for e in summary for k in e["cpu_ms_per_step_by_stage"]},
        key=lambda k: (-heaviest(k), k),
    )
    lines = ["| row | all | " + " | ".join(stages) + " |", "|" + "---|" * (len(stages) + 2)]
    for e in summary:
        by = e["cpu_ms_per_step_by_stage"]
        cells = [e["row"], _fmt(_median(e["cpu_ms_per_step"]))]
        cells += [_fmt(_median(by[k])) if k in by else "—" for k in stages]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(runs: list[Run], rows: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_t, ax_s) = plt.subplots(1, 2, figsize=(12, 4.5))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, row in enumerate(rows):
        for j, r in enumerate(x for x in runs if x.row == row):
            if not r.evals:
                continue
            label = row if j == 0 else None
            c = colors[i % len(colors)]
            acc = [e["accuracy"] * 100 for e in r.evals]
            ax_t.plot([e["since_launch"] for e in r.evals], acc, color=c, label=label, lw=1.2)
            ax_s.plot([e["step"] for e in r.evals], acc, color=c, label=label, lw=1.2)
    ax_t.set_xlabel("wall seconds since launch")
    ax_s.set_xlabel("learner step")
    for ax in (ax_t, ax_s):
        ax.set_ylabel("held-out greedy accuracy (%)")
        ax.grid(alpha=0.3)
    ax_t.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def physical_cpus() -> tuple[list[int], int]:
    """One logical CPU per physical core this process may use, and how many logical CPUs
    (hyper-threads) the busiest core has. Two runs on the two threads of one core would each
    get well under a core, and one run's "2 cores" would be one: slots are made of whole
    cores, the sibling threads left idle."""
    seen: dict[tuple[str, str], int] = {}
    width: dict[tuple[str, str], int] = {}
    for cpu in sorted(os.sched_getaffinity(0)):
        topo = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
        try:
            key = (
                (topo / "physical_package_id").read_text().strip(),
                (topo / "core_id").read_text().strip(),
            )
        except OSError:
            key = ("?", str(cpu))  # no topology (not Linux sysfs): every CPU its own core
        seen.setdefault(key, cpu)
        width[key] = width.get(key, 0) + 1
    return sorted(seen.values()), max(width.values(), default=1)


def plan_cores(
    n_runs: int, per_run: int, parallel: int | None
) -> tuple[int, list[list[int]], list[int]]:
    """How many runs at once, the cores of each slot (empty: no pinning), and the cores left
    over (for ELSEWHERE rows' brokers)."""
    cores, _ = physical_cpus()
    slots = len(cores) // per_run
    if parallel is not None:
        slots = min(slots, parallel)
    if slots < 2:  # one at a time on every core
        return 1, [[]], []
    return (
        slots,
        [cores[i * per_run : (i + 1) * per_run] for i in range(slots)],
        cores[slots * per_run :],
    )


def run_all(
    runs: list[Run],
    cores: list[list[int]],
    spare: list[int],
    args: argparse.Namespace,
    logs: Path,
) -> list[Run]:
    """Run every config, as many at once as there are core slots; the finished runs."""
    pending, active, done = list(runs), list[Run](), list[Run]()
    free = list(range(len(cores)))
    grace = args.budget_s + 180  # start-up, final eval and a clean stop
    try:
        while pending or active:
            while pending and free:
                run, slot = pending.pop(0), free.pop(0)
                run.cores = cores[slot] or None
                run.slot = slot
                if run.row in ELSEWHERE:
                    start_broker(run, spare, logs)
                start(run, args.budget_s, args.set, logs, args.runs_dir)
                active.append(run)
                print(f"  start {run.name} cores={run.cores or 'all'}", flush=True)
            time.sleep(1.0)
            for run in list(active):
                assert run.proc is not None
                sample_cpu(run)
                if run.proc.poll() is None and time.time() - run.launched < grace:
                    continue
                stop(run)
                stop_broker(run)  # after `up`, which reads its ledger from it at the end
                run.returncode = run.proc.returncode
                run.wall_s = time.time() - run.launched
                collect(run, args.runs_dir)
                active.remove(run)
                free.append(run.slot)
                done.append(run)
                print(
                    f"  done  {run.name} rc={run.returncode} {run.wall_s:.0f}s "
                    f"evals={len(run.evals)} best="
                    f"{max((e['accuracy'] for e in run.evals), default=float('nan')):.3f}",
                    flush=True,
                )
    finally:
        for run in active:
            stop(run)
            stop_broker(run)
    return done


def write_json(
    out: Path,
    args: argparse.Namespace,
    slots: int,
    spare: list[int],
    summary: list[dict[str, Any]],
    text: str,
    done: list[Run],
) -> None:
    phys, threads = physical_cpus()
    host = {
        "cores": os.cpu_count(),
        "affinity": len(os.sched_getaffinity(0)),
        "physical_cores": len(phys),
        "threads_per_core": threads,
    }
    out.write_text(
        json.dumps(
            {
                "argv": sys.argv[1:],
                "budget_s": args.budget_s,
                "cores_per_run": args.cores_per_run,
                "parallel": slots,
                "spare_cores": spare,
                "host": host,
                "summary": summary,
                "table": text,
                "runs": [
                    {
                        "row": r.row,
                        "seed": r.seed,
                        "name": r.name,
                        "cores": r.cores,
                        "broker_elsewhere": r.row in ELSEWHERE,
                        "returncode": r.returncode,
                        "wall_s": r.wall_s,
                        "counts": r.counts,
                        "evals": r.evals,
                        "cpu": r.cpu,
                    }
                    for r in done
                ],
            },
            indent=1,
        )
    )


def model_of_size(size: str, runs_dir: Path) -> Path:
    """RUNS_DIR/model-SIZE: the base model of `init-model --size SIZE`, built unless it is
    there (built once, so every row and seed trains the same model; a GPU build is not
    bit-for-bit repeatable, so compare rows built on one host). One that is there must have
    been built at that size's shape (its build summary says), or SystemExit."""
    from dataclasses import asdict

    from rollstream.services.models.build import SIZES, SUMMARY_FILE

    out = runs_dir / f"model-{size}"
    if (out / "model.safetensors").exists():
        summary = out / SUMMARY_FILE
        built = json.loads(summary.read_text()).get("spec") if summary.exists() else None
        if built != asdict(SIZES[size]):
            raise SystemExit(
                f"error: {out} is not an `init-model --size {size}` build ({summary.name}: "
                f"spec {built}, not {asdict(SIZES[size])}); remove it to build it again"
            )
        return out
    cmd = [sys.executable, "-m", "rollstream.services.cli", "init-model", "--size", size]
    subprocess.run([*cmd, "--device", "auto", "--out", str(out)], check=True)
    return out


def main(argv: list[str] | None = None) -> int:
    from rollstream.services.models.build import SIZES

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rows", nargs="+", default=DEFAULT_ROWS, choices=sorted(ROWS))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    ap.add_argument("--budget-s", type=float, default=300.0, help="training budget per run")
    ap.add_argument("--cores-per-run", type=int, default=2)
    ap.add_argument("--parallel", type=int, default=None, help="most runs at once")
    ap.add_argument("--set", action="append", default=[], help="PATH=VALUE for every run")
    ap.add_argument("--tag", default="", help="suffix of the output files and run names")
    ap.add_argument("--runs-dir", type=Path, default=ROOT / "runs", help="a folder named runs")
    ap.add_argument("--out-dir", type=Path, default=RESULTS, help="where the JSON and PNG go")
    ap.add_argument(
        "--model-size",
        default="tiny",
        choices=sorted(SIZES),
        help="base model of every run: tiny (the built-in one) or an `init-model --size`, "
        "built once into RUNS_DIR/model-SIZE (on the GPU if torch sees one)",
    )
    args = ap.parse_args(argv)
    args.runs_dir = args.runs_dir.resolve()
    if args.runs_dir.name != "runs":
        ap.error("--runs-dir must be a folder named runs (rollstream up writes ./runs/<name>)")

    tag = f"-{args.tag}" if args.tag else ""
    stamp = time.strftime("%m%d-%H%M%S")
    runs = [
        Run(row, seed, f"ttt{tag}-{stamp}-{row}-s{seed}")
        for seed in args.seeds
        for row in args.rows
    ]
    slots, cores, spare = plan_cores(len(runs), args.cores_per_run, args.parallel)
    if ELSEWHERE & set(args.rows) and not spare:
        ap.error(
            f"rows {sorted(ELSEWHERE & set(args.rows))} need cores outside every run's: "
            "lower --parallel or --cores-per-run"
        )
    if args.model_size != "tiny":  # after every argument check: a build takes minutes
        args.set.append(f"model.path={model_of_size(args.model_size, args.runs_dir)}")
    logs = args.runs_dir / f"ttt{tag}-{stamp}-logs"
    logs.mkdir(parents=True, exist_ok=True)
    print(f"{len(runs)} runs, {slots} at a time, {args.budget_s:.0f} s budget each", flush=True)
    done = run_all(runs, cores, spare, args, logs)
    summary = summarize(done, args.rows)
    text = table(summary)
    print(text)
    print("\nCPU ms a learner step, by process (while training):")
    print(cpu_table(summary))
    args.out_dir.mkdir(parents=True, exist_ok=True)
    out = args.out_dir / f"time_to_target{tag}.json"
    write_json(out, args, slots, spare, summary, text, done)
    png = args.out_dir / f"time_to_target{tag}.png"
    plot(done, args.rows, png)
    print(f"wrote {out} and {png}")
    failed = [r.name for r in done if r.returncode not in (0, None) or not r.evals]
    if failed:
        print(f"runs that failed or never evaluated: {failed}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
