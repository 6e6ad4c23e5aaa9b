"""Any Hugging Face model directory: a tiny Qwen2 with its own byte-level BPE tokenizer and a
ChatML template, built offline. Prompts go through its chat template (with a system turn when
one is set), generation stops on either of its stop tokens, and the weight store writes files
that safetensors and transformers read as they are, hashed as they were written."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch


@pytest.fixture(scope="module")
def qwen_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from rollstream.services.models.synthetic import build_hf_model

    return build_hf_model(tmp_path_factory.mktemp("m") / "qwen", arch="qwen2")


def test_the_built_dir_is_an_ordinary_qwen2_with_bpe_and_a_chat_template(qwen_dir: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(qwen_dir), local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(str(qwen_dir), local_files_only=True)
    assert type(model).__name__ == "Qwen2ForCausalLM" and model.config.tie_word_embeddings
    text = "Ava has 12 apples and gets 3 more."
    ids = tok.encode(text)
    assert len(ids) < len(text), "BPE merges nothing: not a trained tokenizer"
    assert tok.decode(ids) == text
    assert model.generation_config.eos_token_id == [
        tok.convert_tokens_to_ids("<|im_end|>"),
        tok.convert_tokens_to_ids("<|endoftext|>"),
    ]


def test_prompts_go_through_the_chat_template_with_the_system_turn(qwen_dir: Path) -> None:
    from rollstream.services.models.load import encode_prompt, load_tokenizer, resolve_template

    tok = load_tokenizer(qwen_dir)
    assert resolve_template("auto", str(qwen_dir), tok) == "chat"
    assert resolve_template("auto", None, tok) == "plain"
    chat = tok.decode(encode_prompt(tok, "2+2?", "chat", "Be brief."))
    assert chat == (
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n"
    )
    assert tok.decode(encode_prompt(tok, "2+2?", "plain")) == "2+2?"


def test_generation_stops_at_either_stop_token(qwen_dir: Path) -> None:
    from rollstream.services.generator.backend_hf import HFBackend

    be = HFBackend(str(qwen_dir), device="cpu")
    assert be.stop_ids == [2, 0]
    for stop in (2, 0):
        sample = be._sample([70, 71, stop, 72, 73], [-1.0] * 5, [])
        assert sample.completion_ids == [70, 71, stop] and sample.finish_reason == "stop"
    assert be._sample([70, 71, 72], [-1.0] * 3, []).finish_reason == "length"


def test_write_safetensors_is_read_back_exactly_and_hashed_as_written(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    from rollstream.services.models.weights import write_safetensors

    g = torch.Generator().manual_seed(0)
    tensors = {
        "w": torch.randn(5, 3, generator=g),
        "h": torch.randn(7, generator=g).to(torch.bfloat16),
        "i": torch.arange(4),
        "s": torch.tensor(2.5),
        "e": torch.empty(0, 3),
    }
    path = tmp_path / "x.safetensors"
    assert write_safetensors(tensors, path, {"format": "pt"}, chunk_bytes=0) == (
        hashlib.sha256(path.read_bytes()).hexdigest()
    )
    back = load_file(str(path))
    for name, t in tensors.items():
        assert back[name].dtype == t.dtype and torch.equal(back[name], t), name
    # the chunked digest, by its definition (rollstream/schemas/control.py), over 24-byte chunks
    digest = write_safetensors(tensors, path, {"format": "pt"}, chunk_bytes=24)
    data = path.read_bytes()
    h = hashlib.sha256(f"rollstream-chunked-sha256 24 {len(data)}\n".encode())
    for a in range(0, len(data), 24):
        h.update(hashlib.sha256(data[a : a + 24]).digest())
    assert len(data) > 5 * 24 and digest == h.hexdigest()
    assert all(torch.equal(load_file(str(path))[k], t) for k, t in tensors.items())


def test_bf16_on_the_wire_loads_with_transformers_and_a_cut_file_is_refused(
    qwen_dir: Path, tmp_path: Path
) -> None:
    from transformers import AutoModelForCausalLM

    from rollstream.services.models.weights import WeightError, fetch_version, publish_version

    model = AutoModelForCausalLM.from_pretrained(str(qwen_dir), local_files_only=True)
    phases: dict[str, float] = {}
    upd = publish_version(
        model,
        store=str(tmp_path),
        policy="p",
        version=1,
        model_dir=qwen_dir,
        wire_dtype="bfloat16",
        phases=phases,
    )
    assert set(phases) == {"gather", "serialise", "write_hash", "other_files", "rename"}
    assert "chat_template.jinja" in upd.files
    local = fetch_version(
        upd.uri,
        upd.sha256,
        verify="size",
        expected_size=upd.size_bytes,
        chunk_bytes=upd.chunk_bytes,
    )
    loaded = AutoModelForCausalLM.from_pretrained(str(local), local_files_only=True)
    assert loaded.dtype == torch.bfloat16
    want = model.state_dict()["model.embed_tokens.weight"].to(torch.bfloat16)
    assert torch.equal(loaded.state_dict()["model.embed_tokens.weight"], want)
    weights = Path(upd.uri) / "model.safetensors"
    with open(weights, "r+b") as f:
        f.truncate(upd.size_bytes - 8)
    for verify in ("size", "full"):
        with pytest.raises(WeightError):
            fetch_version(
                upd.uri,
                upd.sha256,
                verify=verify,
                expected_size=upd.size_bytes,
                chunk_bytes=upd.chunk_bytes,
            )
