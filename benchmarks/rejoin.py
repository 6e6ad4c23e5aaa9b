"""A generator replica that joins a running run (restarted after a crash, or added to scale
out): does pacing keep the lead it finds there, or sample a lead of its own on top of it?

`rollstream up` (async, its own embedded broker) with `--replicas` generator replicas; at
`--kill-at` seconds of the run's clock generator-<last> is SIGKILLed and `up` restarts it.
From the run's metrics snapshots (metrics.jsonl, about one a second), for the `--window`
seconds before the kill and for the time from `--settle` seconds after it to the end:

  steps/s           learner steps a second
  staleness         mean versions behind of the samples the learner trained
  expired/s         rollouts replay dropped untrained because they aged past
                    staleness.max_versions, a second
  learner wait      share of the learner's time spent waiting for a batch

A joining replica that counts only what it sees after its first probe samples `ahead_batches`
more on top of the lead the others keep: staleness rises by about that many versions and
replay expires what ages past the bound (rollstream/services/generator/pacing.py).

    python benchmarks/rejoin.py                                   # this tree, 2 replicas
    python benchmarks/rejoin.py --src /tmp/old --tag old          # another checkout (A/B)
    python benchmarks/rejoin.py --replicas 1 --tag one            # a lone replica restarted

Writes benchmarks/results/rejoin-<tag>.json and prints a table. About --minutes + 1 minutes a
seed; runs one at a time on every core of the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
RESULTS = HERE / "results"


def snapshots(run: Path) -> list[dict[str, Any]]:
    path = run / "metrics.jsonl"
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:  # the line being written
            pass
    return out


def metric(snap: dict[str, Any], stage: str, name: str) -> float:
    """Sum of every series of `name` in one stage's snapshot (replicas and labels)."""
    total = 0.0
    for key, value in snap.get(stage, {}).items():
        if key == name or key.startswith(name + "{"):
            total += value
    return total


def at(snaps: list[dict[str, Any]], t: float) -> dict[str, Any]:
    """The last snapshot taken at or before `t` seconds (the first one if none)."""
    best = snaps[0]
    for s in snaps:
        if s["t"] <= t:
            best = s
    return best


def window(snaps: list[dict[str, Any]], t0: float, t1: float) -> dict[str, float | None]:
    a, b = at(snaps, t0), at(snaps, t1)
    secs = b["t"] - a["t"]
    if secs <= 0:
        return {"seconds": 0.0}

    def delta(stage: str, name: str) -> float:
        return metric(b, stage, name) - metric(a, stage, name)

    steps = delta("learner", "rollstream_learner_step")
    samples = delta("learner", "rollstream_learner_staleness_versions_count")
    versions = delta("learner", "rollstream_learner_staleness_versions_sum")
    wait = delta("learner", "rollstream_learner_step_phase_seconds_sum{phase=wait}")
    expired = delta("replay", "rollstream_replay_dropped_rollouts_total{reason=expired}")
    return {
        "seconds": round(secs, 1),
        "steps_per_s": round(steps / secs, 2),
        "staleness": round(versions / samples, 2) if samples else None,
        "expired_per_s": round(expired / secs, 1),
        "learner_wait": round(wait / secs, 3),
    }


def run_once(args: argparse.Namespace, seed: int) -> dict[str, Any]:
    name = f"rejoin-{args.tag}-s{seed}-{time.strftime('%m%d-%H%M%S')}"
    work = Path(args.workdir).resolve()
    (work / "runs").mkdir(parents=True, exist_ok=True)
    run = work / "runs" / name
    cmd = [sys.executable, "-m", "rollstream.services.cli", "up", "--no-view", "--name", name]
    sets = [
        f"target.minutes={args.minutes}",
        f"seed={seed}",
        f"stages.generator.replicas={args.replicas}",
        "up.fail_restarts=100",  # a planned kill is not a crash loop
        *args.set,
    ]
    for s in sets:
        cmd += ["--set", s]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if args.src:
        env["PYTHONPATH"] = str(Path(args.src).resolve())
    victim = f"generator-{args.replicas - 1}"
    with open(work / "runs" / f"{name}.log", "wb") as log:
        proc = subprocess.Popen(cmd, cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT)
        killed_at = None
        try:
            while proc.poll() is None:
                snaps = snapshots(run)
                if killed_at is None and snaps and snaps[-1]["t"] >= args.kill_at:
                    pid = json.loads((run / "procs.json").read_text())[victim]["pid"]
                    os.kill(pid, signal.SIGKILL)
                    killed_at = snaps[-1]["t"]
                    print(f"  {name}: killed {victim} (pid {pid}) at t={killed_at:.1f}s")
                time.sleep(0.5)
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
                proc.wait(90)
    snaps = snapshots(run)
    end = snaps[-1]["t"] if snaps else 0.0
    ledger = json.loads((run / "ledger.json").read_text())["ledger"]
    restarts = json.loads((run / "procs.json").read_text())[victim].get("restarts", 0)
    out: dict[str, Any] = {"seed": seed, "name": name, "returncode": proc.returncode}
    out.update(killed_at=killed_at, end_s=end, restarts=restarts)
    if killed_at is not None:
        out["before"] = window(snaps, killed_at - args.window, killed_at)
        out["after"] = window(snaps, killed_at + args.settle, end)
    out["ledger_exact"] = bool(ledger["balanced"]) and not ledger["trained_twice"]
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--replicas", type=int, default=2)
    ap.add_argument("--minutes", type=float, default=3.0)
    ap.add_argument("--kill-at", type=float, default=70.0, help="seconds of the run's clock")
    ap.add_argument("--window", type=float, default=40.0, help="seconds before the kill")
    ap.add_argument("--settle", type=float, default=20.0, help="seconds after it, left out")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--src", help="the rollstream tree to run (default: the installed one)")
    ap.add_argument("--tag", default="local")
    ap.add_argument("--workdir", default=str(HERE.parent))
    ap.add_argument("--set", action="append", default=[], help="more `up --set` overrides")
    args = ap.parse_args()
    runs = []
    for seed in args.seeds:
        runs.append(run_once(args, seed))
        print(json.dumps(runs[-1]))
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"rejoin-{args.tag}.json"
    path.write_text(json.dumps({"argv": sys.argv[1:], "runs": runs}, indent=1))
    cols = ["steps_per_s", "staleness", "expired_per_s", "learner_wait"]
    print(f"\n{args.tag}: {args.replicas} replica(s), generator killed at {args.kill_at:.0f}s")
    print("| seed | window | " + " | ".join(cols) + " |")
    for r in runs:
        for part in ("before", "after"):
            w = r.get(part, {})
            print(f"| {r['seed']} | {part} | " + " | ".join(str(w.get(c)) for c in cols) + " |")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
