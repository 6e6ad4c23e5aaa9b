"""`benchmarks/startup.py` as CI runs it: one short `rollstream up`, whose start-up timeline
(the first message of each topic) must be printed and written, in pipeline order. The figures
are not checked (speed belongs to the benchmark)."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.slow


def test_startup_bench_reports_when_each_stage_first_wrote(bench) -> None:  # type: ignore[no-untyped-def]
    p, out = bench("startup.py", "--runs", "1", "--minutes", "0.5", "--tag", "smoke", timeout=300)
    assert "first message on each topic" in p.stdout
    first = json.loads((out / "startup-smoke.json").read_text())["median"]
    # a sample is generated before it is scored, kept, batched and trained into a version
    order = ["prompts", "rollouts.raw", "rollouts.scored", "groups.kept", "batches.train"]
    times = [first[t] for t in order]
    assert all(t is not None and t > 0 for t in times), first
    assert times == sorted(times), first
    assert first["weights"] is not None and first["weights"] >= first["batches.train"], first
