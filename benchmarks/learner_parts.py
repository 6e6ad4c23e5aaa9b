"""Where a stream learner step's time goes, part by part, on this machine's GPU (or CPU):
`Trainer.train` as the learner runs it (prompts shared, AdamW as the trainer builds it), then
with prompts not shared, then the step's bookkeeping: `checkpoint.save` (model and optimizer
state) and `publish_version` (the weights a generator loads). The built-in model's recipe at
`--size` (random weights), fp32 master weights (bf16 autocast on a GPU), synthetic batches of
16 groups x 8 samples x (16 prompt + 16 completion) tokens: the built-in tasks' shape.

Prints a table and writes benchmarks/results/learner_parts.json (one entry per device and size).
Run: python benchmarks/learner_parts.py [--size small] [--device cuda]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from learner_gpu import synthetic_batch, use_checkout

RESULTS = Path(__file__).parent / "results" / "learner_parts.json"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", default="small", choices=["tiny", "small"])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--steps", type=int, default=20)
    args = ap.parse_args()
    use_checkout()
    import torch
    from transformers import LlamaForCausalLM

    from rollstream.services.learner import checkpoint
    from rollstream.services.learner.config import LearnerConfig
    from rollstream.services.learner.trainer import Trainer
    from rollstream.services.models.build import SIZES, build_config
    from rollstream.services.models.weights import publish_version

    device = (
        args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    )
    cuda = device.startswith("cuda")
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    config = build_config(SIZES[args.size])
    warm = 5
    data = [
        synthetic_batch(s, 16, 8, 16, 16, config.vocab_size)
        for s in range(1, warm + args.steps + 1)
    ]

    def timed(fn: Any, n: int, skip: int = 0) -> float:
        times = []
        for i in range(n):
            sync()
            t0 = time.perf_counter()
            fn(i)
            sync()
            if i >= skip:
                times.append(time.perf_counter() - t0)
        return statistics.median(times) * 1e3

    def trainer(share: bool) -> Any:
        torch.manual_seed(0)
        model = LlamaForCausalLM(config).to(device)
        dtype = torch.bfloat16 if cuda else None
        return Trainer(
            LearnerConfig(share_prompts=share), model, device=device, autocast_dtype=dtype
        )

    parts: dict[str, float] = {}
    for share in (True, False):
        t = trainer(share)
        parts[f"train, prompts {'shared' if share else 'not shared'}"] = timed(
            lambda i, t=t: t.train(data[i]), len(data), warm
        )
    with tempfile.TemporaryDirectory() as tmp:
        parts["checkpoint.save"] = timed(
            lambda i: checkpoint.save(f"{tmp}/ck", i, t.model, t.optimizer, {}, t.scheduler), 8
        )
        wire = "bfloat16" if cuda else None
        parts["publish_version"] = timed(
            lambda i: publish_version(
                t.model, store=f"{tmp}/w", policy="p", version=i + 1, wire_dtype=wire
            ),
            8,
        )
    where = torch.cuda.get_device_name() if cuda else "cpu"
    print(f"\n| {where}, {args.size} model | ms (median) |\n|---|---|")
    for name, ms in parts.items():
        print(f"| {name} | {ms:.1f} |")
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results[f"{where}, {args.size}"] = {
        "ms": parts,
        "params": sum(p.numel() for p in t.model.parameters()),
        "batch": "16 groups x 8 samples x (16 + 16) tokens",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
