"""How fast is replay's priority sampling, and what does it cost per batch?

Part 1 (replay): for buffers of 10k, 100k and 1M entries, the median latency of
  - sum tree: draw 512 slots; update 512 priorities;
  - ReplayBuffer (prioritized, groups of one small sample): build a batch of 512 groups
    (staleness check, draw without repeats, importance weights, reuse bookkeeping);
    update 512 priorities by group_id (learner feedback); add one group.
Target: 512 samples from 1M entries in <= 5 ms.

Prints a table and writes benchmarks/results/replay_learner.json (key "replay").
Run: .venv/bin/python benchmarks/replay_learner.py [--sizes 10000 100000 1000000] [--repeats 200]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import msgspec
import numpy as np

from rollstream.schemas import Group
from rollstream.schemas import synthetic as syn
from rollstream.services.replay.buffer import ReplayBuffer
from rollstream.services.replay.config import ReplayConfig
from rollstream.services.replay.sumtree import SumTree

RESULTS = Path(__file__).parent / "results" / "replay_learner.json"
K = 512


def median_ms(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def tree_bench(n: int, repeats: int) -> dict[str, float]:
    rng = np.random.default_rng(0)
    tree = SumTree(n)
    tree.update(np.arange(n), rng.random(n) + 1e-3)
    slots = [rng.integers(0, n, K) for _ in range(repeats)]
    vals = [rng.random(K) for _ in range(repeats)]
    it = iter(range(repeats))

    def update() -> None:
        i = next(it)
        tree.update(slots[i], vals[i])

    return {
        "tree_sample_512_ms": median_ms(lambda: tree.sample(K, rng), repeats),
        "tree_update_512_ms": median_ms(update, repeats),
    }


def template_group() -> Group:
    return syn.group("g", [syn.scored("g", 0, [1, 2], [3, 4], group_size=1, reward=1.0)], [1.0])


def buffer_bench(n: int, repeats: int) -> dict[str, float]:
    cfg = ReplayConfig(
        policy="prioritized", capacity=n + 1, batch_groups=K, max_uses=10**9, max_staleness=10**6
    )
    buf = ReplayBuffer(cfg)
    base = template_group()
    rng = np.random.default_rng(1)
    advs = rng.random(n) + 0.01
    t0 = time.perf_counter()
    for i in range(n):
        buf.add(msgspec.structs.replace(base, group_id=f"g{i}", advantages=[float(advs[i])]))
    fill_s = time.perf_counter() - t0
    build = median_ms(buf.build_batch, repeats)
    ids = [[f"g{j}" for j in rng.integers(0, n, K)] for _ in range(repeats)]
    it = iter(range(repeats))
    prio = median_ms(lambda: buf.update_priorities(dict.fromkeys(ids[next(it)], 0.5)), repeats)
    extra = iter(range(repeats))

    def add_one() -> None:
        buf.add(msgspec.structs.replace(base, group_id=f"x{next(extra)}"))

    return {
        "buffer_build_batch_512_ms": build,
        "buffer_update_priorities_512_ms": prio,
        "buffer_add_one_ms": median_ms(add_one, repeats),
        "buffer_fill_groups_per_s": n / fill_s,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--repeats", type=int, default=200)
    args = ap.parse_args()
    rows = []
    for n in args.sizes:
        row = {"entries": n, **tree_bench(n, args.repeats), **buffer_bench(n, args.repeats)}
        rows.append(row)
        print(f"done {n}", flush=True)
    cols = list(rows[0])
    print("\n| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        print(
            "| "
            + " | ".join(f"{r[c]:.3f}" if isinstance(r[c], float) else str(r[c]) for c in cols)
            + " |"
        )
    target = next((r["tree_sample_512_ms"] for r in rows if r["entries"] == 1_000_000), None)
    if target is not None:
        print(f"\n512 samples from 1M entries: {target:.3f} ms (target <= 5 ms)")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    data = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    data["replay"] = {
        "machine": {
            "python": platform.python_version(),
            "cpu": platform.processor() or platform.machine(),
            "numpy": np.__version__,
        },
        "repeats": args.repeats,
        "batch": K,
        "rows": rows,
    }
    RESULTS.write_text(json.dumps(data, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
