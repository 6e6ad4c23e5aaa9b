"""End-to-end fixtures: the real built-in base model, built once per session into a private
ROLLSTREAM_HOME, and a helper that runs `rollstream up` as a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def rollstream_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ROLLSTREAM_HOME holding the built-in base model (built once; reused from
    ROLLSTREAM_TEST_HOME if set, so repeated local runs skip the build)."""
    home = Path(os.environ.get("ROLLSTREAM_TEST_HOME") or tmp_path_factory.mktemp("home"))
    env = {**os.environ, "ROLLSTREAM_HOME": str(home)}
    subprocess.run(
        [sys.executable, "-m", "rollstream.services.cli", "init-model"],
        env=env,
        check=True,
        timeout=900,
    )
    return home


def _up(home: Path, cwd: Path, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    env = {**os.environ, "ROLLSTREAM_HOME": str(home), "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "rollstream.services.cli", "up", "--no-view", *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def up():  # type: ignore[no-untyped-def]
    """`up(home, cwd, *args)` runs `rollstream up --no-view ARGS` to completion."""
    return _up
