"""Where a trained sample's time went between its generation and its training step: the hops
add up to the total, so a user reading `rollstream report` sees which hop to cut."""

from __future__ import annotations

import json
from pathlib import Path

import msgspec

from rollstream.schemas import synthetic
from rollstream.services.learner.metrics import HOPS, pipeline_latency
from rollstream.services.up.report import write_report


def _batch_with_clock() -> msgspec.Struct:
    """One group of two samples: generation 100.0-100.5, scored at 100.6 and 100.7, group out
    at 101.0, batch out at 102.0."""
    samples = []
    for i, scored_at in enumerate((100.6, 100.7)):
        s = synthetic.scored("g", i, [1, 2], [3, 4], group_size=2)
        r = msgspec.structs.replace(s.rollout, produced_at=100.5, generate_s=0.5)
        samples.append(msgspec.structs.replace(s, rollout=r, produced_at=scored_at))
    g = msgspec.structs.replace(synthetic.group("g", samples, [0.5, -0.5]), produced_at=101.0)
    return msgspec.structs.replace(synthetic.train_batch([g]), produced_at=102.0)


def test_each_hop_of_a_trained_sample_is_timed_and_they_add_up_to_the_total() -> None:
    hops = pipeline_latency(_batch_with_clock(), started=102.25)
    assert set(hops) == set(HOPS)
    assert hops["generate"] == [0.5, 0.5]
    assert [round(x, 6) for x in hops["score"]] == [0.1, 0.2]
    assert [round(x, 6) for x in hops["group"]] == [0.4, 0.3]
    assert hops["replay"] == [1.0, 1.0]
    assert hops["deliver"] == [0.25, 0.25]
    assert hops["total"] == [2.25, 2.25]  # 100.0 (generation start) -> 102.25
    for i in range(2):
        parts = sum(hops[h][i] for h in HOPS if h != "total")
        assert abs(parts - hops["total"][i]) < 1e-9


def test_a_clock_that_runs_behind_counts_a_hop_as_zero_not_negative() -> None:
    hops = pipeline_latency(_batch_with_clock(), started=101.5)  # learner's clock 0.5 s behind
    assert hops["deliver"] == [0.0, 0.0]


def test_report_gives_the_mean_latency_of_each_hop(tmp_path: Path) -> None:
    name = "rollstream_learner_sample_latency_seconds"
    learner = {"rollstream_learner_step": 10.0}
    for hop, mean in (("total", 0.6), ("replay", 0.25)):
        learner[f"{name}_sum{{hop={hop}}}"] = mean * 40
        learner[f"{name}_count{{hop={hop}}}"] = 40.0
    # two generators' version delays, summed by `up` as it sums every stage's processes
    d = "rollstream_generator_version_delay_seconds"
    generator = {f"{d}_sum": 0.03 * 20 + 0.09 * 20, f"{d}_count": 40.0}
    record = {"t": 5.0, "learner": learner, "generator": generator}
    (tmp_path / "metrics.jsonl").write_text(json.dumps(record) + "\n")
    evals = {"t": 5.0, "version": 0, "step": 0, "accuracy": 0.37, "per_task": {}, "n": 300}
    (tmp_path / "eval.jsonl").write_text(json.dumps(evals) + "\n")
    summary = write_report(tmp_path)
    assert summary["latency_total_s"] == 0.6
    assert summary["latency_replay_s"] == 0.25
    assert summary["latency_generate_s"] is None  # not measured: said so, not 0
    assert summary["version_delay_s"] == 0.06
