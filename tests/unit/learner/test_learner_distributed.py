"""Two learner processes (torchrun, gloo on CPU) give the same weights as one process: DDP and
FSDP2, through rank 0's command protocol (batches broadcast as wire bytes, checkpoint, resume,
publish), and the other rank stops when rank 0 is signalled.

The workers are this file run as a script under torchrun (see `worker` at the bottom); the
test compares what rank 0 wrote with a single-process Trainer on the same batches.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import msgspec
import pytest

HERE = Path(__file__).resolve()


def _builders():
    """conftest's batch and model builders, also when this file runs as a torchrun worker."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("learner_builders", HERE.parent / "conftest.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.batch, mod.tiny_model


batch, tiny_model = _builders()


CONFIGS = {
    # token-mean loss, several micro-batches per rank and padding micro-batches, clipping
    "ddp": {"objective": "dapo", "token_budget": 12, "max_grad_norm": 0.5},
    # two optimizer steps per batch, decoupled PPO (pi_prox pass), a sharded KL reference
    "fsdp": {
        "objective": "grpo",
        "token_budget": 12,
        "mini_steps": 2,
        "offpolicy": {"mode": "decoupled", "cap": 3.0},
        "objective_params": {"kl_coef": 0.05},
    },
}


def batches(n: int):
    """Up to 3 TrainBatches with uneven lengths, so that with a budget of 12 tokens the ranks
    differ in micro-batches: in batch 1 (lengths 12, 4, 5, 3) rank 0 has one micro-batch and
    rank 1 two (rank 0 runs a padding one); in batch 2 (14, 13, 3, 3, 3, 3) with two
    mini-steps the second step has one row, so rank 1 runs only a padding micro-batch."""
    long = list(range(3, 15))  # 12 completion tokens
    specs = [
        [
            ("a", [([1, 2], long[:10], [-2.0] * 10), ([1, 2], [7, 8])], [1.0, -1.0], 1.0),
            ("b", [([1, 4, 5], [9, 9], [-2.5, -3.5]), ([1], [10, 11])], [0.5, -0.5], 0.7),
        ],
        [
            ("a", [([1, 2], long), ([1, 2], long[1:])], [1.5, -1.5], 1.0),
            ("b", [([1], [5, 6]), ([1, 4], [9])], [1.0, -1.0], 0.5),
            ("c", [([1], [3, 4]), ([1, 2], [5], [-4.0])], [0.5, -0.5], 1.0),
        ],
        [
            ("a", [([1, 2], [6, 5, 6, 7, 8]), ([1, 2], [7, 11])], [1.0, -1.0], 1.0),
            (
                "b",
                [([1, 4, 5], [9, 9, 2], [-2.5, -3.5, -3.0]), ([1], [10, 11, 12, 13])],
                [0.5, -0.5],
                0.7,
            ),
            ("c", [([1, 6], [14, 15, 16, 17, 18, 19]), ([1, 6], [3])], [2.0, -2.0], 1.0),
        ],
    ]
    out = []
    for k, groups in enumerate(specs[:n], start=1):
        b = batch([(f"g{k}{gid}", *rest) for gid, *rest in groups])
        out.append(msgspec.structs.replace(b, batch_id=f"b{k}", seq=k, learner_id="learner"))
    return out


def test_plan_pads_the_rank_with_fewer_micro_batches() -> None:
    from rollstream.services.learner.batching import Planned, plan, shard_rows

    # longest first, each to the rank with fewer tokens: 12 -> 0; 5, 4, 3 -> 1 (12 tokens)
    assert shard_rows([12, 4, 5, 3], 2) == [[0], [2, 1, 3]]
    # one process: one step of every row; budget 12: [12], [5, 4] (2 x 5), [3]
    assert plan([12, 4, 5, 3], 12) == [
        ([0, 2, 1, 3], [Planned([0]), Planned([2, 1]), Planned([3])])
    ]
    # two ranks: rank 1 splits 5, 4, 3 into [5, 4], [3]; rank 0 pads with the shortest row
    assert plan([12, 4, 5, 3], 12, rank=0, world=2) == [
        ([0, 2, 1, 3], [Planned([0]), Planned([3], pad=True)])
    ]
    assert plan([12, 4, 5, 3], 12, rank=1, world=2) == [
        ([0, 2, 1, 3], [Planned([2, 1]), Planned([3])])
    ]
    # two mini-steps of one process's micro-batches [14], [13], [3, 3, 3, 3]: steps 0 + 2, 1
    lengths = [14, 13, 3, 3, 3, 3]
    assert plan(lengths, 12, 2, rank=1, world=2) == [
        ([0, 2, 3, 4, 5], [Planned([2, 3, 4, 5])]),
        ([1], [Planned([1], pad=True)]),  # one row in the step: rank 0 trains it
    ]
    assert plan(lengths, 12, 2, rank=0, world=2)[1] == ([1], [Planned([1])])
    # a row without completion tokens counts in its step (denominators) but is not run
    assert plan([5, 3, 4], None, empty={1}) == [([0, 2, 1], [Planned([0, 2])])]
    # two ranks, one row to train: rank 0 trains it, rank 1 pads with it
    assert plan([5, 3, 4], None, rank=0, world=2, empty={0, 2}) == [([0, 2, 1], [Planned([1])])]
    assert plan([5, 3, 4], None, rank=1, world=2, empty={0, 2}) == [
        ([0, 2, 1], [Planned([1], pad=True)])
    ]


def test_a_row_without_completion_tokens_trains_like_the_rest_without_it(make_model) -> None:
    import torch

    from rollstream.services.learner.objectives import make_objective
    from rollstream.services.learner.offpolicy import OffPolicy
    from rollstream.services.learner.step import StepConfig, train_on_batch

    def grads(seqs, advs):
        model = make_model()
        opt = torch.optim.SGD(model.parameters(), lr=0.0)
        cfg = StepConfig(token_budget=8, max_grad_norm=None)
        b = batch([("g", seqs, advs, 1.0)])
        _, prio = train_on_batch(model, opt, make_objective("grpo"), OffPolicy(), b, cfg)
        return [p.grad for p in model.parameters()], prio

    # seq-mean: the empty row still counts as a sequence, so the loss is halved, not kept
    with_empty, prio = grads([([1, 2], [5, 6]), ([1, 2, 3], [])], [1.0, -1.0])
    alone, _ = grads([([1, 2], [5, 6])], [1.0])
    assert prio == [1.0, 0.0]
    for a, b in zip(with_empty, alone, strict=True):
        assert torch.allclose(a, b / 2, atol=1e-12)


def make_cfg(name: str):
    from rollstream.services.learner.config import LearnerConfig

    return LearnerConfig(parallel=name, lr=5e-3, **CONFIGS[name])


def torchrun(out: Path, *args: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [*cmd, str(HERE), "--out", str(out), *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def finish(proc: subprocess.Popen, timeout: float = 300) -> str:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out[-4000:]
    return out


def single_process(name: str, data) -> dict:
    import torch

    from rollstream.services.learner.trainer import Trainer

    torch.manual_seed(0)
    t = Trainer(make_cfg(name), tiny_model())
    results = [t.train(b) for b in data]
    return {
        "state": {k: v.detach().clone() for k, v in t.model.state_dict().items()},
        "results": results,
    }


@pytest.mark.slow
@pytest.mark.parametrize("name", ["ddp", "fsdp"])
def test_two_ranks_train_the_weights_one_process_does(name: str, tmp_path: Path) -> None:
    import torch
    from safetensors.torch import load_file

    data = batches(3)
    one = single_process(name, data)
    # two batches, checkpoint, stop; a second run resumes and trains the third, then publishes
    finish(torchrun(tmp_path, "--parallel", name, "--train", "0", "2"))
    finish(torchrun(tmp_path, "--parallel", name, "--train", "2", "3", "--resume"))
    got = load_file(str(tmp_path / "published.safetensors"))
    assert set(got) == set(one["state"])
    for key, want in one["state"].items():
        assert torch.allclose(got[key], want, atol=1e-5, rtol=0), key
    moved = sum(float((got[k] - tiny_model().state_dict()[k]).abs().max()) for k in got)
    assert moved > 1e-3  # the weights did train
    # rank 0 reports the whole batch: metrics and priorities equal one process's
    report = json.loads((tmp_path / "report.json").read_text())
    last = one["results"][-1]
    assert report["step"] == 3 and report["resumed_step"] == 2
    assert report["priorities"] == pytest.approx(last.priorities, abs=1e-6)
    for key in ("loss", "tokens", "grad_norm", "entropy"):
        assert report["metrics"][key] == pytest.approx(last.metrics[key], abs=1e-6), key


@pytest.mark.slow
def test_sigterm_to_rank_0_stops_every_rank_after_a_checkpoint(tmp_path: Path) -> None:
    proc = torchrun(tmp_path, "--parallel", "ddp", "--loop")
    pid_file = tmp_path / "rank0.pid"
    deadline = time.monotonic() + 120
    while not pid_file.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert pid_file.exists(), proc.communicate()[0][-4000:]
    os.kill(int(pid_file.read_text()), signal.SIGTERM)  # rank 0 only, as `kill <pid>` would
    out = finish(proc, timeout=120)
    assert "rank 1 stopped" in out
    assert (tmp_path / "ckpt" / "LATEST").exists()


# ---- the workers (run by torchrun) -----------------------------------------------------------
def worker(argv: list[str]) -> int:
    import torch
    from safetensors.torch import save_file

    from rollstream.services.learner import distributed
    from rollstream.services.learner.trainer import Trainer

    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--parallel", default="ddp")
    ap.add_argument("--train", type=int, nargs=2, default=(0, 0))
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--loop", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    par = distributed.setup(args.parallel, "cpu")
    assert par is not None and par.world == 2
    torch.manual_seed(0)
    trainer = Trainer(make_cfg(args.parallel), tiny_model(), parallel=par)
    ckpt = args.out / "ckpt"
    try:
        if not par.is_main:
            distributed.ignore_stop_signals()
            trainer.serve()
            print(f"rank {par.rank} stopped", flush=True)
            return 0
        if args.loop:
            return main_loop(trainer, args.out)
        resumed = trainer.step
        if args.resume:
            assert trainer.resume(ckpt)
            resumed = trainer.step
        results = [trainer.train(b) for b in batches(3)[slice(*args.train)]]
        if args.resume:  # publish (FSDP: gather), then checkpoint
            published = {k: v.contiguous() for k, v in trainer.publishable().state_dict().items()}
            save_file(published, args.out / "published.safetensors")
            last = results[-1]
            report = {
                "step": trainer.step,
                "resumed_step": resumed,
                "metrics": last.metrics,
                "priorities": last.priorities,
            }
            (args.out / "report.json").write_text(json.dumps(report))
        trainer.save(ckpt)
        trainer.close()
        return 0
    finally:
        par.close()


def main_loop(trainer, out: Path) -> int:
    """Rank 0 as the service runs it: idle ticks until SIGTERM, a checkpoint, then STOP."""
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
    trainer.train(batches(1)[0])
    (out / "rank0.pid").write_text(str(os.getpid()))
    while not stopping:
        trainer.idle()
        time.sleep(0.05)
    trainer.save(out / "ckpt")
    trainer.close()
    return 0


if __name__ == "__main__":
    code = worker(sys.argv[1:])
    # Skip the interpreter's teardown: with the process group already destroyed, torch's C++
    # static destructors sometimes abort ("terminate called without an active exception")
    # on a loaded machine, after every file was written. The exit code is what the test reads.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
