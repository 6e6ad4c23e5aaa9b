"""`benchmarks/startup.py` as CI runs it: one short `rollstream up`, whose start-up timeline
(the first message of each topic) must be printed and written, in pipeline order. The figures
are not checked (speed belongs to the benchmark)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def test_startup_bench_reports_when_each_stage_first_wrote(
    rollstream_home: Path, tmp_path: Path
) -> None:
    env = {**os.environ, "ROLLSTREAM_HOME": str(rollstream_home), "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, str(ROOT / "benchmarks" / "startup.py"), "--runs", "1"]
    cmd += ["--minutes", "0.4", "--tag", "smoke"]
    cmd += ["--runs-dir", str(tmp_path / "runs"), "--out-dir", str(tmp_path / "out")]
    p = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert "first message on each topic" in p.stdout
    first = json.loads((tmp_path / "out" / "startup-smoke.json").read_text())["median"]
    # a sample is generated before it is scored, kept, batched and trained into a version
    order = ["prompts", "rollouts.raw", "rollouts.scored", "groups.kept", "batches.train"]
    times = [first[t] for t in order]
    assert all(t is not None and t > 0 for t in times), first
    assert times == sorted(times), first
    assert first["weights"] is not None and first["weights"] >= first["batches.train"], first
