"""What the generator integration tests share: the generator as a subprocess (`rollstream run
generator`) with a known metrics port, a tap on `rollouts.raw`, prompt and weight publishing,
and the module-scoped fixtures `kafka`, `models` and `tap` (a test module imports them: one
namespace, one pair of model versions and one tap serve all its tests). The tiny models and
the transformers references are in tests/tiny_llama.py."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from polling import wait_until
from prometheus_client.parser import text_string_to_metric_families
from tiny_llama import VLLM_SIZES, hf_greedy, hf_logprobs, hf_model, two_versions

from rollstream.schemas import PromptTask, Rollout, Sampling, WeightUpdate
from rollstream.services.runtime.broker import free_port, stop_process
from rollstream.services.runtime.bus import Consumer, Producer, Record
from rollstream.services.runtime.settings import KafkaSettings


def namespace(bootstrap: str) -> KafkaSettings:
    """A fresh namespace with every registry topic created."""
    from rollstream.services.runtime.admin import create_topics

    kafka = KafkaSettings(
        bootstrap=bootstrap, namespace="t" + uuid.uuid4().hex[:10], session_timeout_ms=6000
    )
    create_topics(kafka)
    return kafka


PROMPTS = ["12+34=", "sort 9317:", "hello world"]
EOS = 2


@pytest.fixture(scope="module", name="kafka")
def module_kafka(bootstrap: str) -> KafkaSettings:
    return namespace(bootstrap)


@pytest.fixture(scope="module", name="models")
def model_versions(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two tiny Llamas, "v0" and "v1", with peaked heads (greedy output is stable)."""
    return two_versions(tmp_path_factory.mktemp("gen-models"), VLLM_SIZES, head_scale=20.0)


@pytest.fixture(scope="module", name="tap")
def rollout_tap(kafka: KafkaSettings) -> Iterator[RolloutTap]:
    with RolloutTap(kafka) as t:
        yield t


def greedy_per_version(models: dict[str, Path]) -> dict[str, list[list[int]]]:
    """transformers' greedy completions (24 tokens at most) of PROMPTS under "v0" and "v1";
    asserts that they differ, else a test could not tell which version sampled."""
    from rollstream.services.models.tokenizer import build_tokenizer

    prompts = [build_tokenizer().encode(p) for p in PROMPTS]
    want = {v: [hf_greedy(hf_model(models[v]), p, 24, EOS) for p in prompts] for v in ("v0", "v1")}
    assert want["v0"] != want["v1"]
    return want


class GeneratorProcess:
    """`rollstream run generator` in a subprocess, its log in a file."""

    def __init__(
        self,
        kafka: KafkaSettings,
        model_dir: Path,
        backend: str,
        log_path: Path,
        *settings: str,
    ) -> None:
        self.port = free_port()
        self.log_path = log_path
        cmd = [
            sys.executable, "-m", "rollstream.services.cli", "run", "generator",
            "--model", str(model_dir),
            "--bootstrap", kafka.bootstrap,
            "--namespace", str(kafka.namespace),
            "--metrics-port", str(self.port),
            "--set", f"generator.backend={backend}",
            *(arg for s in settings for arg in ("--set", s)),
        ]  # fmt: skip
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=env)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout_s: float) -> None:
        """Until /metrics answers: the engine is built (the server starts after it)."""

        def ready() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"generator exited {self.proc.returncode}:\n{self.log()}")
            try:
                self.scrape()
            except OSError:
                return False
            return True

        wait_until(ready, timeout_s, "the generator's /metrics", every=0.5)

    def scrape(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as r:
            text = r.read().decode()
        out = {}
        for fam in text_string_to_metric_families(text):
            for s in fam.samples:
                out[(s.name, tuple(sorted(s.labels.items())))] = s.value
        return out

    def metric(self, name: str, **labels: str) -> float:
        """One sample of `rollstream_generator_<name>` (0 if not exported yet)."""
        key = (f"rollstream_generator_{name}", tuple(sorted(labels.items())))
        return self.scrape().get(key, 0.0)

    def stop(self, timeout_s: float = 60.0) -> int:
        """SIGTERM, then the exit status (SIGKILL after `timeout_s`)."""
        rc = stop_process(self.proc, signal.SIGTERM, timeout_s)
        self._log.close()
        return rc


class RolloutTap:
    """Every Rollout on `rollouts.raw`, read without a consumer group."""

    def __init__(self, kafka: KafkaSettings) -> None:
        self.consumer = Consumer(kafka, "test-tap", ["rollouts.raw"], group=None)
        self.records: list[Record[Rollout]] = []

    def read(self) -> list[Record[Rollout]]:
        self.records += self.consumer.poll(500, 0.2)
        return self.records

    def of(self, task_ids: set[str]) -> list[Record[Rollout]]:
        return [r for r in self.read() if r.value.task_id in task_ids]

    def wait_for(
        self, task_ids: set[str], count: int, timeout_s: float = 60.0
    ) -> list[Record[Rollout]]:
        """Exactly `count` rollouts of these tasks (waits up to `timeout_s`)."""
        wait_until(lambda: len(self.of(task_ids)) >= count, timeout_s, f"{count} rollouts")
        time.sleep(0.3)
        recs = self.of(task_ids)
        assert len(recs) == count, f"{len(recs)} rollouts, expected {count}"
        return recs

    def close(self) -> None:
        self.consumer.close()

    def __enter__(self) -> RolloutTap:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def send_prompts(
    kafka: KafkaSettings, prompts: list[str], n: int, tag: str, sampling: Sampling | None = None
) -> set[str]:
    """One PromptTask per prompt (task ids `<tag>-<i>`); returns the task ids."""
    producer = Producer(kafka, "test-feed")
    ids = set()
    for i, prompt in enumerate(prompts):
        task = PromptTask(
            task_id=f"{tag}-{i}",
            task="echo",
            prompt=prompt,
            n=n,
            answer=f"answer-{i}",
            sampling=sampling,
            produced_at=time.time(),
        )
        producer.send("prompts", task, key=task.task_id)
        ids.add(task.task_id)
    producer.close()
    return ids


def publish_weights(
    store: Path, model_dir: Path, version: int, policy: str = "policy"
) -> WeightUpdate:
    """Write `model_dir`'s weights into the store as `version`; the WeightUpdate to send."""
    from transformers import AutoModelForCausalLM

    from rollstream.services.models.weights import publish_version

    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype="float32")
    return publish_version(
        model, store=str(store), policy=policy, version=version, step=version, model_dir=model_dir
    )


def send_weights(kafka: KafkaSettings, update: WeightUpdate) -> None:
    producer = Producer(kafka, "test-learner")
    producer.send("weights", update, key=update.policy)
    producer.close()


def check_groups(
    recs: list[Record[Rollout]], prompts: list[str], want: Sampling, hf: Any
) -> tuple[list[list[Rollout]], float]:
    """Asserts what the rollouts of `send_prompts(kafka, prompts, want.n, ...)` must be at
    policy version 0: keyed by group id, one group a prompt of `want.n` samples, each the
    prompt's tokens and a completion of at most `want.max_tokens` tokens that ends in EOS
    (finish reason "stop") or at the limit ("length"), with its decoded text, logprobs <= 0,
    and sampling params `want`. Returns the groups and the largest difference between a
    logprob and transformers' (`hf`) for the distribution sampled from."""
    from rollstream.services.models.tokenizer import EOS_ID, build_tokenizer

    tok = build_tokenizer()
    groups: dict[str, list[Rollout]] = {}
    for rec in recs:
        assert rec.key == rec.value.group_id.encode()  # all samples of a prompt: one partition
        groups.setdefault(rec.value.group_id, []).append(rec.value)
    assert len(groups) == len(prompts)
    assert len({rec.value.rollout_id for rec in recs}) == len(prompts) * want.n
    worst = 0.0
    for group in groups.values():
        assert sorted(r.sample_index for r in group) == list(range(want.n))
        for r in group:
            assert r.group_size == want.n
            assert r.prompt_tokens().tolist() == tok.encode(r.prompt)
            completion = r.completion_tokens().tolist()
            logprobs = r.token_logprobs().tolist()
            assert 0 < len(completion) == len(logprobs) <= want.max_tokens
            assert all(lp <= 0.0 for lp in logprobs)
            assert r.completion == tok.decode(completion, skip_special_tokens=True)
            ended = completion[-1] == EOS_ID
            assert r.finish_reason == ("stop" if ended else "length")
            assert ended or len(completion) == want.max_tokens
            assert r.policy_version == 0
            assert r.sampling == want
            t, k = want.temperature, want.top_k
            ref = hf_logprobs(hf, r.prompt_tokens().tolist(), completion, t, k)
            worst = max(worst, *(abs(a - b) for a, b in zip(logprobs, ref, strict=True)))
    return list(groups.values()), worst
