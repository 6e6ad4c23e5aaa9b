"""`rollstream report` tells the learner's own step count, not the step of the last evaluated
version (which lags it), and plots staleness as the bound defines it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rollstream.services.up.report import write_report


def test_report_counts_learner_steps_from_the_learner(tmp_path: Path) -> None:
    hist = [
        {
            "t": 10.0 * i,
            "learner": {"rollstream_learner_step": float(s)},
            "generator": {"rollstream_generator_messages_out_total": 100.0 * i},
            "replay": {
                "rollstream_replay_staleness_versions_sum": 1.0 * s,
                "rollstream_replay_staleness_versions_count": 2.0 * s,
            },
        }
        for i, s in enumerate([0, 20, 41, 58])
    ]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in hist))
    evals = [
        {"t": 5.0, "version": 0, "step": 0, "accuracy": 0.37, "per_task": {}, "n": 300},
        {"t": 25.0, "version": 48, "step": 48, "accuracy": 0.41, "per_task": {}, "n": 300},
    ]
    (tmp_path / "eval.jsonl").write_text("".join(json.dumps(e) + "\n" for e in evals))
    summary = write_report(tmp_path)
    assert summary["learner_steps"] == 58
    assert summary["learner_step_at_last_eval"] == 48
    assert (tmp_path / "staleness.png").stat().st_size > 1000
    # the gauge is scraped now and then: the final evaluation and the ledger `up` printed at
    # the end may know a later step, and the report then says as much as `up` did
    evals.append({"t": 45.0, "version": 59, "step": 59, "accuracy": 0.5, "per_task": {}, "n": 9})
    (tmp_path / "eval.jsonl").write_text("".join(json.dumps(e) + "\n" for e in evals))
    assert write_report(tmp_path)["learner_steps"] == 59
    (tmp_path / "ledger.json").write_text(json.dumps({"ledger": {"learner_step": 60}}))
    assert write_report(tmp_path)["learner_steps"] == 60


def test_report_says_why_the_generator_was_idle() -> None:
    from rollstream.services.up.report import idle_shares

    gen = "rollstream_generator_phase_seconds_total"
    last = {
        "learner": {
            "rollstream_learner_step_phase_seconds_sum{phase=wait}": 30.0,
            "rollstream_learner_step_phase_seconds_sum{phase=compute}": 60.0,
            "rollstream_learner_step_phase_seconds_sum{phase=publish}": 10.0,
        },
        "generator": {
            f"{gen}{{phase=generate}}": 60.0,
            f"{gen}{{phase=paused}}": 20.0,
            f"{gen}{{phase=wait_prompts}}": 15.0,
            f"{gen}{{phase=publish}}": 5.0,
        },
    }
    assert idle_shares(last) == {
        "learner_idle": 0.3,
        "generator_idle": 0.4,
        "generator_paused": 0.2,
        "generator_starved": 0.15,
    }
    assert set(idle_shares({}).values()) == {None}  # a run with no metrics yet


def test_status_and_report_of_a_folder_that_is_no_run_say_so(tmp_path: Path, capsys) -> None:
    """A typo in the run folder is an error naming it, not some other broker's live ledger
    or "no Kafka answers" (status looked for a broker first)."""
    import argparse

    from rollstream.services.up import report, status

    (tmp_path / "empty").mkdir()
    for folder, what in (
        (tmp_path / "typo", "no such folder"),
        (tmp_path / "empty", "not a run folder"),
    ):
        args = argparse.Namespace(run=str(folder), bootstrap=None, namespace=None)
        assert status.main(args) == 2
        assert report.main(args) == 2
        err = capsys.readouterr().err
        assert err.count(f"error: {folder}: {what}") == 2, err


def snapshot(t: float, steps: float, waited: float, phases: dict[str, float], kept: float,
             dropped: float, feed_paused: float) -> dict:  # fmt: skip
    gen = "rollstream_generator_phase_seconds_total"
    return {
        "t": t,
        "learner": {
            "rollstream_learner_step": steps,
            "rollstream_learner_step_phase_seconds_sum{phase=wait}": waited,
            "rollstream_learner_step_phase_seconds_sum{phase=compute}": t - waited,
        },
        "generator": {f"{gen}{{phase={k}}}": v for k, v in phases.items()},
        "filter": {
            "rollstream_filter_groups_kept_total": kept,
            "rollstream_filter_groups_dropped_total{filter=zero_variance,reason=all_correct}": (
                dropped
            ),
        },
        "feed": {"rollstream_feed_paused_seconds_total": feed_paused},
    }


def test_report_says_where_the_time_went_window_by_window() -> None:
    """A run that slows as the filter keeps fewer groups: the whole-run shares average it
    away; each window shows it."""
    from rollstream.services.up.report import auto_window, phases

    def gen(generate: float, paused: float, no_prompts: float, publish: float) -> dict:
        return {"generate": generate, "paused": paused, "wait_prompts": no_prompts,
                "publish": publish}  # fmt: skip

    hist = [
        {"t": 0.0, "feed": {}},  # before the stages report: skipped
        snapshot(1.0, 0, 0.0, gen(0, 0, 0, 0), 0, 0, 0.0),
        snapshot(6.0, 20, 1.0, gen(3, 1, 0, 1), 50, 50, 4.0),  # within the first window
        snapshot(11.0, 60, 2.0, gen(6, 3, 0, 1), 100, 100, 9.0),
        snapshot(21.0, 80, 9.0, gen(10, 4, 4, 2), 120, 180, 14.0),
        snapshot(25.0, 84, 12.0, gen(12, 4, 6, 2), 120, 180, 16.0),  # a short last window
    ]
    rows = phases(hist, 10.0)
    assert [r["t"] for r in rows] == [11.0, 21.0]  # 4 s left over: less than half a window
    first, late = rows
    assert first["steps_per_s"] == 6.0 and late["steps_per_s"] == 2.0
    assert first["learner_waiting"] == 0.2 and late["learner_waiting"] == 0.7
    assert (first["generating"], first["paused"], first["publishing"]) == (0.6, 0.3, 0.1)
    assert (late["generating"], late["paused"], late["no_prompts"]) == (0.4, 0.1, 0.4)
    assert first["keep_rate"] == 0.5 and late["keep_rate"] == 0.2
    assert first["feed_paused"] == 0.9 and late["feed_paused"] == 0.5
    # a last window at least half as long gets its row; no group finished: no keep rate
    rows = phases(hist, 8.0)
    assert [r["t"] for r in rows] == [11.0, 21.0, 25.0]
    assert rows[-1]["keep_rate"] != rows[-1]["keep_rate"]  # NaN, printed as "-"
    assert phases([{"t": 1.0, "up (sync)": {}}], 10.0) == []  # a sync run: no stages
    assert auto_window(hist) == 10.0  # ~8 rows, at least 10 s each
    assert auto_window([{"t": 0.0}, {"t": 600.0}]) == 75.0


def test_where_the_time_went_counts_every_generator_and_skips_a_restart() -> None:
    from rollstream.services.up.report import phases

    two = {"generate": 14.0, "paused": 4.0, "wait_prompts": 2.0}  # two generators, 10 s each
    hist = [
        snapshot(0.0, 0, 0.0, {"generate": 0.0}, 0, 0, 0.0),
        snapshot(10.0, 30, 5.0, two, 30, 30, 0.0),
        snapshot(20.0, 5, 6.0, two, 40, 40, 0.0),  # the learner restarted: its step went back
        snapshot(30.0, 35, 11.0, {k: 2 * v for k, v in two.items()}, 70, 70, 0.0),
    ]
    rows = phases(hist, 10.0)
    assert [r["t"] for r in rows] == [10.0, 30.0]  # none for the window with the restart
    assert [r["generating"] for r in rows] == [0.7, 0.7]  # of both generators' time
    assert sum(rows[0][k] for k in ("generating", "paused", "no_prompts")) == pytest.approx(1.0)
