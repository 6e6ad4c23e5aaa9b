"""Chaos run (issue 16): a `rollstream up` on its own embedded broker while random stage
processes are SIGKILLed and the broker is SIGSTOPped once, then the ledger and the accuracy.

    python benchmarks/chaos.py --minutes 10 --kills 20 --pause-s 20          # the full run
    python benchmarks/chaos.py --minutes 10 --kills 0 --pause-s 0 --name calm  # the baseline

Pass (the full run): ledger balanced (0 lost, 0 trained twice) and an accuracy gain of at
least 80 % of an undisturbed run's (`--baseline results/chaos-calm.json`). Writes
benchmarks/results/chaos-<name>.json. `run_chaos` is also what tests/faults/test_chaos.py
calls for the short CI variant.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent


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
    """Run `up` for `minutes` with `kills` random SIGKILLs spread over its middle and one
    broker SIGSTOP of `pause_s` seconds halfway; returns what happened and the outcome."""
    from rollstream.services.runtime.broker import EmbeddedBroker

    rng = random.Random(seed)
    workdir.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"minutes": minutes, "kills": [], "pause_s": pause_s}
    with EmbeddedBroker(log_path=workdir / "broker.log") as broker:
        assert broker.proc is not None
        cmd = [sys.executable, "-m", "rollstream.services.cli", "up", "--no-view"]
        cmd += ["--set", f"target.minutes={minutes}", "--bootstrap", broker.bootstrap]
        cmd += ["--name", name, *(extra or [])]
        proc = subprocess.Popen(
            cmd,
            cwd=workdir,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.extend(proc.stdout or []), daemon=True)
        reader.start()
        run = workdir / "runs" / name
        start, total = time.time(), minutes * 60
        # kills between 15 % and 85 % of the run; the pause at 50 %
        times = sorted(rng.uniform(0.15, 0.85) * total for _ in range(kills))
        pause_at = 0.5 * total if pause_s > 0 else None
        try:
            while proc.poll() is None and (times or pause_at is not None):
                now = time.time() - start
                if pause_at is not None and now >= pause_at:
                    os.kill(broker.proc.pid, signal.SIGSTOP)
                    try:
                        time.sleep(pause_s)
                    finally:
                        os.kill(broker.proc.pid, signal.SIGCONT)
                    result["paused_at_s"] = round(now, 1)
                    pause_at = None
                    continue
                if times and now >= times[0]:
                    times.pop(0)
                    procs = json.loads((run / "procs.json").read_text())
                    live = [k for k, v in procs.items() if v.get("pid")]
                    victim = rng.choice(live)
                    try:
                        os.kill(procs[victim]["pid"], signal.SIGKILL)
                        result["kills"].append([round(now, 1), victim])
                    except ProcessLookupError:
                        pass
                time.sleep(0.5)
            proc.wait(timeout=total + 600)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            reader.join(10)
        if proc.stdout is not None:
            proc.stdout.close()
    result["returncode"] = proc.returncode
    result["output_tail"] = "".join(lines)[-3000:]
    ledger = json.loads((run / "ledger.json").read_text())["ledger"]
    evals = [json.loads(x) for x in (run / "eval.jsonl").read_text().splitlines()]
    result["ledger"] = ledger
    result["accuracy_first"] = evals[0]["accuracy"]
    result["accuracy_last"] = evals[-1]["accuracy"]
    result["gain"] = evals[-1]["accuracy"] - evals[0]["accuracy"]
    result["restarts"] = {
        k: v.get("restarts", 0) for k, v in json.loads((run / "procs.json").read_text()).items()
    }
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--pause-s", type=float, default=20.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--name", default="chaos")
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--baseline", default=None, help="result JSON of an undisturbed run")
    args = ap.parse_args()
    workdir = Path(args.workdir or f"/tmp/rollstream-chaos-{args.name}-{os.getpid()}")
    res = run_chaos(
        workdir,
        minutes=args.minutes,
        kills=args.kills,
        pause_s=args.pause_s,
        seed=args.seed,
        name=args.name,
    )
    ok = res["returncode"] == 0 and res["ledger"]["balanced"]
    if args.baseline:
        base = json.loads(Path(args.baseline).read_text())
        res["baseline_gain"] = base["gain"]
        res["gain_ratio"] = res["gain"] / base["gain"] if base["gain"] > 0 else None
        ok = ok and res["gain_ratio"] is not None and res["gain_ratio"] >= 0.8
    res["pass"] = ok
    out = HERE / "results" / f"chaos-{args.name}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(res, indent=2))
    print(json.dumps({k: v for k, v in res.items() if k != "output_tail"}, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
