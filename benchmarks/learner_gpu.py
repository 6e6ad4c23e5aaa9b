"""How fast does the learner train and publish on a GPU?

1. Step: a random Llama of about 300M parameters (hidden 1024, 20 layers, vocab 32000; the exact
   count is printed), fp32 master weights under bf16 autocast, AdamW, trained by the learner's
   own Trainer on synthetic TrainBatches of 8 groups x 8 samples x (128 prompt + 384 completion)
   tokens: median step time over --steps steps after --warmup, tokens/s (all tokens, and the
   trained completion tokens), peak GPU memory.
2. DDP: if more than one GPU is visible (or --ddp-procs N), the same step with the same global
   batch over N processes under torchrun (rank 0 broadcasts each batch, as the service does);
   with --parallel ddp,fsdp also under FSDP2.
3. Publish: `publish_version` of the model to a local directory (safetensors, config, sha256)
   for models of about 50M, 300M and 1B parameters: median seconds and MB/s.

Prints a table and writes benchmarks/results/learner_gpu.json. Needs torch, transformers,
numpy, safetensors, pyyaml, msgspec and pydantic; not Kafka clients, faust or vllm (it imports
the learner's pure modules only). rollstream need not be installed: it is imported from this
checkout when it is not.

Run (GPU):  python benchmarks/learner_gpu.py
Check (CPU, tiny models, a 2-process DDP run with gloo):
            python benchmarks/learner_gpu.py --device cpu --tiny --ddp-procs 2
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "learner_gpu.json"

# Llama shapes: name -> (hidden, layers, heads, intermediate, vocab)
SIZES = {
    "50M": (512, 6, 8, 1408, 32000),
    "300M": (1024, 20, 16, 2816, 32000),
    "1B": (2048, 16, 32, 5632, 32000),
}
TINY_SIZES = {"tiny-a": (64, 2, 4, 128, 1000), "tiny-b": (128, 2, 4, 256, 1000)}


def use_checkout() -> None:
    """Import `rollstream` from this checkout when it is not installed."""
    if importlib.util.find_spec("rollstream") is None:
        sys.path.insert(0, str(ROOT))


def llama(shape: tuple[int, int, int, int, int], device: str) -> Any:
    """The project's random Llama (seed 0, untied embeddings) of this shape, built on `device`."""
    import torch

    from rollstream.services.models.synthetic import random_llama

    hidden, layers, heads, inter, vocab = shape
    with torch.device(device):
        return random_llama(
            0,
            vocab_size=vocab,
            hidden_size=hidden,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            num_key_value_heads=heads,
            intermediate_size=inter,
            max_position_embeddings=2048,
        )


def synthetic_batch(
    seq: int, groups: int, samples: int, prompt: int, completion: int, vocab: int, seed: int = 0
) -> Any:
    """A TrainBatch of random tokens: behaviour log-probs near a uniform policy's, advantages
    +-1 within each group, every sample at policy version 0."""
    import numpy as np

    from rollstream.schemas import synthetic as syn

    rng = np.random.default_rng(seed * 1000 + seq)
    built = []
    for g in range(groups):
        gid = f"s{seq}g{g}"
        p_ids = rng.integers(1, vocab, prompt)
        scored = []
        for i in range(samples):
            lp = -np.log(vocab) + rng.normal(0, 0.1, completion)
            c_ids = rng.integers(1, vocab, completion)
            sample = syn.scored(gid, i, p_ids, c_ids, group_size=samples, logprobs=lp,
                                reward=float(i % 2), task="synthetic", text=("", ""),
                                finish_reason="length", temperature=1.0)  # fmt: skip
            scored.append(sample)
        advantages = [1.0 if i % 2 else -1.0 for i in range(samples)]
        built.append(syn.group(gid, scored, advantages, task="synthetic"))
    return syn.train_batch(built, seq=seq, batch_id=f"bench-{seq}")


def n_params(model: Any) -> int:
    return sum(p.numel() for p in model.parameters())


# ---- 1 and 2: training steps ------------------------------------------------------------------
def step_bench(args: argparse.Namespace, par: Any = None) -> dict[str, Any] | None:
    """Train warmup + steps batches; rank 0 returns the figures (None on other ranks)."""
    import torch

    from rollstream.services.learner.config import LearnerConfig
    from rollstream.services.learner.trainer import Trainer

    device = par.device if par is not None else args.device
    cuda = device.startswith("cuda")
    shape = TINY_SIZES["tiny-b"] if args.tiny else SIZES["300M"]
    model = llama(shape, device)
    cfg = LearnerConfig(
        objective=args.objective, lr=1e-6, token_budget=args.token_budget, max_grad_norm=1.0
    )
    trainer = Trainer(
        cfg,
        model,
        device=device,
        autocast_dtype=torch.bfloat16 if cuda else None,
        parallel=par,
    )
    if par is not None and not par.is_main:
        trainer.serve()
        return None
    shape_args = (args.groups, args.samples, args.prompt, args.completion, shape[4])
    data = [synthetic_batch(s, *shape_args) for s in range(1, args.warmup + args.steps + 1)]
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    times = []
    metrics: dict[str, float] = {}
    for i, batch in enumerate(data):
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        result = trainer.train(batch)
        if cuda:
            torch.cuda.synchronize()
        if i >= args.warmup:
            times.append(time.perf_counter() - t0)
            metrics = result.metrics
    trainer.close()
    rows = args.groups * args.samples
    tokens = rows * (args.prompt + args.completion)
    step = statistics.median(times)
    return {
        "model": {"hidden": shape[0], "layers": shape[1], "heads": shape[2],
                  "intermediate": shape[3], "vocab": shape[4], "params": n_params(model)},
        "batch": {"groups": args.groups, "samples": args.samples, "prompt": args.prompt,
                  "completion": args.completion, "tokens": tokens},
        "processes": par.world if par is not None else 1,
        "device": torch.cuda.get_device_name(device) if cuda else platform.processor() or "cpu",
        "precision": "fp32 weights, bf16 autocast" if cuda else "fp32",
        "token_budget": args.token_budget,
        "micro_batches_per_process": metrics.get("micro_batches"),
        "steps": len(times),
        "step_s_median": step,
        "step_s_min": min(times),
        "step_s_max": max(times),
        "tokens_per_s": tokens / step,
        "completion_tokens_per_s": rows * args.completion / step,
        "peak_memory_gib": torch.cuda.max_memory_allocated(device) / 2**30 if cuda else None,
    }  # fmt: skip


def ddp_worker(args: argparse.Namespace) -> int:
    """One torchrun process of the DDP / FSDP step benchmark; rank 0 writes --out."""
    from rollstream.services.learner import distributed

    par = distributed.setup(args.mode, args.device)
    try:
        res = step_bench(args, par)
        if res is not None:
            Path(args.out).write_text(json.dumps(res))
    finally:
        if par is not None:
            par.close()
    return 0


def ddp_bench(args: argparse.Namespace, procs: int, mode: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "ddp.json"
        keys = ("device", "steps", "warmup", "groups", "samples", "prompt", "completion",
                "token_budget", "objective")  # fmt: skip
        forward = [a for k in keys for a in (f"--{k.replace('_', '-')}", str(getattr(args, k)))]
        if args.tiny:
            forward.append("--tiny")
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc-per-node={procs}", __file__, "--ddp-worker", "--mode", mode,
               "--out", str(out), *forward]  # fmt: skip
        env = dict(os.environ)
        if args.device == "cpu":
            env.setdefault("OMP_NUM_THREADS", "1")
        subprocess.run(cmd, check=True, env=env)
        res = json.loads(out.read_text())
        res["parallel"] = mode
        return res


# ---- 3: publishing ----------------------------------------------------------------------------
def publish_bench(args: argparse.Namespace) -> list[dict[str, Any]]:
    import torch

    from rollstream.services.models.weights import publish_version

    rows = []
    sizes = TINY_SIZES if args.tiny else SIZES
    with tempfile.TemporaryDirectory(dir=args.store) as store:
        for name, shape in sizes.items():
            model = llama(shape, args.device)
            times = []
            size = 0
            for v in range(1, args.publish_repeats + 1):
                t0 = time.perf_counter()
                upd = publish_version(model, store=store, policy=name, version=v, keep=1)
                times.append(time.perf_counter() - t0)
                size = upd.size_bytes
            seconds = statistics.median(times)
            rows.append({"model": name, "params": n_params(model), "bytes": size,
                         "publish_s_median": seconds, "publish_s_min": min(times),
                         "mb_per_s": size / seconds / 1e6})  # fmt: skip
            del model
            if args.device.startswith("cuda"):
                torch.cuda.empty_cache()
    return rows


# ---- main ---------------------------------------------------------------------------------------
def parse(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--tiny", action="store_true", help="tiny models and batch (a quick check)")
    ap.add_argument("--steps", type=int, default=None, help="timed steps (default 10; tiny 3)")
    ap.add_argument("--warmup", type=int, default=None, help="untimed steps (default 2; tiny 1)")
    ap.add_argument("--groups", type=int, default=8)
    ap.add_argument("--samples", type=int, default=None, help="per group (default 8; tiny 4)")
    ap.add_argument("--prompt", type=int, default=None, help="tokens (default 128; tiny 16)")
    ap.add_argument("--completion", type=int, default=None, help="tokens (default 384; tiny 48)")
    ap.add_argument("--token-budget", type=int, default=8192, help="padded tokens/micro-batch")
    ap.add_argument("--objective", default="dapo")
    ap.add_argument("--ddp-procs", type=int, default=None, help="default: GPUs visible if > 1")
    ap.add_argument("--parallel", default="ddp", help="multi-process modes: ddp, fsdp or both")
    ap.add_argument("--publish-repeats", type=int, default=3)
    ap.add_argument("--store", default=None, help="parent dir of the weight store (local disk)")
    ap.add_argument("--skip-publish", action="store_true")
    ap.add_argument("--results", default=None, help=f"output JSON (default {RESULTS})")
    ap.add_argument("--ddp-worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--out", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--mode", default="ddp", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    defaults = {"steps": (10, 3), "warmup": (2, 1), "samples": (8, 4), "prompt": (128, 16),
                "completion": (384, 48)}  # fmt: skip
    for key, (full, tiny) in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, tiny if args.tiny else full)
    return args


def table(res: dict[str, Any]) -> str:
    lines = []
    for s in [res["step"], *res.get("multi", [])]:
        lines.append(
            f"step {s.get('parallel', 'one'):>4} {s['model']['params'] / 1e6:6.1f}M params "
            f"x{s['processes']} {s['device']}: "
            f"{s['step_s_median']:.3f} s/step, {s['tokens_per_s']:,.0f} tokens/s "
            f"({s['completion_tokens_per_s']:,.0f} completion tokens/s), "
            f"{s['batch']['tokens']} tokens/batch, peak {s['peak_memory_gib'] or 0:.1f} GiB"
        )
    for p in res.get("publish", []):
        lines.append(
            f"publish {p['model']:>6} {p['params'] / 1e6:7.1f}M params {p['bytes'] / 1e9:6.2f} GB:"
            f" {p['publish_s_median']:.2f} s ({p['mb_per_s']:,.0f} MB/s)"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    use_checkout()
    args = parse(argv)
    if args.ddp_worker:
        return ddp_worker(args)
    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("no CUDA device; use --device cpu --tiny for a check on CPU", file=sys.stderr)
        return 2
    res: dict[str, Any] = {
        "machine": {"python": platform.python_version(), "torch": torch.__version__,
                    "gpus": torch.cuda.device_count()},
        "step": step_bench(args),
    }  # fmt: skip
    print(table(res), flush=True)
    if args.device.startswith("cuda"):
        gc.collect()
        torch.cuda.empty_cache()  # give GPU 0 back to the torchrun processes
    procs = args.ddp_procs or (torch.cuda.device_count() if args.device != "cpu" else 0)
    if procs > 1:
        res["multi"] = []
        for mode in args.parallel.split(","):
            multi = ddp_bench(args, procs, mode)
            multi["speedup"] = res["step"]["step_s_median"] / multi["step_s_median"]
            res["multi"].append(multi)
    if not args.skip_publish:
        res["publish"] = publish_bench(args)
    print("\n" + table(res))
    out = RESULTS.with_name("learner_gpu.tiny.tmp") if args.tiny else RESULTS  # tiny: ignored
    out = Path(args.results) if args.results else out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
