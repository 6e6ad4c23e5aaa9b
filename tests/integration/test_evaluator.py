"""The evaluator on the real broker: version 0 at start, then each new weight version loaded
from the weight store, its held-out greedy accuracy published on `eval.results`; a version
whose file fails its checksum is refused."""

from __future__ import annotations

import hashlib
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

import pytest

from rollstream.schemas import EvalResult, WeightUpdate
from rollstream.services.evaluator.config import EvaluatorConfig
from rollstream.services.evaluator.service import Evaluator
from rollstream.services.runtime.bus import Consumer, Producer
from rollstream.services.runtime.metrics import StageMetrics
from rollstream.services.runtime.settings import KafkaSettings
from rollstream.services.tasks import Item, Task, register

pytestmark = pytest.mark.kafka

ANSWER = "xxxx"  # what the hand-made v1 weights answer to every prompt (4 greedy tokens)


def _make(rng: random.Random, difficulty: int) -> tuple[str, str]:
    return f"echo {rng.randrange(10**6)}=", ANSWER


XS = register(Task(name="always_xs", make=_make, description="answer xxxx to anything"))


def always_x_weights(model_dir: str, out: Path) -> Path:
    """Weights under which the model's greedy completion is `x` forever: every token embeds to
    the same vector, no layer adds anything, so the last hidden state is one fixed vector c,
    and only the lm_head row of `x` points along c."""
    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM

    from rollstream.services.models.tokenizer import VOCAB

    model = AutoModelForCausalLM.from_pretrained(model_dir)
    state = {k: v.clone().contiguous() for k, v in model.state_dict().items()}
    for name, tensor in state.items():
        if name.endswith(("o_proj.weight", "down_proj.weight")):
            tensor.zero_()
    emb = state["model.embed_tokens.weight"]
    emb[:] = 1.0
    head = state["lm_head.weight"]
    head.zero_()
    head[VOCAB["x"]] = 10.0 * torch.ones_like(head[VOCAB["x"]]) / state["model.norm.weight"]
    out.mkdir(parents=True)
    save_file(state, str(out / "model.safetensors"))
    return out / "model.safetensors"


def update(version: int, path: Path, sha256: str | None = None, step: int = 0) -> WeightUpdate:
    data = path.read_bytes()
    return WeightUpdate(
        policy="policy",
        version=version,
        uri=str(path.parent),
        sha256=sha256 or hashlib.sha256(data).hexdigest(),
        size_bytes=len(data),
        step=step,
        produced_at=time.time(),
    )


def next_result(results: Consumer, timeout_s: float = 120.0) -> EvalResult:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        recs = results.poll(max_messages=1, timeout_s=0.2)
        if recs:
            assert recs[0].key == b"evalrun"
            return recs[0].value
    raise AssertionError("no EvalResult in time")


@contextmanager
def running_evaluator(
    kafka: KafkaSettings, model_dir: str, items: list[Item], **knobs: Any
) -> Iterator[StageMetrics]:
    """An Evaluator of run "evalrun" on `items` (greedy answers of len(ANSWER) tokens, no pause
    between versions unless `knobs` say otherwise), looping in a thread until the block ends;
    yields its metrics."""
    knobs = {"min_interval_s": 0, **knobs}
    cfg = EvaluatorConfig(max_new_tokens=len(ANSWER), batch_size=4, **knobs)
    metrics = StageMetrics("evaluator")
    ev = Evaluator(
        cfg,
        kafka,
        run="evalrun",
        policy="policy",
        model_dir=model_dir,
        items=items,
        metrics=metrics,
    )
    stop = threading.Event()
    thread = threading.Thread(target=ev.run, args=(stop.is_set,), daemon=True)
    thread.start()
    try:
        yield metrics
    finally:
        stop.set()
        thread.join(timeout=60)
        ev.close()


@pytest.fixture
def results(kafka: KafkaSettings) -> Iterator[Consumer]:
    c = Consumer(kafka, "test", ["eval.results"], group=None)
    yield c
    c.close()


def test_evaluator_scores_version_zero_then_each_new_version(
    kafka: KafkaSettings, results: Consumer, tiny_model_dir: str, tmp_path: Path
) -> None:
    items = XS.heldout(size=6)
    assert len(items) == 6
    with (
        running_evaluator(kafka, tiny_model_dir, items) as metrics,
        closing(Producer(kafka, "learner")) as producer,
    ):
        v0 = next_result(results)
        assert (v0.run, v0.policy_version, v0.n) == ("evalrun", 0, 6)
        assert v0.accuracy == 0.0  # random weights never answer "xxxx"

        good = always_x_weights(tiny_model_dir, tmp_path / "v1")
        bad = always_x_weights(tiny_model_dir, tmp_path / "v2")
        producer.send("weights", update(2, bad, sha256="0" * 64), "policy")  # refused
        producer.flush()
        deadline = time.monotonic() + 60
        while not metrics.registry.get_sample_value(
            "rollstream_evaluator_refused_versions_total", {"reason": "checksum"}
        ):
            assert time.monotonic() < deadline, "the bad version was not refused"
            time.sleep(0.1)
        producer.send("weights", update(3, good, step=42), "policy")
        producer.flush()
        v3 = next_result(results)
        assert (v3.policy_version, v3.step, v3.n) == (3, 42, 6)
        assert v3.accuracy == 1.0  # the loaded weights answer "xxxx" every time
        assert v3.per_task == {"always_xs": 1.0}
        assert metrics.registry.get_sample_value("rollstream_evaluator_policy_version") == 3
        assert metrics.registry.get_sample_value("rollstream_evaluator_heldout_accuracy") == 1.0


def test_rollstream_run_evaluator_publishes_version_zero_and_stops_on_sigterm(
    kafka: KafkaSettings, results: Consumer, tiny_model_dir: str
) -> None:
    cmd = [sys.executable, "-m", "rollstream.services.cli", "run", "evaluator"]
    cmd += ["--bootstrap", kafka.bootstrap, "--namespace", str(kafka.namespace)]
    cmd += ["--metrics-port", "-1", "--model", tiny_model_dir, "--set", "name=evalrun"]
    cmd += ["--set", "evaluator.tasks=[{task: add, difficulty: 1}]"]
    cmd += ["--set", "evaluator.items_per_task=3", "--set", "evaluator.max_new_tokens=2"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        v0 = next_result(results)
        assert (v0.run, v0.policy_version, v0.n, list(v0.per_task)) == ("evalrun", 0, 3, ["add"])
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0, out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_a_forged_far_future_version_is_refused_dead_lettered_and_blocks_nothing(
    kafka: KafkaSettings, results: Consumer, tiny_model_dir: str, tmp_path: Path
) -> None:
    """Issue 16: the evaluator followed the highest version *number*, so one forged v1000
    stopped every later evaluation. It follows the highest verified version, and the refused
    update is in `weights.dlq` once, with the reason."""
    with (
        running_evaluator(kafka, tiny_model_dir, XS.heldout(size=4)) as metrics,
        closing(Producer(kafka, "forger")) as producer,
        closing(Consumer(kafka, "test", ["weights.dlq"], group=None)) as dlq,
    ):
        assert next_result(results).policy_version == 0
        good = always_x_weights(tiny_model_dir, tmp_path / "v1")
        producer.send("weights", update(1000, good, sha256="0" * 64), "policy")  # forged
        producer.flush()
        time.sleep(2)  # the evaluator has looked at it
        for version in (3, 4):
            producer.send("weights", update(version, good, step=version), "policy")
            producer.flush()
            got = next_result(results)
            assert (got.policy_version, got.accuracy) == (version, 1.0)
        letters = [r.value for r in dlq.poll(100, 5.0)]
        assert len(letters) == 1
        (letter,) = letters
        assert letter.topic == "weights" and letter.consumer == "evaluator"
        assert "refused" in letter.error and "sha256" in letter.error
        refused = metrics.registry.get_sample_value(
            "rollstream_evaluator_refused_versions_total", {"reason": "checksum"}
        )
        assert refused == 1


@pytest.mark.parametrize(
    "final, max_s", [(True, 20.0), (False, 20.0), (True, 0.0)], ids=["on", "off", "no-time"]
)
def test_the_version_a_run_ends_with_is_evaluated_when_the_evaluator_stops(
    kafka: KafkaSettings,
    results: Consumer,
    tiny_model_dir: str,
    tmp_path: Path,
    final: bool,
    max_s: float,
) -> None:
    """`min_interval_s` skips versions, so the policy a run ended with often had no accuracy
    of its own. Stopping, the evaluator evaluates the newest version if it was not
    (`evaluate_final`, on by default), unless loading it plus an evaluation would take longer
    than `evaluate_final_max_s` (0 here: any time at all)."""
    good = always_x_weights(tiny_model_dir, tmp_path / "v5")
    with (
        running_evaluator(
            kafka,
            tiny_model_dir,
            XS.heldout(size=4),
            min_interval_s=3600,
            evaluate_final=final,
            evaluate_final_max_s=max_s,
        ),
        closing(Producer(kafka, "learner")) as producer,
    ):
        assert next_result(results).policy_version == 0
        producer.send("weights", update(5, good, step=9), "policy")
        producer.flush()
        assert results.poll(10, 3.0) == []  # not due: an hour between evaluations
    got = [r.value for r in results.poll(10, 5.0)]
    if final and max_s > 0:
        assert [(e.policy_version, e.step, e.accuracy) for e in got] == [(5, 9, 1.0)]
    else:
        assert got == []
