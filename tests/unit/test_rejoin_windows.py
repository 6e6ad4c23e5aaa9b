"""`benchmarks/rejoin.py`'s windows over a run's metrics snapshots (pure functions; the script
itself runs `rollstream up` for minutes and is not part of CI)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[2] / "benchmarks"))

import rejoin  # noqa: E402


def snap(t: float, step: int, samples: int, versions: int, wait: float, expired: int) -> dict:
    return {
        "t": t,
        "learner": {
            "rollstream_learner_step": step,
            "rollstream_learner_staleness_versions_count": samples,
            "rollstream_learner_staleness_versions_sum": versions,
            "rollstream_learner_step_phase_seconds_sum{phase=wait}": wait,
            "rollstream_learner_step_phase_seconds_sum{phase=compute}": 99.0,
        },
        "replay": {
            "rollstream_replay_dropped_rollouts_total{reason=expired}": expired,
            "rollstream_replay_dropped_rollouts_total{reason=evicted}": 1000,
        },
    }


def test_a_window_is_the_change_between_the_snapshots_at_its_ends_per_second() -> None:
    snaps = [
        snap(0.0, 0, 0, 0, 0.0, 0),
        snap(10.2, 10, 1280, 2560, 1.0, 80),
        snap(20.1, 30, 3840, 8960, 1.5, 240),
        snap(30.0, 50, 6400, 16640, 4.0, 240),
    ]
    w = rejoin.window(snaps, 10.5, 29.9)  # from the snapshot at 10.2 to the one at 20.1
    assert w == {
        "seconds": 9.9,
        "steps_per_s": round(20 / 9.9, 2),
        "staleness": 2.5,  # 6400 versions over 2560 samples
        "expired_per_s": round(160 / 9.9, 1),  # evictions are not expiry
        "learner_wait": round(0.5 / 9.9, 3),
    }
    assert rejoin.window(snaps, 25.0, 25.0) == {"seconds": 0.0}
