"""`benchmarks/time_to_target.py` as CI runs it: a short smoke (sync and async, one seed, 45 s
each) that must print the table and write the JSON and PNG. The figures are not checked here
(speed belongs to the benchmark); that every row has evaluations and counts is."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.slow


def test_time_to_target_smoke_prints_the_table_and_writes_json_and_png(bench) -> None:  # type: ignore[no-untyped-def]
    args = ["--rows", "sync", "async", "--seeds", "0", "--budget-s", "45", "--tag", "smoke"]
    p, out = bench("time_to_target.py", *args)
    assert "| row | +10 pts | +20 pts | +30 pts |" in p.stdout
    assert "| sync |" in p.stdout and "| async |" in p.stdout
    data = json.loads((out / "time_to_target-smoke.json").read_text())
    assert [e["row"] for e in data["summary"]] == ["sync", "async"]
    for run in data["runs"]:
        assert run["evals"], run["name"]  # at least the starting evaluation
        assert run["evals"][0]["step"] == 0
        assert run["counts"]["generated"] > 0, run  # the run sampled and counted rollouts
    # where the CPU went while training: sync trains inside 45 s, so it has a window, all in
    # the one `up --mode sync` process, about one core busy
    sync = data["summary"][0]
    assert sync["cpu_ms_per_step"][0] > 0, sync
    assert list(sync["cpu_ms_per_step_by_stage"]) == ["up (sync)"], sync
    assert 0.3 < sync["cores_busy"][0] <= 2.2, sync
    assert "CPU ms a learner step, by process" in p.stdout
    assert (out / "time_to_target-smoke.png").stat().st_size > 10_000
