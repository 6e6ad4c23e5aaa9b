"""The live view of `rollstream up` reads at a terminal's width: at 80 columns each stage's
notes stay on one line (as a table column they wrapped word by word); wide, they are a column."""

from __future__ import annotations

import io

from rich.console import Console

from rollstream.services.up.view import render, summarize_stage

SNAP = {
    "rollstream_generator_paused_seconds_total": 12.0,
    "rollstream_generator_idle_ratio": 0.3,
    "rollstream_generator_policy_version": 4.0,
    "rollstream_learner_step": 40.0,
    "rollstream_learner_loss": 0.12,
    "rollstream_learner_idle_ratio": 0.05,
    "rollstream_replay_buffer_groups": 3.0,
    "rollstream_replay_staleness_versions_sum": 4.0,
    "rollstream_replay_staleness_versions_count": 4.0,
}


def _view(width: int) -> tuple[list[str], dict[str, str]]:
    stages = {}
    for stage in ("feed", "generator", "scorer", "filter", "replay", "learner", "evaluator"):
        stages[stage] = {**summarize_stage(stage, SNAP, {"in": 10, "tokens": 1234}), "procs": "1/1"}
    console = Console(width=width, record=True, file=io.StringIO())
    console.print(render("run", stages, [(0.0, 0.37)], [0.1], 0.3, "3 of 10 min"))
    return console.export_text().splitlines(), {
        s: d["notes"] for s, d in stages.items() if d["notes"]
    }


def test_notes_stay_whole_at_80_columns() -> None:
    lines, notes = _view(80)
    assert set(notes) == {"generator", "replay", "learner"}
    for stage, text in notes.items():
        assert any(f"{stage}: {text}" in line for line in lines), (stage, text)


def test_notes_are_a_column_when_wide() -> None:
    lines, notes = _view(160)
    assert "notes" in lines[1]
    for stage, text in notes.items():
        assert any(line.strip("│ ").startswith(stage) and text in line for line in lines)


def test_expired_rollouts_are_counted_apart_from_dropped_ones_as_in_the_ledger() -> None:
    """The ledger says `dropped N + expired M`; the live figures keep the two apart too (one
    "drops" sum of both looked like a count that went down when the ledger printed)."""
    snap = {
        "rollstream_filter_samples_dropped_total{reason=all_correct}": 40.0,
        "rollstream_filter_samples_dropped_total{reason=all_wrong}": 24.0,
        "rollstream_replay_dropped_rollouts_total{reason=expired}": 16.0,
        "rollstream_replay_dropped_rollouts_total{reason=evicted}": 8.0,
    }
    filt, replay = summarize_stage("filter", snap, {}), summarize_stage("replay", snap, {})
    assert (filt["drops"], filt["expired"]) == (64.0, 0.0)
    assert (replay["drops"], replay["expired"]) == (8.0, 16.0)
    assert "dropped rollouts all_correct=40 all_wrong=24" in filt["notes"]


def test_replay_notes_say_which_counts_are_groups_and_which_rollouts() -> None:
    """The progress line's `expired` counts rollouts; replay's note counted groups beside it
    with the same word ("expired 4" under "expired 32")."""
    snap = {
        "rollstream_replay_buffer_groups": 3.0,
        "rollstream_replay_expired_groups_total{trained=no}": 4.0,
        "rollstream_replay_dropped_rollouts_total{reason=expired}": 32.0,
    }
    notes = summarize_stage("replay", snap, {})["notes"]
    assert "dropped rollouts expired=32" in notes and "buffer 3 groups, 4 expired" in notes


def test_the_progress_line_says_dropped_and_expired_apart() -> None:
    import time

    from rollstream.services.up.loop import Loop

    loop = Loop.__new__(Loop)  # only what the line reads
    loop.started, loop.accuracy, loop.per_task, loop.reward, loop.restarts = (
        time.time(), [(1.0, 0.5)], {}, [0.3], 0
    )  # fmt: skip
    snap = {
        "rollstream_filter_samples_dropped_total{reason=all_wrong}": 64.0,
        "rollstream_replay_dropped_rollouts_total{reason=expired}": 16.0,
    }
    stages = {s: summarize_stage(s, snap, {}) for s in ("filter", "replay")}
    assert " dropped 64 expired 16 " in loop.progress_line(stages, "target")
