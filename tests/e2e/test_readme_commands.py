"""Every command in the README's ```bash blocks runs, in order, in a fresh folder, with short
budgets: `rollstream up` stops after 30 s (`--set target.minutes=0.5`) and shows no live view.
The install command is the one CI runs from a clean checkout (.ci/run), checked here."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.kafka]

ROOT = Path(__file__).resolve().parents[2]
BUDGET = " --no-view --set target.minutes=0.5 --set evaluator.min_interval_s=10"


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    cmds = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.splitlines():
            cmd = re.sub(r"\s+#\s.*$", "", line).strip()
            if cmd and not cmd.startswith("#"):
                cmds.append(cmd)
    return cmds


def test_only_commands_that_need_a_hub_a_model_dir_or_a_gpu_are_left_out() -> None:
    """```shell blocks are not run here; each of their commands must need something this
    machine cannot have (a model hub, a real model directory, a GPU) or be run by another
    test (named below)."""
    text = (ROOT / "README.md").read_text()
    needs = (
        "Qwen",
        "load_dataset",
        "huggingface-cli",
        "gpu_throughput",
        "weight_swap",
        "gpu_all",  # the GPU measurements, ~7 min on a GPU host
        "--size 0.5b",  # a 494M-parameter model directory (2 GB, for the GPU quickstart)
        "--model models/qwen2-0.5b",  # that directory (benchmarks/static_decode.py)
        "--set",
        "--device cuda",  # init-model --size small, built on a GPU
        "--cores-per-run 8",  # two runs of 8 cores side by side: a 16-core host
        # the init-model example: its warm-up, as written, is run by
        # tests/unit/tasks/test_tasks_example_package.py; the 4-minute RL run that follows it
        # has "--set" (its figures: benchmarks/RESULTS.md)
        "init-model --plugins examples --tasks my_tasks.sortdesc@5 --gate 0.45",
    )
    for block in re.findall(r"```shell\n(.*?)```", text, re.S):
        for line in block.splitlines():
            if line.strip():
                assert any(n in line for n in needs), line


def test_the_readme_has_the_commands_a_user_needs() -> None:
    cmds = readme_commands()
    assert cmds[:2] == ['pip install -e ".[cpu,dev]"', "rollstream up"]
    for needed in ("rollstream config show", "rollstream status", "rollstream report"):
        assert any(c.startswith(needed) for c in cmds), needed
    assert 'pip install -e ".[cpu,dev]"' in (ROOT / ".ci" / "run").read_text()


def test_every_readme_command_runs(rollstream_home: Path, tmp_path: Path) -> None:
    for name in ("scripts", "helm"):
        (tmp_path / name).symlink_to(ROOT / name)
    env = {**os.environ, "ROLLSTREAM_HOME": str(rollstream_home), "PYTHONUNBUFFERED": "1"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    ran = []
    for cmd in readme_commands():
        if cmd.startswith("pip install"):
            continue  # CI runs it from a clean checkout (checked above)
        if cmd.startswith("rollstream up"):
            cmd += BUDGET
        res = subprocess.run(
            ["bash", "-c", cmd],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        out = res.stdout + res.stderr
        assert res.returncode == 0, f"{cmd}\n{out[-3000:]}"
        if cmd.startswith("rollstream up"):
            assert "ledger BALANCED" in res.stdout and "FAILED" not in res.stdout, out[-3000:]
        if cmd.startswith("rollstream config show"):
            assert "# defaults (default.yaml)" in res.stdout and "# --set" in res.stdout
        if cmd.startswith("rollstream status"):
            assert "ledger BALANCED" in res.stdout, out
        if cmd.startswith("rollstream report"):  # of the latest run, a stream run
            assert "where the time went, every 10 s" in res.stdout, out
        ran.append(cmd)
    assert len(ran) >= 6, ran
    assert (tmp_path / "rendered.yaml").stat().st_size > 10_000
    runs = sorted(p.name for p in (tmp_path / "runs").iterdir())
    assert runs == ["tiny", "tiny-2"], runs
