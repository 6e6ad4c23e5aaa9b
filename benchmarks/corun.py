"""Do two busy processes on neighbouring cores slow each other down?

The transformers generator's batch loop (the built-in base model, 16 prompts x n=8, max_tokens
16, one torch thread: what a `rollstream up` generator does on CPU) for --seconds, first alone,
then as two copies at once (one per core when the machine has two). The async pipeline runs the
generator and the learner side by side like this; `--mode sync` runs them one after the other
on one core. Reported: ms of wall time and of CPU per rollout, alone and paired.

Prints a table and writes benchmarks/results/corun.json.
Run: .venv/bin/python benchmarks/corun.py [--seconds 15]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def loop(seconds: float) -> dict[str, float]:
    import torch

    torch.set_num_threads(1)
    from rollstream.services.feed.config import FeedConfig
    from rollstream.services.feed.items import build_pool
    from rollstream.services.generator.backend import GenRequest, make_backend
    from rollstream.services.models.load import ensure_base_model, load_tokenizer

    model = str(ensure_base_model())
    backend = make_backend("transformers", model, seed=0, dtype="auto")
    tok = load_tokenizer(model)
    pool = build_pool(FeedConfig(), 0)

    def batch(k: int) -> list[GenRequest]:
        return [
            GenRequest(
                request_id=f"r{k}.{i}",
                prompt_ids=list(tok.encode(pool[(k * 16 + i) % len(pool)].prompt)),
                n=8,
                temperature=1.0,
                top_p=1.0,
                top_k=-1,
                max_tokens=16,
            )
            for i in range(16)
        ]

    backend.generate(batch(0))  # warm-up
    t0, c0, n, k = time.perf_counter(), time.process_time(), 0, 1
    while time.perf_counter() - t0 < seconds:
        n += sum(len(o) for o in backend.generate(batch(k)))
        k += 1
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {
        "rollouts": n,
        "wall_ms_per_rollout": 1000 * wall / n,
        "cpu_ms_per_rollout": 1000 * cpu / n,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=15.0)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(loop(args.seconds)), flush=True)
        return
    cmd = [sys.executable, __file__, "--child", "--seconds", str(args.seconds)]

    def run(copies: int) -> list[dict[str, float]]:
        procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) for _ in range(copies)]
        return [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in procs]

    alone, paired = run(1), run(2)
    for name, rows in (("alone", alone), ("paired", paired)):
        for r in rows:
            print(
                f"{name:7s} {r['wall_ms_per_rollout']:.3f} ms wall, "
                f"{r['cpu_ms_per_rollout']:.3f} ms CPU a rollout ({r['rollouts']} rollouts)"
            )
    cpu_alone = alone[0]["cpu_ms_per_rollout"]
    cpu_paired = sum(r["cpu_ms_per_rollout"] for r in paired) / len(paired)
    print(f"paired / alone, CPU per rollout: {cpu_paired / cpu_alone:.2f}x")
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "corun.json"
    out.write_text(
        json.dumps(
            {"seconds": args.seconds, "cpus": os.cpu_count(), "alone": alone, "paired": paired},
            indent=2,
        )
    )
    print("wrote", out)


if __name__ == "__main__":
    main()
