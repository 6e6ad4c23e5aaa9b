"""The built-in base model (`rollstream init-model`) loads in the vLLM backend, greedy output
there equals transformers' on the same weights, and it scores in the partly-competent band."""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = [pytest.mark.vllm, pytest.mark.slow]  # skipped without vllm (tests/conftest.py)


def test_init_model_output_runs_in_vllm_like_transformers(tmp_path: Path) -> None:
    from rollstream.services.generator.backend import GenRequest
    from rollstream.services.generator.backend_vllm import VLLMBackend
    from rollstream.services.models.build import init_model
    from rollstream.services.models.evaluate import greedy_completions
    from rollstream.services.models.load import load_model, load_tokenizer
    from rollstream.services.tasks import DEFAULT_MIXTURE, get_task, heldout_items

    out = tmp_path / "base"
    init_model(out, seed=0, log=lambda _: None)
    items = heldout_items(DEFAULT_MIXTURE, size=25)
    tok = load_tokenizer(out)
    want = greedy_completions(load_model(out), tok, [i.prompt for i in items], max_new_tokens=16)
    backend = VLLMBackend(str(out), seed=0, max_model_len=256)
    try:
        reqs = [
            GenRequest(
                request_id=str(k),
                prompt_ids=tok.encode(i.prompt),
                n=1,
                temperature=0.0,
                max_tokens=16,
            )
            for k, i in enumerate(items)
        ]
        got = [samples[0].text for samples in backend.generate(reqs)]
    finally:
        backend.close()
    same = sum(g == w for g, w in zip(got, want, strict=True))
    assert same >= len(items) - 2, list(zip(got, want, strict=True))  # fp32 ties may differ
    acc = sum(get_task(i.task).check(g, i.answer) for i, g in zip(items, got, strict=True))
    assert 0.10 <= acc / len(items) <= 0.60, acc / len(items)
