"""Does the transformers path keep one GPU busy? Generated and trained tokens/s of a ~0.5B model.

A random-init model of Qwen2.5-0.5B's shape (494M parameters, vocab 151,936, tied embeddings;
built offline by rollstream/services/models/synthetic.py with a small BPE tokenizer, saved as an HF
dir) runs one-GPU colocated RL for --seconds: the generator's own transformers backend (bf16,
batched `generate` with a KV cache, behaviour logprobs recorded on the device) samples
--prompts x --n completions of --max-tokens tokens; the learner's own Trainer (fp32 master
weights, bf16 autocast) trains on exactly those samples as GRPO groups; the version is
published (bf16 on the wire) and loaded back into the generator. Measured:

  generated tokens/s     completion tokens sampled / seconds in generate
  learner tokens/s       prompt + completion tokens trained / seconds in train steps
  learner idle fraction  1 - (seconds in train steps) / wall seconds of the loop
  GPU utilisation        nvidia-smi utilization.gpu sampled every 200 ms: mean, p50, max
  swap seconds           publish + verify (full) + load per version

Random weights rarely sample EOS, so nearly every completion runs to --max-tokens (the
throughput case, not a learning run). Writes JSON (--out, default
benchmarks/results/gpu_throughput.json) and prints a summary.

GPU host (about 4 minutes):  python benchmarks/gpu_throughput.py
CPU check (tiny, seconds):   python benchmarks/gpu_throughput.py --tiny --seconds 20
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def use_checkout() -> None:
    """Import `rollstream` from this checkout when it is not installed."""
    if importlib.util.find_spec("rollstream") is None:
        sys.path.insert(0, str(ROOT))


class GpuSampler:
    """nvidia-smi utilization.gpu every 200 ms in a thread (nothing where there is none)."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._proc: subprocess.Popen | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        cmd = ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"]
        try:
            self._proc = subprocess.Popen([*cmd, "-lms", "200"], stdout=subprocess.PIPE, text=True)
        except OSError:
            return
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            if self._stop.is_set():
                break
            try:
                self.samples.append(float(line.split(",")[0]))
            except ValueError:
                pass

    def __enter__(self) -> GpuSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait(5)
        self._thread.join(5)

    def summary(self) -> dict[str, float | int | None]:
        s = sorted(self.samples)
        if not s:
            return {"n": 0, "mean": None, "p50": None, "max": None}
        return {"n": len(s), "mean": statistics.fmean(s), "p50": s[len(s) // 2], "max": s[-1]}


def to_batch(reqs: list[Any], outs: list[list[Any]], seq: int) -> Any:
    """The generated samples as one TrainBatch of GRPO groups (advantage +-1 by a coin)."""
    from rollstream.schemas import synthetic as syn

    groups = []
    for r, samples in zip(reqs, outs, strict=True):
        scored = [
            syn.scored(
                r.request_id,
                i,
                r.prompt_ids,
                s.completion_ids,
                group_size=len(samples),
                logprobs=s.logprobs,
                reward=float(i % 2),
                task="bench",
                text=("", ""),
                finish_reason=s.finish_reason,
                temperature=1.0,
            )  # fmt: skip
            for i, s in enumerate(samples)
        ]
        adv = [1.0 if i % 2 else -1.0 for i in range(len(samples))]
        groups.append(syn.group(r.request_id, scored, adv, task="bench"))
    return syn.train_batch(groups, seq=seq, batch_id=f"bench-{seq}")


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tiny", action="store_true", help="a tiny model (CPU check)")
    ap.add_argument("--seconds", type=float, default=150.0, help="length of the measured loop")
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--prompt-len", type=int, default=128)
    ap.add_argument("--max-tokens", type=int, default=256)
    ap.add_argument("--store", default=None, help="weight store (default /dev/shm or tmp)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "gpu_throughput.json"))
    args = ap.parse_args()
    if args.tiny:
        args.prompts, args.n, args.prompt_len, args.max_tokens = 4, 4, 16, 16
    return args


@dataclasses.dataclass
class Totals:
    """Seconds and tokens of the measured loop, summed over its rounds."""

    rounds: int = 0
    gen_s: float = 0.0
    train_s: float = 0.0
    swap_s: float = 0.0
    gen_tokens: int = 0
    train_tokens: int = 0
    swaps: list[float] = dataclasses.field(default_factory=list)  # seconds of each swap


class Loop:
    """One GPU's colocated RL: the generator's transformers backend samples, the learner's
    Trainer trains on exactly those samples, and each version is published and loaded back."""

    def __init__(self, args: argparse.Namespace, model_dir: Path, store: Path) -> None:
        import torch

        from rollstream.services.generator.backend_hf import HFBackend
        from rollstream.services.learner.config import LearnerConfig
        from rollstream.services.learner.trainer import Trainer
        from rollstream.services.models.load import load_model

        self.args, self.store = args, store
        self.cuda = torch.cuda.is_available()
        self.device = "cuda" if self.cuda else "cpu"
        self.gen = HFBackend(str(model_dir), device=self.device)  # bf16 on CUDA, fp32 on CPU
        model = load_model(model_dir, device=self.device, dtype="float32")
        self.params = sum(p.numel() for p in model.parameters())
        cfg = LearnerConfig(objective="grpo", lr=1e-6, max_grad_norm=1.0)
        autocast = torch.bfloat16 if self.cuda else None
        self.trainer = Trainer(cfg, model, device=self.device, autocast_dtype=autocast, pad_id=0)
        self.rng = random.Random(0)

    def requests(self, seq: int) -> list[Any]:
        from rollstream.services.generator.backend import GenRequest

        vocab, a = len(self.gen.tokenizer), self.args
        return [
            GenRequest(
                f"s{seq}p{i}",
                [self.rng.randrange(3, vocab) for _ in range(a.prompt_len)],
                n=a.n,
                temperature=1.0,
                max_tokens=a.max_tokens,
            )  # fmt: skip
            for i in range(a.prompts)
        ]

    def sync(self) -> None:
        if self.cuda:
            import torch

            torch.cuda.synchronize()

    def warm_up(self) -> None:
        """One round, not measured."""
        reqs = self.requests(0)
        self.trainer.train(to_batch(reqs, self.gen.generate(reqs), 1))
        self.sync()

    def round(self, t: Totals) -> None:
        """Generate, train, swap once; add the seconds and tokens to `t`."""
        t.rounds += 1
        reqs = self.requests(t.rounds)
        t0 = time.perf_counter()
        outs = self.gen.generate(reqs)
        self.sync()
        t.gen_s += time.perf_counter() - t0
        t.gen_tokens += sum(len(s.completion_ids) for o in outs for s in o)
        batch = to_batch(reqs, outs, t.rounds + 1)
        pairs = zip(reqs, outs, strict=True)
        t.train_tokens += sum(
            len(r.prompt_ids) + len(s.completion_ids) for r, o in pairs for s in o
        )
        t0 = time.perf_counter()
        self.trainer.train(batch)
        self.sync()
        t.train_s += time.perf_counter() - t0
        t0 = time.perf_counter()
        self.swap(t.rounds)
        t.swaps.append(time.perf_counter() - t0)
        t.swap_s += t.swaps[-1]

    def swap(self, version: int) -> None:
        """Publish the trained version and load it into the generator."""
        from rollstream.services.models.weights import fetch_state, publish_version

        upd = publish_version(
            self.trainer.model, store=str(self.store), policy="bench", version=version, keep=2,
            wire_dtype="bfloat16" if self.cuda else None,
        )  # fmt: skip
        _, state = fetch_state(
            upd.uri, upd.sha256, size_bytes=upd.size_bytes,
            chunk_bytes=upd.chunk_bytes, pinned=self.gen.pinned,
        )  # fmt: skip
        self.gen.load_state(state)  # the generator's path: one verified read, in place
        self.sync()


def measure(args: argparse.Namespace, work: Path, store: Path) -> dict[str, Any]:
    """Build the model, warm up, run the loop for --seconds; the result to write."""
    import torch

    from rollstream.services.models.synthetic import QWEN2_0_5B_SIZES, TINY_SIZES, build_hf_model

    t0 = time.perf_counter()
    sizes = TINY_SIZES if args.tiny else QWEN2_0_5B_SIZES
    model_dir = build_hf_model(work / "model", arch="qwen2", sizes=sizes, dtype="bfloat16")
    build_s = time.perf_counter() - t0
    loop = Loop(args, model_dir, store)
    print(f"{loop.params / 1e6:.1f}M parameters on {loop.device}; built in {build_s:.0f}s")
    loop.warm_up()
    t = Totals()
    with GpuSampler() as gpu:
        start = time.perf_counter()
        while time.perf_counter() - start < args.seconds:
            loop.round(t)
        wall = time.perf_counter() - start
    return {
        "benchmark": "gpu_throughput",
        "model": "qwen2 random-init" + (" tiny" if args.tiny else " 0.5B shape"),
        "params": loop.params,
        "device": loop.device,
        "gpu": torch.cuda.get_device_name(0) if loop.cuda else None,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "shape": {k: getattr(args, k) for k in ("prompts", "n", "prompt_len", "max_tokens")},
        "rounds": t.rounds,
        "wall_s": wall,
        "generate_s": t.gen_s,
        "train_s": t.train_s,
        "swap_s": t.swap_s,
        "generated_tokens": t.gen_tokens,
        "generated_tokens_per_s": t.gen_tokens / t.gen_s if t.gen_s else None,
        "learner_tokens_per_s": t.train_tokens / t.train_s if t.train_s else None,
        "learner_idle_fraction": 1 - t.train_s / wall,
        "swap_s_median": statistics.median(t.swaps) if t.swaps else None,
        "gpu_util": gpu.summary(),
    }


def main() -> int:
    args = parse_args()
    use_checkout()
    work = Path(tempfile.mkdtemp(prefix="rollstream-gputp-"))
    shm = Path("/dev/shm")
    store = Path(args.store or (shm if shm.is_dir() else work))
    store = Path(tempfile.mkdtemp(prefix="rollstream-gputp-store-", dir=store))
    try:
        result = measure(args, work, store)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(store, ignore_errors=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    for k in ("rounds", "wall_s", "generated_tokens_per_s", "learner_tokens_per_s",
              "learner_idle_fraction", "swap_s_median", "gpu_util"):  # fmt: skip
        print(f"{k:24} {result[k]}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
