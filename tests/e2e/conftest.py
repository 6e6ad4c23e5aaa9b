"""End-to-end fixtures: a helper that runs `rollstream up` as a subprocess (the built-in base
model, `rollstream_home`, is in tests/conftest.py: the fault suite uses it too)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


def _env(home: Path) -> dict[str, str]:
    """The environment of a subprocess that uses the built-in model from `home`."""
    return {**os.environ, "ROLLSTREAM_HOME": str(home), "PYTHONUNBUFFERED": "1"}


def _up(home: Path, cwd: Path, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    env = _env(home)
    cmd = [sys.executable, "-m", "rollstream.services.cli", "up", "--no-view", *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def up():  # type: ignore[no-untyped-def]
    """`up(home, cwd, *args)` runs `rollstream up --no-view ARGS` to completion."""
    return _up


@pytest.fixture
def bench(rollstream_home: Path, tmp_path: Path):  # type: ignore[no-untyped-def]
    """`bench(script, *args, timeout=...)` runs `benchmarks/<script>` as CI runs it: the
    built-in model from `rollstream_home`, its runs under tmp/runs, its results under tmp/out
    (returned beside the finished process)."""
    root = Path(__file__).resolve().parents[2]

    def run(
        script: str, *args: str, timeout: float = 600
    ) -> tuple[subprocess.CompletedProcess, Path]:
        env = _env(rollstream_home)
        out = tmp_path / "out"
        cmd = [sys.executable, str(root / "benchmarks" / script), *args]
        cmd += ["--runs-dir", str(tmp_path / "runs"), "--out-dir", str(out)]
        p = subprocess.run(
            cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=timeout
        )
        assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
        return p, out

    return run
