"""`rollstream init-model`: build the built-in base model, a small Llama with the char tokenizer.

Writes an ordinary Hugging Face model directory - config.json, generation_config.json,
model.safetensors, the tokenizer files, and rollstream_base.json (the build summary) - that
transformers and vLLM both load. The directory appears whole or not at all: it is written
under a temporary name and renamed. No download; deterministic for a seed (one CPU thread,
deterministic algorithms).

The warm-up (warmup.py) leaves the model partly competent so that RL has something to improve.
With the defaults (seed 0, one thread of this project's 2-core CPU): 550,528 parameters, built
in about 20 s (up to a minute when the cores are shared), 35.5 % greedy on the held-out split
of the default mixture (sort 31 %, reverse 26 %, count 50 %). A plain on-policy GRPO-style
loop on it (16 prompts x 8 samples at temperature 1, advantage = reward - group mean, Adam
lr 1e-4, one step per batch) reached 66.7 % after 300 steps (55 s) and 85.7 % after 5 minutes;
with 8 prompts and std-normalised advantages, 65.7 % after 500 steps (57 s). Seeds 1 and 2
start at 38.3 % and 30.7 % and gained +34 and +26 points in 300 steps. At lr 3e-4 the same
loop collapsed: keep the learner's lr near 1e-4 for this model.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from rollstream.services.models.warmup import WarmupSettings

SUMMARY_FILE = "rollstream_base.json"


@dataclass(frozen=True)
class BaseModelSpec:
    """Shape of the base model. head_dim = hidden_size / num_heads = 32 suits vLLM's kernels."""

    hidden_size: int = 128
    num_layers: int = 2
    num_heads: int = 4
    intermediate_size: int = 512
    max_position_embeddings: int = 512


# `init-model --size`: `tiny` is the built-in model. `small` has 4x its layers and 2x its width
# (8.4M parameters): on a GPU its generate calls and learner steps take several times the
# tiny model's, so the pipeline's fixed hop latency is a smaller share of a step; on a CPU it
# is slow to build (build it where a GPU is: --device cuda).
SIZES: dict[str, BaseModelSpec] = {
    "tiny": BaseModelSpec(),
    "small": BaseModelSpec(hidden_size=256, num_layers=8, num_heads=8, intermediate_size=1024),
}


def build_config(spec: BaseModelSpec) -> Any:
    """The LlamaConfig for `spec`, sized to the char tokenizer (untied embeddings, so every
    weight has one name: hot-swapping a state dict needs no tie bookkeeping)."""
    from transformers import LlamaConfig

    from rollstream.services.models.tokenizer import CONFIG_FIELDS

    return LlamaConfig(
        **CONFIG_FIELDS,
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_layers,
        num_attention_heads=spec.num_heads,
        num_key_value_heads=spec.num_heads,
        max_position_embeddings=spec.max_position_embeddings,
        tie_word_embeddings=False,
        rope_theta=10000.0,
    )


@contextlib.contextmanager
def _deterministic(threads: int, device: str = "cpu") -> Iterator[None]:
    """One fixed thread count and deterministic kernels for the block; both restored
    afterwards. On CUDA, cuBLAS is deterministic only with a fixed workspace (set here unless
    the environment sets one; it stays set), and ops without a deterministic kernel (the
    attention backward) warn instead of failing: a GPU build is not bit-for-bit repeatable."""
    import torch

    old_threads, old_det = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(threads)
    if device != "cpu":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=device != "cpu")
    try:
        yield
    finally:
        torch.set_num_threads(old_threads)
        torch.use_deterministic_algorithms(old_det)


def init_model(
    out_dir: str | Path,
    seed: int = 0,
    *,
    spec: BaseModelSpec | None = None,
    warmup: WarmupSettings | None = None,
    threads: int = 1,
    device: str = "cpu",
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Build, warm up, evaluate and save the base model into `out_dir` (replaced if present),
    warming up on `device` (a torch device: cpu, cuda, cuda:1). Returns the summary (also
    saved as rollstream_base.json): parameters, seconds, warm-up steps, held-out accuracy
    overall and per task. On a CPU a seed gives the same model every time; on a GPU two
    builds of a seed may differ slightly (see _deterministic), and CPU and GPU differ."""
    import torch
    from transformers import GenerationConfig, LlamaForCausalLM
    from transformers.utils import logging as hf_logging

    from rollstream.services.models.evaluate import heldout_accuracy
    from rollstream.services.models.tokenizer import build_tokenizer, save_tokenizer
    from rollstream.services.models.warmup import warm_up
    from rollstream.services.tasks import heldout_items

    hf_logging.disable_progress_bar()
    spec = spec or BaseModelSpec()
    warmup = warmup or WarmupSettings()
    out = Path(out_dir)
    start = time.perf_counter()
    with _deterministic(threads, device):
        torch.manual_seed(seed)
        config = build_config(spec)
        model = LlamaForCausalLM(config).to(device)
        params = sum(p.numel() for p in model.parameters())
        tokenizer = build_tokenizer()
        log(
            f"building base model: {params:,} parameters, {spec.num_layers} layers, "
            f"hidden {spec.hidden_size}; warm-up on "
            + ", ".join(f"{n}@{d}" for n, d, *_ in warmup.mixture)
        )
        model, report = warm_up(model, tokenizer, warmup, seed, log)
        acc = heldout_accuracy(
            model,
            tokenizer,
            heldout_items(warmup.mixture),
            batch_size=256,
            max_new_tokens=warmup.max_new_tokens,
        )
    summary: dict[str, Any] = {
        "seed": seed,
        "device": device,
        "params": params,
        "spec": asdict(spec),
        "mixture": [list(e) for e in warmup.mixture],
        "warmup_steps": report.steps,
        "held_at": report.held_at,
        "final_loss": report.loss,
        "heldout": {"accuracy": acc.accuracy, "n": acc.n, "per_task": acc.per_task},
        "seconds": round(time.perf_counter() - start, 1),
    }
    model.generation_config = GenerationConfig(
        bos_token_id=config.bos_token_id,
        eos_token_id=config.eos_token_id,
        pad_token_id=config.pad_token_id,
    )
    tmp = out.with_name(f"{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model.to("cpu").save_pretrained(str(tmp))
    save_tokenizer(tmp)
    (tmp / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n")
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return summary


def format_summary(summary: dict[str, Any]) -> str:
    """A few lines for people: size, time, held-out accuracy per task."""
    held = summary["heldout"]
    per_task = "  ".join(f"{k} {v:.0%}" for k, v in held["per_task"].items())
    return (
        f"parameters {summary['params']:,}  warm-up steps {summary['warmup_steps']}  "
        f"built in {summary['seconds']:.0f}s\n"
        f"held-out greedy accuracy {held['accuracy']:.1%} over {held['n']} items: {per_task}"
    )


def parse_tasks(spec: str) -> list[tuple[str, int, float]]:
    """`add,sort@4,my_pkg.parity@6` -> mixture entries (task, difficulty, weight 1.0); a task
    without `@N` gets its default difficulty. TaskError names an unknown task."""
    from rollstream.services.tasks import get_task

    entries = []
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, _, level = part.partition("@")
        task = get_task(name)
        difficulty = task.resolve_difficulty(int(level) if level else None)
        entries.append((name, difficulty, 1.0))
    return entries


def init_model_cli(
    out: str | None,
    seed: int,
    force: bool,
    tasks: str | None = None,
    dataset: str | None = None,
    prompt_field: str = "prompt",
    answer_field: str = "answer",
    gate: float | None = None,
    size: str = "tiny",
    device: str = "cpu",
) -> int:
    """`rollstream init-model [--out DIR] [--seed N] [--force] [--tasks T,...] [--dataset F]
    [--size S] [--device D]`; returns the exit code. Without --out the built-in model of that
    size is built where `model.size` finds it; with --tasks / --dataset --out is required (the
    built-in models stay as they are), and they warm it up on those instead of the default
    mixture."""
    from rollstream.services.models.load import default_model_dir, resolve_device
    from rollstream.services.tasks import TaskError

    if size not in SIZES:
        print(f"error: --size {size}: one of {', '.join(sorted(SIZES))}", file=sys.stderr)
        return 2
    device = resolve_device(device)
    problem = device_problem(device)
    if problem:
        print(f"error: --device {device}: {problem}", file=sys.stderr)
        return 2
    warmup = None
    if tasks or dataset:
        if not out:
            print("error: --tasks/--dataset need --out DIR", file=sys.stderr)
            return 2
        try:
            mixture = parse_tasks(tasks) if tasks else []
            if dataset:
                from rollstream.services.models.warmup import dataset_task

                task = dataset_task(dataset, None, prompt_field, answer_field)
                mixture.append((task.name, 1, 1.0))
        except (TaskError, ValueError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        longest = max(len(it.answer) for it in heldout_of(mixture)) if mixture else 12
        warmup = WarmupSettings(
            mixture=mixture, sft_weights={}, max_new_tokens=max(12, min(128, longest + 4))
        )
        if gate is not None:
            if not 0 < gate < 1:
                print("error: --gate must be between 0 and 1", file=sys.stderr)
                return 2
            warmup = replace(warmup, gate=gate)
    target = Path(out) if out else default_model_dir(size)
    summary_path = target / SUMMARY_FILE
    if (target / "model.safetensors").exists() and not force:
        print(f"base model already at {target} (--force rebuilds it)")
        if summary_path.exists():
            print(format_summary(json.loads(summary_path.read_text())))
        return 0
    target.parent.mkdir(parents=True, exist_ok=True)
    summary = init_model(target, seed=seed, spec=SIZES[size], warmup=warmup, device=device)
    print(f"base model written to {target}")
    print(format_summary(summary))
    if out:
        print(f"train on it: rollstream up --set model.path={target} (and feed.tasks to match)")
    elif size != "tiny":
        print(f"train on it: rollstream up --set model.size={size}")
    return 0


def device_problem(device: str) -> str | None:
    """Why torch cannot warm up on `device` here (None: it can)."""
    import torch

    try:
        where = torch.device(device)
    except RuntimeError as exc:
        return str(exc)
    if where.type == "cuda":
        if not torch.cuda.is_available():
            return "torch sees no CUDA device here"
        if where.index is not None and where.index >= torch.cuda.device_count():
            return f"torch sees {torch.cuda.device_count()} CUDA device(s)"
    elif where.type != "cpu":
        return "cpu or cuda[:N]"
    return None


def heldout_of(mixture: list[tuple[str, int, float]]) -> list[Any]:
    from rollstream.services.tasks import heldout_items

    return heldout_items(mixture)


def tiny_settings(steps: int = 20) -> tuple[BaseModelSpec, WarmupSettings]:
    """A spec and warm-up that build in seconds (tests): same code path, tiny sizes."""
    spec = BaseModelSpec(hidden_size=32, num_layers=1, num_heads=1, intermediate_size=64)
    return spec, replace(
        WarmupSettings(), max_steps=steps, batch_size=16, val_size=16, check_every=10
    )
