"""Load a model and tokenizer from any Hugging Face model directory, and find (or build) the
built-in tiny base model. torch/transformers are imported inside the functions."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

DTYPES = {
    "float32": "float32",
    "fp32": "float32",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
    "float16": "float16",
    "fp16": "float16",
}


def rollstream_home() -> Path:
    """`$ROLLSTREAM_HOME`, else `$XDG_CACHE_HOME/rollstream`, else ~/.cache/rollstream."""
    if os.environ.get("ROLLSTREAM_HOME"):
        return Path(os.environ["ROLLSTREAM_HOME"])
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "rollstream"


# Bumped whenever the built-in model's recipe (size, tasks, warm-up) changes, so that a model
# built by an older release is not picked up in place of the current one.
BASE_RECIPE = "v2"


def default_model_dir(size: str = "tiny") -> Path:
    """Where the built-in base model of `size` lives (one directory per recipe version and
    size; `tiny` keeps the name it always had)."""
    suffix = "" if size == "tiny" else f"-{size}"
    return rollstream_home() / "models" / f"base-{BASE_RECIPE}{suffix}"


def ensure_base_model(seed: int = 0, size: str = "tiny", device: str = "cpu") -> Path:
    """The built-in base model's directory, built on first use (a lock keeps concurrent
    processes from building it twice), warming up on `device`. A CPU build of a seed repeats
    on the same kind of CPU, so stages that each build their own on like machines agree;
    `rollstream up` builds once for all its stages (`build_in_child`)."""
    import fcntl

    out = default_model_dir(size)
    if (out / "model.safetensors").exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.parent / ".base.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (out / "model.safetensors").exists():
            from rollstream.services.models.build import SIZES, init_model

            init_model(out, seed=seed, spec=SIZES[size], device=device)
    return out


def model_dir_of(model: Any, given: str | None = None, *, in_child: bool = False) -> str:
    """The directory a stage loads: `given` (its --model flag), else the run's `model.path`,
    else the built-in model of `model.size`, built if missing: here on the CPU (a stage), or
    with `in_child` (`up`, `--mode sync`) in a child process (`build_in_child`)."""
    if given or model.path:
        return str(given or model.path)
    if in_child:
        return str(build_in_child(model.size))
    return str(ensure_base_model(size=model.size))


def build_in_child(size: str) -> Path:
    """The built-in model of `size`, built if missing in a child process: `tiny` on the CPU
    (a build that repeats, as every stage would make it), a larger one on the GPU when torch
    sees one. A long-lived caller (`up`) then holds no CUDA context from the warm-up, its
    environment stays as it was (a GPU build sets CUBLAS_WORKSPACE_CONFIG), and its random
    state is untouched (the build seeds torch)."""
    import subprocess
    import sys

    out = default_model_dir(size)
    if (out / "model.safetensors").exists():
        return out
    device = "cpu" if size == "tiny" else "auto"
    code = (
        "from rollstream.services.models.load import ensure_base_model, resolve_device; "
        f"ensure_base_model(size={size!r}, device=resolve_device({device!r}))"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    return out


def load_tokenizer(model_dir: str | Path) -> Any:
    """AutoTokenizer from a local directory (never the hub); pad token = EOS if missing."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    return tok


def resolve_device(name: str) -> str:
    """A torch device name for a config's `device`: "auto" is cuda when torch sees a GPU, else
    cpu; any other name as given."""
    if name != "auto":
        return name
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def load_model(model_dir: str | Path, device: str = "cpu", dtype: str | None = None) -> Any:
    """AutoModelForCausalLM from a local directory, on `device`, in `dtype` (None/"auto":
    bfloat16 on CUDA, float32 elsewhere)."""
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()

    if dtype in (None, "auto"):
        dtype = "bfloat16" if str(device).startswith("cuda") else "float32"
    if dtype not in DTYPES:
        raise ValueError(f"model.dtype: unknown dtype {dtype!r}; one of {sorted(DTYPES)}")
    model = AutoModelForCausalLM.from_pretrained(
        str(model_dir), local_files_only=True, dtype=getattr(torch, DTYPES[dtype])
    )
    return model.to(device)


def load_in_place(model: Any, state: dict[str, Any]) -> None:
    """Copy `state` (tensors on any device, e.g. views of verified host bytes) into `model`'s
    live parameters and buffers: strict, except a tied head. Names and shapes are checked
    before anything is copied - a state that does not fit raises ValueError and leaves the
    model untouched. Copies to a GPU are issued asynchronously (from pinned memory they
    overlap) and waited for once, before returning: the source may be reused after."""
    import torch

    live = model.state_dict(keep_vars=True)
    tied = getattr(model.config, "tie_word_embeddings", False)
    missing = [k for k in live if k not in state and not (tied and k.endswith("lm_head.weight"))]
    unexpected = [k for k in state if k not in live]
    wrong = [k for k in state if k in live and tuple(state[k].shape) != tuple(live[k].shape)]
    if missing or unexpected or wrong:
        raise ValueError(
            f"weights do not fit the model: missing {missing[:3]}, "
            f"unexpected {unexpected[:3]}, wrong shape {wrong[:3]}"
        )
    cuda = False
    with torch.no_grad():
        for k, src in state.items():
            dst = live[k]
            dst.copy_(src, non_blocking=True)
            cuda = cuda or dst.device.type == "cuda"
        if tied:
            model.tie_weights()
    if cuda:
        torch.cuda.synchronize()


def has_chat_template(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def resolve_template(template: str | None, model_path: str | None, tokenizer: Any) -> str:
    """`plain` or `chat`. `auto` (or None): chat for a user's model (`model.path` set) whose
    tokenizer has a chat template, plain otherwise - the built-in model is trained on plain
    prompts. `chat` on a tokenizer without a template is an error, said at start."""
    if template in (None, "auto"):
        return "chat" if model_path and has_chat_template(tokenizer) else "plain"
    if template == "chat" and not has_chat_template(tokenizer):
        raise ValueError(
            "model.template is chat but the model's tokenizer has no chat template "
            "(tokenizer_config.json / chat_template.jinja); set model.template=plain"
        )
    if template not in ("plain", "chat"):
        raise ValueError(f"model.template: unknown {template!r} (auto, plain, chat)")
    return template


def encode_prompt(
    tokenizer: Any, prompt: str, template: str = "plain", system_prompt: str | None = None
) -> list[int]:
    """Token ids of `prompt`: as is (`plain`), or as one user turn of the tokenizer's chat
    template, after `system_prompt` if given, ending with the assistant's turn opening."""
    if template != "chat":
        return list(tokenizer.encode(prompt))
    messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
    messages.append({"role": "user", "content": prompt})
    ids = tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=True, return_dict=False
    )
    return list(ids)


def stop_token_ids(model: Any, tokenizer: Any) -> list[int]:
    """The tokenizer's EOS, then every other eos_token_id of the model's generation config
    (a chat model ends a turn with one token, a document with another)."""
    eos = tokenizer.eos_token_id
    gen = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    extra = gen if isinstance(gen, list) else [gen]
    return [eos] + [t for t in extra if t is not None and t != eos]


def describe(model: Any) -> str:
    """`Qwen2ForCausalLM, 494.0M parameters, cuda:0, bfloat16` (for start-up log lines)."""
    p = next(model.parameters())
    n = sum(t.numel() for t in model.parameters())
    dtype = str(p.dtype).removeprefix("torch.")
    return f"{type(model).__name__}, {n / 1e6:.1f}M parameters, {p.device}, {dtype}"
