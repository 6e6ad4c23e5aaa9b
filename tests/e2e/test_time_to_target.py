"""`benchmarks/time_to_target.py` as CI runs it: a short smoke (sync and async, one seed, 45 s
each) that must print the table and write the JSON and PNG. The figures are not checked here
(speed belongs to the benchmark); that every row has evaluations and counts is."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def test_time_to_target_smoke_prints_the_table_and_writes_json_and_png(
    rollstream_home: Path, tmp_path: Path
) -> None:
    env = {**os.environ, "ROLLSTREAM_HOME": str(rollstream_home), "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, str(ROOT / "benchmarks" / "time_to_target.py"), "--rows", "sync"]
    cmd += ["async", "--seeds", "0", "--budget-s", "45", "--tag", "smoke"]
    cmd += ["--runs-dir", str(tmp_path / "runs"), "--out-dir", str(tmp_path / "out")]
    p = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert "| row | +10 pts | +20 pts | +30 pts |" in p.stdout
    assert "| sync |" in p.stdout and "| async |" in p.stdout
    data = json.loads((tmp_path / "out" / "time_to_target-smoke.json").read_text())
    assert [e["row"] for e in data["summary"]] == ["sync", "async"]
    for run in data["runs"]:
        assert run["evals"], run["name"]  # at least the starting evaluation
        assert run["evals"][0]["step"] == 0
        assert run["counts"]["generated"] > 0, run  # the run sampled and counted rollouts
    assert (tmp_path / "out" / "time_to_target-smoke.png").stat().st_size > 10_000
