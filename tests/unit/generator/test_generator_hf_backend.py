"""The transformers backend on a tiny random Llama, no broker: its behaviour logprobs are those
of the distribution it sampled from (a plain transformers forward pass, tempered and top-k
truncated, agrees), constrained samples all match their regex / choice list, stop strings and
EOS end samples with finish reason "stop", and load_weights changes what greedy decoding gives.
Each test runs on both decoding paths: `generate`, and the static-cache loop that a GPU runs
as CUDA graphs (`generator.cuda_graphs`), here without a graph (regex and choice constraints
take `generate` on both; the recording of graphs is checked on a GPU by
benchmarks/static_decode.py).
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import pytest
from tiny_llama import (
    SMALL_SIZES,
    hf_greedy,
    hf_logprobs,
    hf_model,
    two_versions,
    without_tensor,
)

from rollstream.services.generator.backend import GenRequest


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return two_versions(tmp_path_factory.mktemp("hf-models"), SMALL_SIZES, head_scale=8.0)


@pytest.fixture(scope="module", params=["generate", "static"])
def backend(models: dict[str, Path], request: pytest.FixtureRequest) -> Any:
    from rollstream.services.generator.backend_hf import HFBackend
    from rollstream.services.generator.static_decode import StaticDecoder

    be = HFBackend(str(models["v0"]), seed=0, device="cpu", static_cache=request.param == "static")
    if request.param == "static":  # on the CPU: the loop, without a graph
        assert isinstance(be.static, StaticDecoder) and not be.static.graphs
    else:
        assert be.static is None
    yield be
    be.close()


@pytest.fixture(scope="module")
def hf(models: dict[str, Path]) -> Any:
    return hf_model(models["v0"])


def encode(backend: Any, text: str) -> list[int]:
    return list(backend.tokenizer.encode(text))


# Prompts of different lengths, so the batch is left-padded.
PROMPTS = ["12+34=", "sort 9317:", "hello"]


@pytest.mark.parametrize(
    ("temperature", "top_k"), [(1.0, -1), (0.7, -1), (1.0, 5), (0.7, 3)], ids=str
)
def test_logprobs_are_those_of_the_distribution_sampled_from(
    backend: Any, hf: Any, temperature: float, top_k: int
) -> None:
    reqs = [
        GenRequest(
            f"p{i}",
            encode(backend, p),
            6,
            temperature=temperature,
            top_k=top_k,
            max_tokens=20,
            seed=7,
        )
        for i, p in enumerate(PROMPTS)
    ]
    out = backend.generate(reqs)
    assert [len(s) for s in out] == [6, 6, 6]
    worst = 0.0
    untempered_gap = 0.0  # what a backend reporting raw (T=1, untruncated) logprobs would be off by
    for r, samples in zip(reqs, out, strict=True):
        assert len({tuple(s.completion_ids) for s in samples}) > 1  # n samples, not n copies
        for s in samples:
            assert len(s.logprobs) == len(s.completion_ids) > 0
            assert all(lp <= 0.0 for lp in s.logprobs)
            want = hf_logprobs(hf, r.prompt_ids, s.completion_ids, temperature, top_k)
            raw = hf_logprobs(hf, r.prompt_ids, s.completion_ids, 1.0)
            worst = max(worst, *(abs(a - b) for a, b in zip(s.logprobs, want, strict=True)))
            untempered_gap = max(
                untempered_gap, *(abs(a - b) for a, b in zip(s.logprobs, raw, strict=True))
            )
    assert worst < 1e-4
    if (temperature, top_k) != (1.0, -1):
        assert untempered_gap > 1e-2  # the check above would catch unprocessed logprobs


def test_temperature_zero_is_transformers_greedy(backend: Any, hf: Any) -> None:
    reqs = [
        GenRequest(f"g{i}", encode(backend, p), 2, temperature=0.0, max_tokens=24)
        for i, p in enumerate(PROMPTS)
    ]
    for r, samples in zip(reqs, backend.generate(reqs), strict=True):
        want = hf_greedy(hf, r.prompt_ids, 24, backend.eos_id)
        assert [s.completion_ids for s in samples] == [want, want]
        assert samples[0].finish_reason == ("stop" if want[-1] == backend.eos_id else "length")


REGEX = r"[0-9]{1,3}(\+[0-9]{1,3})?="
CHOICES = ["yes", "no", "maybe so"]


def test_200_regex_samples_all_match(backend: Any) -> None:
    reqs = [
        GenRequest(f"r{i}", encode(backend, p), 100, regex=REGEX, max_tokens=16, seed=i)
        for i, p in enumerate(PROMPTS[:2])
    ]
    samples = [s for group in backend.generate(reqs) for s in group]
    texts = [s.text for s in samples]
    assert len(texts) == 200
    assert all(re.fullmatch(REGEX, t) for t in texts), [
        t for t in texts if not re.fullmatch(REGEX, t)
    ]
    assert len(set(texts)) > 20  # sampled, not one forced string
    assert {s.finish_reason for s in samples} == {"stop"}
    # '=' ends every match, so after it EOS is the only allowed token: forced, logprob 0
    for s in samples:
        assert s.completion_ids[-1] == backend.eos_id
        assert s.logprobs[-1] == pytest.approx(0.0, abs=1e-6)


def test_200_choice_samples_all_match_with_masked_logprobs(backend: Any) -> None:
    reqs = [
        GenRequest(f"c{i}", encode(backend, p), 100, choice=CHOICES, max_tokens=16, seed=i)
        for i, p in enumerate(PROMPTS[:2])
    ]
    out = backend.generate(reqs)
    texts = [s.text for group in out for s in group]
    assert len(texts) == 200
    assert set(texts) <= set(CHOICES) and len(set(texts)) > 1
    # The first letter picks the choice (y, n or m: renormalised over those three); every
    # later token, EOS included, is forced (logprob 0).
    for group in out:
        first = {s.completion_ids[0]: s.logprobs[0] for s in group}
        total = sum(math.exp(lp) for lp in first.values())
        assert total == pytest.approx(1.0, abs=1e-4) if len(first) == 3 else total < 1.0
        for s in group:
            assert s.finish_reason == "stop"
            assert s.logprobs[1:] == pytest.approx([0.0] * (len(s.logprobs) - 1), abs=1e-6)


def test_stop_string_cuts_the_text_and_ends_the_sample(backend: Any, hf: Any) -> None:
    prompt = encode(backend, PROMPTS[0])
    full = hf_greedy(hf, prompt, 24, backend.eos_id)
    text = backend.tokenizer.decode(full, skip_special_tokens=True)
    stop = text[3:5]  # a string that greedy decoding reaches after a few characters
    end = text.find(stop)
    [[s]] = backend.generate(
        [GenRequest("s", prompt, 1, temperature=0.0, max_tokens=24, stop=[stop])]
    )
    assert (s.text, s.finish_reason) == (text[:end], "stop")
    # the tokens run through the one that completed the stop string, logprobs alongside
    assert s.completion_ids == full[: end + len(stop)]
    assert len(s.logprobs) == len(s.completion_ids)


def test_load_weights_switches_greedy_output_to_the_new_weights(
    backend: Any, models: dict[str, Path], tmp_path: Path
) -> None:
    new = hf_model(models["v1"])
    prompt = encode(backend, PROMPTS[1])
    want = hf_greedy(new, prompt, 24, backend.eos_id)
    weights = tmp_path / "store"
    weights.mkdir()
    (weights / "model.safetensors").write_bytes((models["v1"] / "model.safetensors").read_bytes())
    try:
        assert backend.load_weights(str(weights)) > 0
        [[s]] = backend.generate([GenRequest("w", prompt, 1, temperature=0.0, max_tokens=24)])
        assert s.completion_ids == want
    finally:
        backend.load_weights(str(models["v0"]))


def test_load_weights_refuses_a_file_that_does_not_fit(
    backend: Any, models: dict[str, Path], hf: Any, tmp_path: Path
) -> None:
    without_tensor(models["v1"], "model.norm.weight", tmp_path)
    with pytest.raises(ValueError, match="model.norm.weight"):
        backend.load_weights(str(tmp_path))
    prompt = encode(backend, PROMPTS[2])
    [[s]] = backend.generate([GenRequest("x", prompt, 1, temperature=0.0, max_tokens=12)])
    assert s.completion_ids == hf_greedy(hf, prompt, 12, backend.eos_id)


def test_weights_loaded_between_decoding_steps_take_effect_from_the_next_token(
    backend: Any, models: dict[str, Path]
) -> None:
    """swap_policy inflight: the hook runs once per decoding step; weights loaded by it leave
    the tokens sampled so far as they were (v0's greedy prefix) and change the rest."""
    prompt = encode(backend, PROMPTS[1])
    req = GenRequest("f", prompt, 1, temperature=0.0, max_tokens=12)
    [[before]] = backend.generate([req])
    calls: list[int] = []

    def swap_after_four_steps() -> None:
        calls.append(1)
        if len(calls) == 4:
            backend.load_weights(str(models["v1"]))

    backend.between_steps = swap_after_four_steps
    try:
        [[during]] = backend.generate([req])
    finally:
        backend.between_steps = None
        backend.load_weights(str(models["v0"]))
    assert len(before.completion_ids) == 12  # (the swap is only seen by a long enough sample)
    assert len(calls) == len(during.completion_ids)
    assert during.completion_ids[:4] == before.completion_ids[:4]
    assert during.logprobs[:4] == pytest.approx(before.logprobs[:4])
    assert during.logprobs[4:] != pytest.approx(before.logprobs[4:])


def test_a_groups_prompt_is_run_once_and_its_samples_are_those_of_unshared_generation(
    backend: Any,
) -> None:
    """A request's n rows share one pass over its prompt (the model's first forward sees one
    row per request, not per sample), and the samples are token for token, logprob for
    logprob, what the same path gives when every row runs the prompt itself (same seed):
    mixed n, mixed prompt lengths, down to a one-token prompt."""
    reqs = [
        GenRequest("a", encode(backend, PROMPTS[0]), 4, max_tokens=12, seed=3),
        GenRequest("b", encode(backend, PROMPTS[1]), 1, max_tokens=12, seed=3),
        GenRequest("c", encode(backend, "h"), 3, max_tokens=12, seed=3),
    ]
    batches: list[int] = []
    hook = backend.model.register_forward_pre_hook(
        lambda _m, args, kwargs: batches.append(kwargs["input_ids"].shape[0]), with_kwargs=True
    )
    try:
        shared = backend.generate(reqs)
        first_shared = batches[0]
        backend.share_prompts = False  # generate's own path: every row runs its prompt
        batches.clear()
        unshared = backend.generate(reqs)
    finally:
        hook.remove()
        backend.share_prompts = True
    # unshared, every row runs its prompt: 8 rows, or the static path's padded rows
    rows = 8 if backend.static is None else backend.static._slots[-1].rows
    assert (first_shared, batches[0]) == (3, rows)
    for got, want in zip(shared, unshared, strict=True):
        assert [s.completion_ids for s in got] == [s.completion_ids for s in want]
        for s, w in zip(got, want, strict=True):
            assert s.logprobs == pytest.approx(w.logprobs, abs=1e-5)
    assert len({tuple(s.completion_ids) for s in shared[0]}) > 1  # samples, not copies


def test_the_static_cache_path_samples_what_generate_samples(models: dict[str, Path]) -> None:
    """With the same seed the static-cache loop draws what generate draws, token for token,
    logprob for logprob - at the call's exact shape (the CPU's way), and when its rows are
    padded to a bucket (3 x 6 = 18 rows run as 32) and its prompts to a multiple of 16 (a
    GPU's) - and the padding rows cost no output."""
    from rollstream.services.generator.backend_hf import HFBackend
    from rollstream.services.generator.static_decode import StaticDecoder

    be = HFBackend(str(models["v0"]), seed=0, device="cpu")
    reqs = [
        GenRequest(f"s{i}", encode(be, p), 6, temperature=0.9, top_p=0.95, max_tokens=20, seed=11)
        for i, p in enumerate(PROMPTS)
    ]
    be.static = None
    want = be.generate(reqs)
    width = max(len(r.prompt_ids) for r in reqs)
    for bucketed, shape in ((True, (32, 16 + 32)), (False, (18, width + 20))):
        be.static = StaticDecoder(be.model, graphs=False, pad_id=be.pad_id, bucketed=bucketed)
        got = be.generate(reqs)
        assert [len(g) for g in got] == [6, 6, 6]
        for g, w in zip(got, want, strict=True):
            assert [s.completion_ids for s in g] == [s.completion_ids for s in w]
            assert [s.finish_reason for s in g] == [s.finish_reason for s in w]
            for s, t in zip(g, w, strict=True):
                assert s.logprobs == pytest.approx(t.logprobs, abs=1e-5)
        assert len({tuple(s.completion_ids) for g in got for s in g}) > 3  # not copies
        assert [(s.rows, s.length) for s in be.static._slots] == [shape]


def test_the_static_path_reuses_a_shape_it_fits_in_and_keeps_few(models: dict[str, Path]) -> None:
    """Each new batch shape costs a cache (and on a GPU a recorded graph): a call reuses a kept
    shape it fits in if that is at most one bucket larger, else adds a bucketed shape, and at
    most SLOTS_KEPT stay (the least recently used goes)."""
    from rollstream.services.generator.backend_hf import HFBackend
    from rollstream.services.generator.static_decode import SLOTS_KEPT, StaticDecoder

    be = HFBackend(str(models["v0"]), seed=0, device="cpu")
    be.static = StaticDecoder(be.model, graphs=False, pad_id=be.pad_id, bucketed=True)  # a GPU's

    def shapes_after(n: int, max_tokens: int = 8) -> list[tuple[int, int]]:
        req = GenRequest("x", encode(be, PROMPTS[0]), n, max_tokens=max_tokens, seed=1)
        [samples] = be.generate([req])
        assert len(samples) == n
        return [(s.rows, s.length) for s in be.static._slots]

    assert shapes_after(20) == [(32, 32)]  # 20 rows -> 32; width 16 + 8 new tokens -> 32
    assert shapes_after(12) == [(32, 32)]  # 16 rows' bucket: 32 is one bucket up, reused
    assert shapes_after(5) == [(32, 32), (8, 32)]  # 32 rows would be 4x: a new shape
    assert shapes_after(40) == [(32, 32), (8, 32), (64, 32)]
    assert shapes_after(3, max_tokens=30) == [(8, 32), (64, 32), (8, 48)]
    assert len(be.static._slots) == SLOTS_KEPT == 3


def test_the_static_path_takes_only_models_it_runs_right(models: dict[str, Path]) -> None:
    """The loop needs a static cache of plain layers and SDPA attention (its decoding mask is
    4D booleans): eager attention, whose mask is added as numbers, and a sliding-window
    model, whose cache layers are shorter than the mask, go through generate instead."""
    import transformers

    from rollstream.services.generator.static_decode import supports_static

    llama = hf_model(models["v0"])
    assert llama.config._attn_implementation == "sdpa"
    assert supports_static(llama)
    llama.set_attn_implementation("eager")
    assert not supports_static(llama)
    qwen = transformers.Qwen2ForCausalLM(
        transformers.Qwen2Config(
            vocab_size=64,
            **SMALL_SIZES,
            use_sliding_window=True,
            sliding_window=8,
            max_window_layers=0,
            attn_implementation="sdpa",
        )
    )
    assert not supports_static(qwen)
    qwen.config.use_sliding_window = False
    qwen.config.layer_types = ["full_attention"] * 2
    assert supports_static(qwen)
