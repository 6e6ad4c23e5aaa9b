"""`rollstream run generator` (transformers backend) on the real broker, as a user runs it: a
subprocess reading `prompts`, `control` and `weights` and writing `rollouts.raw`.

One generator process serves the whole module; the tests run in file order and each leaves
it in a state the next one expects (temperature 0.5 after the control test, weights v1 after
the swap test, the last test stops it).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import msgspec
import pytest
from generator_harness import (  # the fixtures kafka, models and tap too
    EOS,
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
from tiny_llama import hf_greedy, hf_logprobs, hf_model

from rollstream.schemas import PromptTask, Sampling, ScoredRollout, WeightUpdate, decode
from rollstream.services.models.weights import sha256_file
from rollstream.services.runtime.bus import Consumer, Producer
from rollstream.services.runtime.settings import KafkaSettings

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


@pytest.fixture(scope="module")
def generator(
    kafka: KafkaSettings, models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GeneratorProcess]:
    log = tmp_path_factory.mktemp("gen-log") / "generator.log"
    gen = GeneratorProcess(kafka, models["v0"], "transformers", log, "generator.threads=1")
    try:
        gen.wait_ready(180)
        yield gen
    finally:
        gen.stop()


def test_rollouts_are_groups_of_n_with_behaviour_logprobs(
    generator: GeneratorProcess, tap: RolloutTap, kafka: KafkaSettings, models
) -> None:
    ids = send_prompts(kafka, PROMPTS, n=4, tag="valid", sampling=Sampling(max_tokens=12))
    recs = tap.wait_for(ids, 12)
    # the generator's defaults, with the task's max_tokens override
    want = Sampling(n=4, temperature=1.0, top_p=1.0, top_k=-1, max_tokens=12)
    groups, worst = check_groups(recs, PROMPTS, want, hf_model(models["v0"]))
    for group in groups:
        assert len({r.task_id for r in group}) == 1
        for r in group:
            assert r.prompt == PROMPTS[int(r.task_id.split("-")[1])]
            assert r.answer == f"answer-{r.task_id.split('-')[1]}"
    assert worst < 1e-4


def test_a_prompt_the_backend_refuses_is_dead_lettered_and_the_batch_goes_on(
    generator: GeneratorProcess, tap: RolloutTap, kafka: KafkaSettings
) -> None:
    bad_regex = send_prompts(kafka, ["1+1="], n=2, tag="bad-regex", sampling=Sampling(regex="(("))
    schema = Sampling(json_schema='{"type": "integer"}')  # needs the vLLM backend
    bad_schema = send_prompts(kafka, ["2+2="], n=2, tag="bad-schema", sampling=schema)
    good = send_prompts(kafka, PROMPTS[:2], n=2, tag="good")
    assert len(tap.wait_for(good, 4)) == 4
    dlq = Consumer(kafka, "test-dlq", ["prompts.dlq"], group=None)
    letters: list = []

    def two_letters() -> bool:
        letters.extend(dlq.poll(10, 0.2))
        return len(letters) >= 2

    try:
        wait_until(two_letters, 30, "two dead letters on prompts.dlq")
    finally:
        dlq.close()
    by_task = {decode(d.value.value, PromptTask).task_id: d.value for d in letters}
    assert set(by_task) == bad_regex | bad_schema
    assert "bad regex" in by_task["bad-regex-0"].error
    assert "vLLM" in by_task["bad-schema-0"].error
    assert all(d.topic == "prompts" for d in by_task.values())
    assert tap.of(bad_regex | bad_schema) == []


def set_knobs(generator: GeneratorProcess, kafka: KafkaSettings, *knobs: str) -> None:
    """`rollstream control generator KNOBS`, once the generator says it applied them."""
    env = {**os.environ, "ROLLSTREAM_BOOTSTRAP": kafka.bootstrap,
           "ROLLSTREAM_NAMESPACE": str(kafka.namespace)}  # fmt: skip
    applied = generator.metric("control_updates_total", result="applied")
    out = subprocess.run(
        [sys.executable, "-m", "rollstream.services.cli", "control", "generator", *knobs],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    wait_until(
        lambda: generator.metric("control_updates_total", result="applied") > applied,
        30,
        "the control update to be applied",
    )


def test_live_control_changes_the_temperature_of_later_rollouts(
    generator: GeneratorProcess, tap: RolloutTap, kafka: KafkaSettings, models
) -> None:
    set_knobs(generator, kafka, "temperature=0.5")
    ids = send_prompts(kafka, PROMPTS[:2], n=4, tag="hot")
    recs = tap.wait_for(ids, 8)
    hf = hf_model(models["v0"])
    for rec in recs:
        r = rec.value
        assert r.sampling.temperature == 0.5
        # ...and it was sampled at 0.5: the logprobs are those of logits / 0.5
        want = hf_logprobs(hf, r.prompt_tokens().tolist(), r.completion_tokens().tolist(), 0.5)
        got = r.token_logprobs().tolist()
        assert max(abs(a - b) for a, b in zip(got, want, strict=True)) < 1e-4


def stored_file(update: WeightUpdate) -> Path:
    """The weights file of `update` in the store."""
    uri = update.uri
    path = urlparse(uri).path if uri.startswith("file://") else uri
    return Path(path) / update.weights_file


GREEDY = Sampling(temperature=0.0, max_tokens=24)


def flip_the_tail(update: WeightUpdate) -> WeightUpdate:
    """The stored file keeps its size, with other bytes at its end."""
    path = stored_file(update)
    data = bytearray(path.read_bytes())
    data[-100:] = bytes(b ^ 0xFF for b in data[-100:])
    path.write_bytes(bytes(data))
    return update


def truncate(update: WeightUpdate) -> WeightUpdate:
    """The stored file loses its second half."""
    path = stored_file(update)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return update


def forge(update: WeightUpdate) -> WeightUpdate:
    """A truncated file with a digest that matches it, and a version far ahead: loading fails
    inside safetensors; the generator must stay up, on v0, and not be paused by a version it
    never verified."""
    digest = sha256_file(stored_file(truncate(update)))
    files = {**update.files, "model.safetensors": digest}
    return msgspec.structs.replace(update, version=1000, sha256=digest, files=files)


CORRUPTIONS = [
    (flip_the_tail, "the flipped file"),
    (truncate, "the truncated file"),
    (forge, "the forged, truncated file"),
]


def test_corrupt_weight_files_are_refused_and_sampling_goes_on(
    generator: GeneratorProcess, tap: RolloutTap, kafka: KafkaSettings, models, tmp_path: Path
) -> None:
    for refused, (corrupt, what) in enumerate(CORRUPTIONS, start=1):
        store = tmp_path / f"store-{refused}"
        send_weights(kafka, corrupt(publish_weights(store, models["v1"], version=1)))
        wait_until(
            lambda n=refused: generator.metric("swaps_refused_total", reason="bad_file") >= n,
            60,
            f"{what} to be refused",
        )
    ids = send_prompts(kafka, PROMPTS, n=2, tag="after-bad", sampling=GREEDY)
    recs = tap.wait_for(ids, 6)
    hf = hf_model(models["v0"])
    for rec in recs:
        r = rec.value
        assert r.policy_version == 0
        want = hf_greedy(hf, r.prompt_tokens().tolist(), 24, EOS)
        assert r.completion_tokens().tolist() == want  # still the old weights, all of them
    assert generator.metric("policy_version") == 0


def test_new_weights_stamp_later_rollouts_and_greedy_matches_transformers(
    generator: GeneratorProcess, tap: RolloutTap, kafka: KafkaSettings, models, tmp_path: Path
) -> None:
    want_v1 = greedy_per_version(models)["v1"]
    before = time.time()
    send_weights(kafka, publish_weights(tmp_path / "store", models["v1"], version=1))
    wait_until(lambda: generator.metric("policy_version") == 1, 60, "weights v1 to be loaded")
    # how long the version took from publication to load here: one observation, inside the
    # window this test saw (pacing moves on it; report's version_delay_s)
    assert generator.metric("version_delay_seconds_count") == 1
    delay = generator.metric("version_delay_seconds_sum")
    assert 0.0 < delay <= time.time() - before
    ids = send_prompts(kafka, PROMPTS, n=2, tag="v1", sampling=GREEDY)
    recs = tap.wait_for(ids, 6)
    for rec in recs:
        r = rec.value
        assert r.policy_version == 1
        i = int(r.task_id.split("-")[1])
        assert r.completion_tokens().tolist() == want_v1[i]
        assert r.sampling.temperature == 0.0

    # an older version is refused; v1 stays
    send_weights(kafka, publish_weights(tmp_path / "store", models["v0"], version=0))
    wait_until(
        lambda: generator.metric("swaps_refused_total", reason="older") >= 1,
        60,
        "the older version to be refused",
    )
    ids = send_prompts(kafka, PROMPTS[:1], n=1, tag="still-v1", sampling=GREEDY)
    [rec] = tap.wait_for(ids, 1)
    assert rec.value.policy_version == 1
    assert rec.value.completion_tokens().tolist() == want_v1[0]


def score_as_scorer(scorer: Consumer, out: Producer, tap: RolloutTap, commit: bool) -> None:
    """Read every rollout the tap has seen and write one `rollouts.scored` message for each, as
    the scorer does; commit the offsets (as the scorer group would) when `commit`."""
    target = len(tap.read())

    def caught_up() -> bool:
        for rec in scorer.poll(500, 0.2):
            ro = rec.value
            scored = ScoredRollout(rollout=ro, reward=0.0, produced_at=time.time())
            out.send("rollouts.scored", scored, key=ro.group_id)
        return sum(scorer.positions().values()) >= target

    wait_until(caught_up, 60, "the stand-in scorer to catch up", every=0)
    out.flush()
    if commit:
        scorer.commit()


def test_sampling_pauses_while_rollouts_wait_unscored_and_resumes(
    generator: GeneratorProcess, tap: RolloutTap, kafka: KafkaSettings
) -> None:
    scorer = Consumer(kafka, "test-scorer", ["rollouts.raw"], group="rollstream-scorer")
    out = Producer(kafka, "test-scorer")
    try:
        score_as_scorer(scorer, out, tap, commit=True)  # nothing waits unscored
        set_knobs(generator, kafka, "max_raw_lag=8", "batch_prompts=1")
        ids = send_prompts(kafka, [f"{i}+{i}=" for i in range(60)], n=4, tag="lag")

        def paused() -> int | None:
            """The rollout count, once it stays put while paused time grows."""
            before = generator.metric("paused_seconds_total", reason="raw_lag")
            count = len(tap.of(ids))
            time.sleep(2.0)
            grew = generator.metric("paused_seconds_total", reason="raw_lag") > before
            return count if grew and len(tap.of(ids)) == count and count > 0 else None

        held = wait_until(paused, 90, "sampling to pause on the raw lag", every=0)
        # batches of one prompt (4 rollouts): it stops once more than 8 wait, i.e. after the
        # third batch (12), or after the second if a lag probe counted a batch twice
        assert held in (8, 12)
        assert generator.metric("rollouts_raw_lag_messages") > 8
        score_as_scorer(scorer, out, tap, commit=True)  # the scorer catches up: sampling resumes
        wait_until(lambda: len(tap.of(ids)) > held, 30, "sampling to resume")
    finally:
        out.close()
        scorer.close()


def test_rollouts_scored_but_not_yet_committed_do_not_pause_sampling(
    generator: GeneratorProcess, tap: RolloutTap, kafka: KafkaSettings
) -> None:
    """A scorer commits its offsets only now and then (faust: every ~2.8 s), so between two
    commits its committed lag reads high by what it scored since. Here the stand-in scorer
    scores every rollout at once (one `rollouts.scored` message each, as the scorer writes) and
    commits every 3 s. Before, the generator read the committed lag alone: past
    `max_raw_lag` (8) it stopped until the next commit, so at most ~12 rollouts came between
    two commits; now it goes on, because nothing waits unscored (still in steps: between two
    probes of the topics a few batches of 4 pass the bound of 8)."""
    scorer = Consumer(kafka, "test-scorer", ["rollouts.raw"], group="rollstream-scorer")
    out = Producer(kafka, "test-scorer")
    try:
        score_as_scorer(scorer, out, tap, commit=True)
        set_knobs(generator, kafka, "max_raw_lag=8", "batch_prompts=1")
        ids = send_prompts(kafka, [f"{i}+{i}=" for i in range(30)], n=4, tag="scored")
        at_commits = [0]
        deadline = time.monotonic() + 90
        while at_commits[-1] < 120 and time.monotonic() < deadline:
            committed_at = time.monotonic()
            while time.monotonic() - committed_at < 3.0:
                score_as_scorer(scorer, out, tap, commit=False)  # scored at once
                time.sleep(0.1)
            score_as_scorer(scorer, out, tap, commit=True)  # and committed every 3 s
            at_commits.append(len(tap.of(ids)))
        assert at_commits[-1] == 120, at_commits
        between = [b - a for a, b in zip(at_commits, at_commits[1:], strict=False)]
        assert max(between) > 24, between  # before: at most ~12; now 36-44 here
    finally:
        out.close()
        scorer.close()


def test_sigterm_stops_the_generator_cleanly(generator: GeneratorProcess) -> None:
    assert generator.stop() == 0
    log = generator.log()
    assert "Traceback" not in log
    assert "refused weights v1" in log  # the refusals were logged, with the reason
