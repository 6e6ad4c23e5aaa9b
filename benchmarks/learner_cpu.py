"""How long does one learner step take on this CPU for the tiny model?

The built-in base model when `rollstream.services.models.build` exists, else a random Llama
(hidden 128, 2 layers, 4 heads, vocab 100); fp32, AdamW, the learner's own Trainer, on synthetic
TrainBatches of 8 groups x 8 samples x (12 prompt + 12 completion) tokens: median step time over
--steps steps after --warmup, and tokens/s (all tokens, and the trained completion tokens).

One torch thread by default: on a small machine shared with the other stages, more threads than
free cores make every step much slower (OpenMP threads wait on each other); --threads 0 keeps
torch's default.

Prints a line and writes benchmarks/results/learner_cpu.json.
Run: .venv/bin/python benchmarks/learner_cpu.py [--steps 20] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

from learner_gpu import n_params, synthetic_batch, use_checkout

RESULTS = Path(__file__).parent / "results" / "learner_cpu.json"


def tiny_model() -> tuple[Any, str]:
    """(model, description): the built-in base model, else a random tiny Llama."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    try:
        import rollstream.services.models.build  # noqa: F401
        from rollstream.services.models.load import ensure_base_model, load_model

        return load_model(ensure_base_model(), dtype="float32"), "built-in base model"
    except ImportError:
        pass
    cfg = LlamaConfig(vocab_size=100, hidden_size=128, intermediate_size=256,
                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
                      max_position_embeddings=256, tie_word_embeddings=False)  # fmt: skip
    torch.manual_seed(0)
    return LlamaForCausalLM(cfg), "random Llama: hidden 128, 2 layers, 4 heads, vocab 100"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    ap.add_argument("--token-budget", type=int, default=4096)
    ap.add_argument("--objective", default="dapo")
    args = ap.parse_args()
    use_checkout()
    import torch

    from rollstream.services.learner.config import LearnerConfig
    from rollstream.services.learner.trainer import Trainer

    if args.threads:
        torch.set_num_threads(args.threads)
    model, name = tiny_model()
    vocab = model.config.vocab_size
    groups, samples, prompt, completion = 8, 8, 12, 12
    cfg = LearnerConfig(objective=args.objective, lr=1e-5, token_budget=args.token_budget)
    trainer = Trainer(cfg, model)
    data = [
        synthetic_batch(s, groups, samples, prompt, completion, vocab)
        for s in range(1, args.warmup + args.steps + 1)
    ]
    times = []
    for i, batch in enumerate(data):
        t0 = time.perf_counter()
        trainer.train(batch)
        if i >= args.warmup:
            times.append(time.perf_counter() - t0)
    step = statistics.median(times)
    rows = groups * samples
    res = {
        "machine": {"python": platform.python_version(), "torch": torch.__version__,
                    "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "threads": torch.get_num_threads(), "load_avg_1m": os.getloadavg()[0]},
        "model": name,
        "params": n_params(model),
        "objective": args.objective,
        "batch": {"groups": groups, "samples": samples, "prompt": prompt,
                  "completion": completion, "tokens": rows * (prompt + completion)},
        "steps": len(times),
        "step_ms_median": step * 1e3,
        "step_ms_min": min(times) * 1e3,
        "step_ms_max": max(times) * 1e3,
        "tokens_per_s": rows * (prompt + completion) / step,
        "completion_tokens_per_s": rows * completion / step,
    }  # fmt: skip
    print(
        f"learner step, {name} ({res['params'] / 1e3:.0f}k params), {torch.get_num_threads()} "
        f"threads: {res['step_ms_median']:.1f} ms median ({res['step_ms_min']:.1f}-"
        f"{res['step_ms_max']:.1f}), {res['tokens_per_s']:,.0f} tokens/s, "
        f"{res['completion_tokens_per_s']:,.0f} completion tokens/s"
    )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(res, indent=2) + "\n")
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
