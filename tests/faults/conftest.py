"""Fault-suite fixtures: the built-in base model in a private ROLLSTREAM_HOME (reused from
ROLLSTREAM_TEST_HOME if set), as in tests/e2e."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def rollstream_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = Path(os.environ.get("ROLLSTREAM_TEST_HOME") or tmp_path_factory.mktemp("home"))
    env = {**os.environ, "ROLLSTREAM_HOME": str(home)}
    subprocess.run(
        [sys.executable, "-m", "rollstream.services.cli", "init-model"],
        env=env,
        check=True,
        timeout=900,
    )
    return home
