"""`rollstream run learner --nproc 2` on the real broker (torchrun, gloo on CPU): rank 0 reads
the batches, both ranks train, the published versions are the single-process weights, and
SIGTERM to rank 0 stops both ranks cleanly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import msgspec
import pytest

from rollstream.schemas import TrainBatch, WeightUpdate
from rollstream.schemas import synthetic as syn
from rollstream.services.runtime.bus import Consumer, Producer
from rollstream.services.runtime.settings import KafkaSettings

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

SETTINGS = ["learner.device=cpu", "learner.token_budget=24", "learner.lr=0.01", "seed=0"]


def train_batch(seq: int) -> TrainBatch:
    groups = []
    for g in range(2):
        gid = f"b{seq}g{g}"
        samples = [
            syn.scored(
                gid,
                i,
                [1, 5 + g, 6],
                [10 + seq + i, 11 + g, 12, 13 + i][: 2 + i + g],
                group_size=2,
                logprobs=-3.0,
                reward=float(i),
            )
            for i in range(2)
        ]
        groups.append(syn.group(gid, samples, [-1.0, 1.0]))
    return syn.train_batch(groups, seq=seq, batch_id=f"learner-{seq}")


def rank0_pid(launcher: int, timeout: float = 60) -> int:
    """The worker with RANK=0 among the children of the torchrun process `launcher`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for task in Path(f"/proc/{launcher}/task").glob("*"):
            for pid in (task / "children").read_text().split():
                env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
                if b"RANK=0" in env:
                    return int(pid)
        time.sleep(0.2)
    raise AssertionError("no rank 0 worker")


def weights(kafka: KafkaSettings) -> list[WeightUpdate]:
    c = Consumer(kafka, "check", ["weights"], group=None)
    try:
        return [r.value for _ in range(4) for r in c.poll(100, 0.5)]
    finally:
        c.close()


def test_two_processes_under_torchrun_publish_the_single_process_weights(
    kafka: KafkaSettings, tiny_model_dir: str, tmp_path: Path
) -> None:
    import torch
    from safetensors.torch import load_file

    from rollstream.services.learner.config import LearnerConfig
    from rollstream.services.learner.trainer import Trainer
    from rollstream.services.models.load import load_model

    batches = [train_batch(s) for s in (1, 2, 3)]
    p = Producer(kafka, "test")
    for b in batches:
        p.send("batches.train", b, "learner")
    p.flush()
    sets = [a for s in SETTINGS for a in ("--set", s)]
    cmd = [sys.executable, "-m", "rollstream.services.cli", "run", "learner", "--nproc", "2"]
    args = ["--model", tiny_model_dir, "--bootstrap", kafka.bootstrap]
    args += ["--namespace", kafka.namespace, "--run-dir", str(tmp_path), "--metrics-port", "-1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [*cmd, *args, *sets], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        rank0 = rank0_pid(proc.pid)
        deadline = time.monotonic() + 180
        seen: list[WeightUpdate] = []
        while len(seen) < 3 and time.monotonic() < deadline and proc.poll() is None:
            seen = weights(kafka)
        assert [w.version for w in seen] == [1, 2, 3], proc.poll()
        os.kill(rank0, signal.SIGTERM)
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out[-4000:]
    assert "rank 1 of 2 (ddp)" in out

    one = Trainer(LearnerConfig(device="cpu", token_budget=24, lr=0.01), load_model(tiny_model_dir))
    for b in batches:
        one.train(msgspec.structs.replace(b))
    got = load_file(str(Path(seen[-1].uri) / seen[-1].weights_file))
    for key, want in one.model.state_dict().items():
        assert torch.allclose(got[key], want, atol=1e-5, rtol=0), key
