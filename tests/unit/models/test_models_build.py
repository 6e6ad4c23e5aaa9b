"""`init_model`: an ordinary HF model directory, the same for a seed, partly competent."""

from __future__ import annotations

import hashlib
import json

import pytest

from rollstream.services.models.build import init_model, init_model_cli, tiny_settings


def sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def tiny_build(tmp_path_factory):
    out = tmp_path_factory.mktemp("build") / "base"
    spec, warmup = tiny_settings(steps=20)
    summary = init_model(out, seed=0, spec=spec, warmup=warmup, log=lambda _: None)
    return out, summary


def test_the_directory_loads_with_transformers(tiny_build):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out, summary = tiny_build
    names = {p.name for p in out.iterdir()}
    assert {
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "rollstream_base.json",
    } <= names
    assert not list(out.parent.glob("base.tmp-*"))
    model = AutoModelForCausalLM.from_pretrained(str(out), local_files_only=True)
    tok = AutoTokenizer.from_pretrained(str(out), local_files_only=True)
    assert type(model).__name__ == "LlamaForCausalLM"
    assert sum(p.numel() for p in model.parameters()) == summary["params"]
    assert model.config.vocab_size == len(tok) == 100
    assert model.generation_config.eos_token_id == tok.eos_token_id == 2
    saved = json.loads((out / "rollstream_base.json").read_text())
    assert saved["heldout"]["n"] == 600
    assert set(saved["heldout"]["per_task"]) == {"sort", "reverse", "count"}
    assert saved["warmup_steps"] == 20


def test_the_same_seed_builds_the_same_weights(tiny_build, tmp_path):
    out, summary = tiny_build
    spec, warmup = tiny_settings(steps=20)
    again = init_model(tmp_path / "again", seed=0, spec=spec, warmup=warmup, log=lambda _: None)
    other = init_model(tmp_path / "other", seed=1, spec=spec, warmup=warmup, log=lambda _: None)
    assert sha(tmp_path / "again" / "model.safetensors") == sha(out / "model.safetensors")
    assert again["heldout"] == summary["heldout"]
    assert sha(tmp_path / "other" / "model.safetensors") != sha(out / "model.safetensors")
    assert other["seed"] == 1


def test_the_cli_keeps_an_existing_model_unless_forced(tiny_build, capsys):
    out, _ = tiny_build
    before = sha(out / "model.safetensors")
    assert init_model_cli(str(out), seed=5, force=False) == 0
    printed = capsys.readouterr().out
    assert "already at" in printed and "held-out greedy accuracy" in printed
    assert sha(out / "model.safetensors") == before


@pytest.mark.slow
def test_the_default_base_model_is_partly_competent(tmp_path):
    """The real build (20-60 s): held-out greedy accuracy inside 10-50 %, and every family
    neither solved nor hopeless, so RL has signal on each."""
    summary = init_model(tmp_path / "base", seed=0, log=lambda _: None)
    assert summary["params"] == 550_528
    assert 0.10 <= summary["heldout"]["accuracy"] <= 0.50, summary["heldout"]
    for name, acc in summary["heldout"]["per_task"].items():
        assert 0.02 <= acc <= 0.80, (name, acc)


def test_the_small_size_is_the_shape_its_help_names():
    """`init-model --size small`'s help says 8.4M parameters in 8 layers."""
    import torch
    from transformers import LlamaForCausalLM

    from rollstream.services.models.build import SIZES, build_config

    with torch.device("meta"):
        model = LlamaForCausalLM(build_config(SIZES["small"]))
    assert sum(p.numel() for p in model.parameters()) == 8_444_160
    assert model.config.num_hidden_layers == 8
    assert model.config.hidden_size // model.config.num_attention_heads == 32  # vLLM's kernels


def test_the_cli_refuses_a_size_or_device_it_cannot_build(tmp_path, capsys):
    """A size it does not know, and a device torch cannot use (which would fail after the build
    began), are refused before anything is written."""
    assert init_model_cli(str(tmp_path / "m"), 0, False, device="cuda:99") == 2
    assert "--device cuda:99: torch sees" in capsys.readouterr().err
    assert init_model_cli(str(tmp_path / "m"), 0, False, device="tpu") == 2
    assert "--device tpu:" in capsys.readouterr().err
    assert init_model_cli(str(tmp_path / "m"), 0, False, size="huge") == 2
    assert "one of small, tiny" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()


def test_each_built_in_size_has_a_home_of_its_own_that_model_size_finds(tmp_path, monkeypatch):
    """`init-model --size small` without --out builds where `model.size: small` looks, beside
    (not over) the tiny model; a stage given neither a path nor a flag builds the size its
    config names, on its CPU, once; `up` builds in a child process, tiny on the CPU (a build
    that repeats) and small on the GPU when there is one."""
    import subprocess
    from types import SimpleNamespace

    from rollstream.services.models import build
    from rollstream.services.models.load import default_model_dir, model_dir_of

    monkeypatch.setenv("ROLLSTREAM_HOME", str(tmp_path))
    built: list[tuple[str, object, str]] = []

    def fake_init_model(out, seed=0, *, spec=None, device="cpu", **_):
        built.append((str(out), spec, device))
        out.mkdir(parents=True)
        (out / "model.safetensors").write_bytes(b"")
        return {}

    monkeypatch.setattr(build, "init_model", fake_init_model)
    monkeypatch.setattr(build, "format_summary", lambda summary: "")
    assert default_model_dir("tiny") != default_model_dir("small")
    assert init_model_cli(None, 0, False, size="small") == 0
    assert built == [(str(default_model_dir("small")), build.SIZES["small"], "cpu")]
    small = SimpleNamespace(path=None, size="small")
    assert model_dir_of(small) == str(default_model_dir("small"))
    assert model_dir_of(small, in_child=True) == str(default_model_dir("small"))
    assert len(built) == 1  # found, not rebuilt
    tiny = SimpleNamespace(path=None, size="tiny")
    assert model_dir_of(tiny) == str(default_model_dir("tiny"))
    assert built[1] == (str(default_model_dir("tiny")), build.SIZES["tiny"], "cpu")
    assert model_dir_of(small, "given/dir") == "given/dir"
    assert model_dir_of(SimpleNamespace(path="user/dir", size="tiny")) == "user/dir"

    children: list[str] = []  # what `up` would run, for sizes not built yet
    monkeypatch.setattr(subprocess, "run", lambda cmd, check: children.append(cmd[-1]))
    monkeypatch.setenv("ROLLSTREAM_HOME", str(tmp_path / "empty"))
    model_dir_of(tiny, in_child=True)
    model_dir_of(small, in_child=True)
    assert "size='tiny', device=resolve_device('cpu')" in children[0]
    assert "size='small', device=resolve_device('auto')" in children[1]


def test_model_size_offers_every_size_init_model_builds():
    from typing import get_args

    from rollstream.services.models.build import SIZES
    from rollstream.services.runtime.config import ModelSpec

    assert set(get_args(ModelSpec.model_fields["size"].annotation)) == set(SIZES)
