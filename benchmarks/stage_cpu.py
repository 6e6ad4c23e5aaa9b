"""CPU share of each process of a live run: how the cores are split between the stages, the
broker and `up` itself. Reads /proc (Linux) twice, `--seconds` apart.

    python benchmarks/stage_cpu.py RUN_NAME --seconds 30     # while `rollstream up --name RUN_NAME`

A run's processes are `up` (its command line names the run) and every descendant of it: the
stages (`run <stage> --config runs/NAME/...`) and the embedded broker. Prints one line per
process (share of one core, and of the cores the run may use) and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
TICK = os.sysconf("SC_CLK_TCK")


def proc_stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, CPU seconds user + system) of a process; None once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / TICK


def cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def label(argv: list[str]) -> str:
    """A short name for a process of a run: the stage, 'broker', 'up' or the program."""
    if "run" in argv and argv.index("run") + 1 < len(argv):
        return argv[argv.index("run") + 1]
    if "broker" in argv:
        return "broker"
    if "up" in argv:
        return "up (sync)" if "sync" in argv else "up"
    return Path(argv[0]).name if argv and argv[0] else "?"


def all_processes() -> dict[int, tuple[int, float]]:
    """pid -> (parent pid, CPU seconds) of every process readable now."""
    found: dict[int, tuple[int, float]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (st := proc_stat(int(entry))) is not None:
            found[int(entry)] = st
    return found


def descendants(roots: set[int], procs: dict[int, tuple[int, float]]) -> set[int]:
    """`roots` (those alive in `procs`) and every process below them."""
    found, grew = roots & procs.keys(), True
    while grew:
        new = {p for p, (pp, _) in procs.items() if pp in found and p not in found}
        found |= new
        grew = bool(new)
    return found


def run_processes(name: str) -> dict[int, str]:
    """pid -> label for the `up` process of run `name` and all its descendants."""
    procs = all_processes()
    roots = {
        pid
        for pid in procs
        if "up" in (argv := cmdline(pid)) and name in argv and "taskset" not in argv[0]
    }
    return {pid: label(cmdline(pid)) for pid in descendants(roots, procs)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("run", help="the run's name (rollstream up --name)")
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--out", type=Path, default=None, help="JSON path")
    args = ap.parse_args()
    procs = run_processes(args.run)
    if not procs:
        print(f"no process of run {args.run!r}")
        return 2
    before = {pid: st[1] for pid in procs if (st := proc_stat(pid)) is not None}
    t0 = time.monotonic()
    time.sleep(args.seconds)
    span = time.monotonic() - t0
    shares: dict[str, float] = {}
    for pid, cpu0 in before.items():
        st = proc_stat(pid)
        if st is not None:
            key = procs[pid]
            shares[key] = shares.get(key, 0.0) + (st[1] - cpu0) / span
    cores = len(os.sched_getaffinity(0))
    total = sum(shares.values())
    print(f"run {args.run}: {span:.0f} s, {cores} cores available to this process")
    for key, share in sorted(shares.items(), key=lambda kv: -kv[1]):
        print(f"  {key:<12} {share * 100:6.1f} % of a core")
    print(f"  {'all':<12} {total * 100:6.1f} % of a core ({total / cores * 100:.0f} % of {cores})")
    out = args.out or RESULTS / f"stage_cpu-{args.run}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"run": args.run, "seconds": span, "shares": shares}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
