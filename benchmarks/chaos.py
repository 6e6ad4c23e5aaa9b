"""Chaos run (issue 16): a `rollstream up` on its own embedded broker while random stage
processes are SIGKILLed and the broker is SIGSTOPped once, next to an undisturbed run of the
same length and seed; then the ledgers and the accuracy gains.

    python benchmarks/chaos.py                       # 10 min, 20 kills, 20 s pause, + calm run
    python benchmarks/chaos.py --minutes 9           # both runs at once, each on half the cores
    python benchmarks/chaos.py --sequential --minutes 3 --kills 8   # a small machine

The kill schedule is seeded and cycles through every stage process (each is killed at least
once when `--kills` >= the number of processes; the result says which were). Kills are not
crash loops, so the chaos run raises `up.fail_restarts`; `restarts - kills` per process shows
any restart that a kill did not cause. Pass: both runs end normally, the chaos run's ledger is
exact (balanced, 0 trained twice, 0 unknown) and every process was killed, and its accuracy
gain is at least 80 % of the calm run's. Prints a table; writes benchmarks/results/chaos.json.
Needs only the project's own dependencies. `run_chaos` is also what tests/faults/test_chaos.py
calls for the short CI variant.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
KILL_WAIT_S = 30.0  # how long a planned kill waits for its victim to be running again
CHAOS_SETS = ["--set", "up.fail_restarts=1000"]  # kills are not crash loops


def kill_plan(names: list[str], kills: int, rng: random.Random) -> list[str]:
    """Victims in order: shuffled rounds over every process, so each is killed once before any
    is killed twice."""
    plan: list[str] = []
    while len(plan) < kills:
        names = sorted(names)
        rng.shuffle(names)
        plan += names
    return plan[:kills]


def run_chaos(
    workdir: Path,
    *,
    minutes: float,
    kills: int,
    pause_s: float,
    seed: int = 0,
    name: str = "chaos",
    extra: list[str] | None = None,
    env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Run `up` for `minutes` with `kills` SIGKILLs (kill_plan) at random times in its middle
    and one broker SIGSTOP of `pause_s` seconds halfway; returns what happened and the
    outcome."""
    from rollstream.services.runtime.broker import EmbeddedBroker

    rng = random.Random(seed)
    workdir.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"name": name, "minutes": minutes, "seed": seed, "kills": []}
    result["pause_s"] = pause_s
    t0 = time.time()
    run = workdir / "runs" / name
    with EmbeddedBroker(log_path=workdir / "broker.log") as broker:
        assert broker.proc is not None
        cmd = [sys.executable, "-m", "rollstream.services.cli", "up", "--no-view"]
        cmd += ["--set", f"target.minutes={minutes}", "--set", f"seed={seed}"]
        cmd += ["--bootstrap", broker.bootstrap, "--name", name]
        cmd += [*(CHAOS_SETS if kills else []), *(extra or [])]
        proc = subprocess.Popen(
            cmd,
            cwd=workdir,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        with output_of(proc) as lines:
            total = minutes * 60
            disturb(proc, broker.proc.pid, run, result, rng, total=total, kills=kills)
            proc.wait(timeout=total + 600)
    result["wall_s"] = round(time.time() - t0, 1)
    result["returncode"] = proc.returncode
    result["output_tail"] = "".join(lines)[-3000:]
    result.update(outcome(run, result))
    return result


@contextlib.contextmanager
def output_of(proc: subprocess.Popen[str]) -> Iterator[list[str]]:
    """The lines `proc` prints (stdout), collected by a thread as they come; on the way out
    `proc` is killed if it still runs, and its pipe closed."""
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout or []), daemon=True)
    reader.start()
    try:
        yield lines
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        reader.join(10)
        if proc.stdout is not None:
            proc.stdout.close()


def disturb(
    proc: subprocess.Popen[str],
    broker_pid: int,
    run: Path,
    result: dict[str, Any],
    rng: random.Random,
    *,
    total: float,
    kills: int,
) -> None:
    """While `up` (`proc`) runs: `kills` SIGKILLs of its processes (from `run`/procs.json) at
    random times between 15 % and 85 % of `total` seconds, and the broker's SIGSTOP of
    result["pause_s"] at 50 %; each recorded in `result` (kills, missed, paused_at_s,
    processes)."""
    start = time.time()
    times = sorted(rng.uniform(0.15, 0.85) * total for _ in range(kills))
    plan: list[str] = []
    pause_s = result["pause_s"]
    pause_at = 0.5 * total if pause_s > 0 else None
    while proc.poll() is None and (times or pause_at is not None):
        now = time.time() - start
        if pause_at is not None and now >= pause_at:
            os.kill(broker_pid, signal.SIGSTOP)
            try:
                time.sleep(pause_s)
            finally:
                os.kill(broker_pid, signal.SIGCONT)
            result["paused_at_s"] = round(now, 1)
            pause_at = None
            continue
        if times and now >= times[0]:
            procs = json.loads((run / "procs.json").read_text())
            if not plan:
                result["processes"] = sorted(procs)
                plan = kill_plan(list(procs), kills, rng)
            victim = plan[len(result["kills"]) + len(result.get("missed", []))]
            pid = procs.get(victim, {}).get("pid")
            if pid is None and now - times[0] < KILL_WAIT_S:
                time.sleep(0.5)  # being restarted: kill it once it is back
                continue
            times.pop(0)
            try:
                assert pid is not None
                os.kill(pid, signal.SIGKILL)
                result["kills"].append([round(now, 1), victim])
            except (AssertionError, ProcessLookupError):
                result.setdefault("missed", []).append([round(now, 1), victim])
        time.sleep(0.5)


def outcome(run: Path, result: dict[str, Any]) -> dict[str, Any]:
    """The run's ledger, first and last held-out accuracy, restarts per process, and the
    processes no kill in `result` reached."""
    out: dict[str, Any] = {}
    ledger = json.loads((run / "ledger.json").read_text())["ledger"]
    evals = [json.loads(x) for x in (run / "eval.jsonl").read_text().splitlines()]
    out["ledger"] = ledger
    out["evaluations"] = len(evals)
    out["accuracy_first"] = evals[0]["accuracy"]
    out["accuracy_last"] = evals[-1]["accuracy"]
    out["gain"] = evals[-1]["accuracy"] - evals[0]["accuracy"]
    out["restarts"] = {
        k: v.get("restarts", 0) for k, v in json.loads((run / "procs.json").read_text()).items()
    }
    killed = {victim for _, victim in result["kills"]}
    out["not_killed"] = sorted(set(result.get("processes", [])) - killed)
    return out


def verdict(chaos: dict[str, Any], calm: dict[str, Any], min_ratio: float = 0.8) -> dict[str, Any]:
    """The pass rule of issue 16 for one chaos run against its calm run."""
    led = chaos["ledger"]
    ratio = chaos["gain"] / calm["gain"] if calm["gain"] > 0 else None
    checks = {
        "both_ended_normally": chaos["returncode"] == 0 and calm["returncode"] == 0,
        "ledger_exact": bool(led["balanced"]) and led["trained_twice"] == 0 and led["unknown"] == 0,
        "every_process_killed": bool(chaos["kills"]) and not chaos["not_killed"],
        "gain_ratio_ok": ratio is not None and ratio >= min_ratio,
    }
    return {"gain_ratio": ratio, "checks": checks, "pass": all(checks.values())}


def table(runs: list[dict[str, Any]]) -> str:
    cols = ["run", "kills", "pause s", "trained", "pending", "twice", "balanced"]
    cols += ["acc first", "acc last", "gain", "extra restarts", "wall s"]
    rows = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in runs:
        led = r["ledger"]
        kills: dict[str, int] = {}
        for _, v in r["kills"]:
            kills[v] = kills.get(v, 0) + 1
        extra = sum(max(0, n - kills.get(k, 0)) for k, n in r["restarts"].items())
        cells = [r["name"], len(r["kills"]), r["pause_s"], led["trained"], led.get("pending")]
        cells += [led["trained_twice"], led["balanced"], f"{r['accuracy_first']:.3f}"]
        cells += [f"{r['accuracy_last']:.3f}", f"{r['gain']:+.3f}", extra, r["wall_s"]]
        rows.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(rows)


def _child(args: argparse.Namespace, role: str, cpus: list[int] | None) -> subprocess.Popen:
    cmd = [sys.executable, __file__, "--role", role, "--minutes", str(args.minutes)]
    cmd += ["--kills", str(args.kills), "--pause-s", str(args.pause_s), "--seed", str(args.seed)]
    cmd += ["--workdir", args.workdir]
    pin = (lambda: os.sched_setaffinity(0, cpus)) if cpus else None  # what taskset -c does
    return subprocess.Popen(cmd, preexec_fn=pin)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=10.0, help="length of each run")
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--pause-s", type=float, default=20.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sequential", action="store_true", help="calm run after the chaos run")
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--out", default=str(HERE / "results" / "chaos.json"))
    ap.add_argument("--role", choices=["chaos", "calm"], default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.workdir = args.workdir or f"/tmp/rollstream-chaos-{os.getpid()}"
    work = Path(args.workdir)
    if args.role:  # one run, in a child process (pinned by the parent)
        kills, pause = (args.kills, args.pause_s) if args.role == "chaos" else (0, 0.0)
        res = run_chaos(
            work / args.role,
            minutes=args.minutes,
            kills=kills,
            pause_s=pause,
            seed=args.seed,
            name=args.role,
        )
        (work / f"{args.role}.json").write_text(json.dumps(res, indent=2))
        return 0
    work.mkdir(parents=True, exist_ok=True)
    # the base model once, before two runs would race to build it (`init-model` would
    # rebuild it even when it is there, under runs of other scripts that read it)
    from rollstream.services.models.load import ensure_base_model

    ensure_base_model()
    cores = sorted(os.sched_getaffinity(0))
    if args.sequential or len(cores) < 4:
        for role in ("chaos", "calm"):
            _child(args, role, None).wait()
    else:
        half = len(cores) // 2
        kids = [_child(args, "chaos", cores[:half]), _child(args, "calm", cores[half:])]
        for k in kids:
            k.wait()
    chaos, calm = (json.loads((work / f"{r}.json").read_text()) for r in ("chaos", "calm"))
    res = {"chaos": chaos, "calm": calm, **verdict(chaos, calm)}
    res["parallel"] = not (args.sequential or len(cores) < 4)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2))
    print(table([chaos, calm]))
    print(f"kills: {chaos['kills']}")
    print(f"missed: {chaos.get('missed', [])}, not killed: {chaos['not_killed']}")
    print(f"gain ratio {res['gain_ratio']}, checks {res['checks']}")
    print(("PASS" if res["pass"] else "FAIL") + f"; wrote {out}")
    return 0 if res["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
