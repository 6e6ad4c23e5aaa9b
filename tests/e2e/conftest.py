"""End-to-end fixtures: a helper that runs `rollstream up` as a subprocess (the built-in base
model, `rollstream_home`, is in tests/conftest.py: the fault suite uses it too)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


def _up(home: Path, cwd: Path, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    env = {**os.environ, "ROLLSTREAM_HOME": str(home), "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "rollstream.services.cli", "up", "--no-view", *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def up():  # type: ignore[no-untyped-def]
    """`up(home, cwd, *args)` runs `rollstream up --no-view ARGS` to completion."""
    return _up
