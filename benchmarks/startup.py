"""How long `rollstream up` takes to start: when the first message of each topic was written,
counted from the launch of the process (embedded broker, topics, stage processes, model loads,
the consumer groups' first joins, then the first rollouts, scores, kept groups, batch and
learner step). The first learner step is the first `weights` version.

    python benchmarks/startup.py --runs 3          # three runs of `rollstream up`, one at a time

Each run lasts `--minutes` (its evaluator and training go on after the first step; the figures
are the first messages' broker timestamps, read while the run is live). Prints the median of
each topic's first message over the runs and writes JSON to results/startup-TAG.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
TOPICS = [
    "prompts",
    "learner.feedback",
    "rollouts.raw",
    "rollouts.scored",
    "groups.kept",
    "batches.train",
    "weights",
    "eval.results",
]


def bootstrap_of(run_dir: Path, deadline: float) -> str:
    """The embedded broker's address, from the run's resolved config once `up` wrote it."""
    cfg = run_dir / "config.yaml"
    while time.monotonic() < deadline:
        if cfg.exists():
            try:
                return str(yaml.safe_load(cfg.read_text())["kafka"]["bootstrap"])
            except (yaml.YAMLError, KeyError, TypeError):
                pass  # still being written
        time.sleep(0.1)
    raise TimeoutError(f"{cfg} did not appear")


def first_times(bootstrap: str, deadline: float, proc: subprocess.Popen) -> dict[str, float]:
    """Wall time (s since the epoch) of the first message of each topic, read until each has
    one, the deadline passes or `up` (and its embedded broker) has exited."""
    from confluent_kafka import KafkaException

    from rollstream.services.runtime.bus import BusError
    from rollstream.services.runtime.reader import Reader
    from rollstream.services.runtime.settings import KafkaSettings

    out: dict[str, float] = {}
    with Reader(KafkaSettings(bootstrap=bootstrap), "startup-bench") as reader:
        while time.monotonic() < deadline and len(out) < len(TOPICS) and proc.poll() is None:
            for topic in TOPICS:
                if topic in out:
                    continue
                try:
                    ranges = {}
                    for p in reader.partitions(topic):
                        low, high = reader.watermarks(topic, p)
                        if high > low:
                            ranges[(topic, p)] = (low, low + 1)
                    stamps = [r.timestamp_ms / 1000 for r in reader.read(ranges, timeout_s=10)]
                except (BusError, KafkaException, TimeoutError):  # no topics yet; try again
                    continue
                if stamps:
                    out[topic] = min(stamps)
            time.sleep(0.5)
    return out


def one_run(name: str, minutes: float, sets: list[str], runs: Path) -> dict[str, float]:
    run_dir = runs / name
    shutil.rmtree(run_dir, ignore_errors=True)
    cmd = [sys.executable, "-m", "rollstream.services.cli", "up", "--no-view", "--name", name]
    cmd += ["--set", f"target.minutes={minutes}"]
    for s in sets:
        cmd += ["--set", s]
    t0 = time.time()
    log = (runs / f"{name}.log").open("wb")  # `rollstream up` writes ./runs/<name>
    proc = subprocess.Popen(cmd, cwd=runs.parent, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        firsts = first_times(bootstrap_of(run_dir, deadline), deadline, proc)
    finally:
        proc.wait(timeout=minutes * 60 + 120)
        log.close()
    if proc.returncode != 0:
        raise RuntimeError(f"rollstream up exited {proc.returncode}: see {runs / name}.log")
    return {t: round(ts - t0, 2) for t, ts in firsts.items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--minutes", type=float, default=0.5)
    ap.add_argument("--set", action="append", default=[], help="a run-config override")
    ap.add_argument("--tag", default=time.strftime("%m%d-%H%M%S"))
    ap.add_argument("--runs-dir", type=Path, default=ROOT / "runs", help="a folder named runs")
    ap.add_argument("--out-dir", type=Path, default=RESULTS, help="where the JSON goes")
    args = ap.parse_args()
    args.runs_dir = args.runs_dir.resolve()
    if args.runs_dir.name != "runs":
        ap.error("--runs-dir must be a folder named runs (rollstream up writes ./runs/<name>)")
    args.runs_dir.mkdir(parents=True, exist_ok=True)
    runs = []
    for i in range(args.runs):
        firsts = one_run(f"startup-{args.tag}-{i}", args.minutes, args.set, args.runs_dir)
        runs.append(firsts)
        print(f"run {i}: " + ", ".join(f"{t} +{s:.1f} s" for t, s in firsts.items()), flush=True)
    print(f"\nfirst message on each topic, s after launch (median of {args.runs} runs):")
    table = {}
    for topic in TOPICS:
        seen = [r[topic] for r in runs if topic in r]
        table[topic] = statistics.median(seen) if seen else None
        shown = f"+{table[topic]:.2f} s" if seen else "none"
        print(f"  {topic:18s} {shown}")
    args.out_dir.mkdir(parents=True, exist_ok=True)
    out = args.out_dir / f"startup-{args.tag}.json"
    host = {"cores": os.cpu_count(), "affinity": len(os.sched_getaffinity(0))}
    out.write_text(json.dumps({"argv": sys.argv[1:], "host": host, "median": table, "runs": runs}))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
