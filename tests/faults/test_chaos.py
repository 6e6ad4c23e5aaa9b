"""The short chaos variant of issue 16 (benchmarks/chaos.py runs the 10-minute one): a
`rollstream up` on its own embedded broker with seeded SIGKILLs that reach every stage process
(feed, generator, scorer, filter, replay, learner, evaluator) and one broker SIGSTOP longer
than the group session. Pass: `up` ends normally, every process was killed at least once, the
ledger balances exactly (nothing lost, nothing trained twice) and held-out accuracy still
rose."""

from __future__ import annotations

from pathlib import Path

import pytest
from chaos_bench import chaos

pytestmark = [pytest.mark.slow, pytest.mark.kafka]


def test_random_kills_and_a_broker_pause_lose_nothing(
    rollstream_home: Path, tmp_path: Path
) -> None:
    res = chaos.run_chaos(
        tmp_path,
        minutes=2.5,
        kills=8,  # one round over the 7 processes, and one more
        pause_s=15,  # longer than the 6 s group session: every member's session expires
        extra=[
            "--set",
            "kafka.session_timeout_ms=6000",
            "--set",
            "evaluator.min_interval_s=15",
            "--set",
            "evaluator.items_per_task=50",
        ],
        env={"ROLLSTREAM_HOME": str(rollstream_home)},
    )
    print({k: v for k, v in res.items() if k != "output_tail"})
    assert res["returncode"] == 0, res["output_tail"]
    stages = {p.rsplit("-", 1)[0] for p in res["processes"]}
    assert {"feed", "generator", "scorer", "filter", "replay", "learner", "evaluator"} <= stages
    assert res["not_killed"] == [], (res["kills"], res.get("missed"))
    # generator and learner ride out the broker pause (issue 16 D8): restarted only if killed.
    # (`up.fail_restarts` is raised for chaos runs: a kill is not a crash loop.)
    # (Other stages may be restarted by `up` when one was starting during the pause.)
    for stage in ("generator-0", "learner-0"):
        killed = sum(1 for _, victim in res["kills"] if victim == stage)
        assert res["restarts"][stage] <= killed, (stage, res["restarts"], res["kills"])
    led = res["ledger"]
    assert led["balanced"] and led["trained_twice"] == 0 and led["unknown"] == 0, led
    assert led["trained"] > 0
    assert res["gain"] > 0, (res["accuracy_first"], res["accuracy_last"])
