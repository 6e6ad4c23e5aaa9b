"""The scorer app's message handling without a broker: bytes in, a ScoredRollout or a
dead-letter reason out, metrics counted, live control applied or refused."""

from __future__ import annotations

import asyncio

import pytest
from scorer_builders import rollout

from rollstream.schemas import encode
from rollstream.services.runtime.metrics import StageMetrics
from rollstream.services.scorer.app import Scorer
from rollstream.services.scorer.combine import Combiner, Component
from rollstream.services.scorer.metrics import RunningStats, register
from rollstream.services.scorer.rewards.match import ExactMatch


class Boom:
    name = "boom"
    inline = True

    def score(self, r):
        raise ZeroDivisionError("oops")


def make(*components: Component) -> tuple[Scorer, StageMetrics]:
    m = StageMetrics("scorer")
    return Scorer(Combiner(list(components)), register(m)), m


def value(m: StageMetrics, name: str, **labels: str) -> float:
    return m.registry.get_sample_value(name, labels) or 0.0


def test_a_rollout_becomes_a_scored_rollout_and_is_counted() -> None:
    scorer, m = make(Component("exact", ExactMatch(), weight=2.0, checker=True))
    msg, error = asyncio.run(scorer.score(encode(rollout(r"\boxed{7}", answer="7"))))
    assert error == ""
    assert (msg.reward, msg.rewards, msg.correct, msg.timed_out) == (2.0, {"exact": 1.0}, True, [])
    assert msg.rollout.rollout_id == "g0/0" and msg.score_s >= 0
    asyncio.run(scorer.score(encode(rollout("8", answer="7"))))
    assert value(m, "rollstream_scorer_rollouts_scored_total") == 2
    assert value(m, "rollstream_scorer_correct_total", verdict="correct") == 1
    assert value(m, "rollstream_scorer_reward_mean", reward="exact") == 0.5
    assert value(m, "rollstream_scorer_reward_mean", reward="total") == 1.0
    assert value(m, "rollstream_scorer_reward_std", reward="total") == 1.0


def test_malformed_bytes_and_raising_rewards_become_dead_letter_reasons() -> None:
    scorer, m = make(Component("boom", Boom()))
    msg, error = asyncio.run(scorer.score(b"\x93not a map"))
    assert msg is None and error.startswith("Rollout: malformed bytes")
    msg, error = asyncio.run(scorer.score(encode(rollout("x"))))
    assert msg is None and error == "reward 'boom': ZeroDivisionError: oops"
    assert value(m, "rollstream_scorer_reward_errors_total", reward="boom") == 1
    assert value(m, "rollstream_scorer_rollouts_scored_total") == 0


def test_control_updates_change_weights_or_are_refused_whole() -> None:
    scorer, m = make(Component("exact", ExactMatch()), Component("other", ExactMatch()))
    assert scorer.knobs.update({"weights": {"exact": 3.0}, "timeouts": {"other": 2.0}})
    assert [(c.weight, c.timeout_s) for c in scorer.combiner.components] == [
        (3.0, 10.0),
        (1.0, 2.0),
    ]
    msg, _ = asyncio.run(scorer.score(encode(rollout("7", answer="7"))))
    assert msg.reward == 4.0
    for bad in (
        {"weights": {"exact": 5.0, "missing": 1.0}},
        {"weights": {"exact": "high"}},
        {"timeouts": {"exact": 0}},
        {"weights": {"exact": float("inf")}},
        {"speed": {}},
    ):
        assert not scorer.knobs.update(bad)
    assert scorer.combiner.components[0].weight == 3.0
    assert value(m, "rollstream_scorer_control_updates_total", result="refused") == 5
    # a revision without `weights` (`rollstream control scorer --unset weights`): the weight
    # goes back to the run's configured value, as every stage's knobs do
    assert scorer.knobs.update({"timeouts": {"other": 2.0}})
    assert [(c.weight, c.timeout_s) for c in scorer.combiner.components] == [
        (1.0, 10.0),
        (1.0, 2.0),
    ]


def test_running_stats_match_the_plain_mean_and_std_at_first() -> None:
    stats = RunningStats(alpha=0.01)
    for x in [1.0, 0.0, 0.0, 1.0, 2.0, 5.0]:
        stats.add(x)
    assert stats.mean == pytest.approx(1.5)
    assert stats.std == pytest.approx(1.707825127659933)  # population std
