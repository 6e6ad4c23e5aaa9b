"""The combiner: weighted sum, per-component timeouts and fallbacks, errors, concurrency, and
the scorer config model."""

from __future__ import annotations

import asyncio
import threading

import pytest
from pydantic import ValidationError
from scorer_builders import rollout

from rollstream.services.scorer.combine import Combiner, Component
from rollstream.services.scorer.config import RewardSpec, ScorerConfig
from rollstream.services.scorer.reward import RewardConfigError, RewardError, RewardTimeout


class Const:
    def __init__(self, name: str, value: float, checker: bool = False) -> None:
        self.name, self.value, self.checker = name, value, checker

    def score(self, r):  # sync, runs on the thread pool
        return self.value


class Sleepy:
    name = "sleepy"

    async def score(self, r):
        await asyncio.sleep(30)
        return 1.0


class Boom:
    name = "boom"
    inline = True

    def score(self, r):
        raise KeyError("missing field")


def run(combiner: Combiner, completion: str = "x"):
    async def go():
        try:
            return await combiner.score(rollout(completion))
        finally:
            await combiner.close()

    return asyncio.run(go())


def test_total_is_the_weighted_sum_and_components_stay_unweighted() -> None:
    combiner = Combiner(
        [
            Component("a", Const("a", 1.0), weight=0.5, run="thread"),
            Component("b", Const("b", -2.0), weight=0.25, run="inline"),
            Component("c", Const("c", 3.0), weight=1.0, run="thread"),
        ]
    )
    score = run(combiner)
    assert score.reward == pytest.approx(0.5 * 1.0 + 0.25 * -2.0 + 3.0)
    assert score.components == {"b": -2.0, "a": 1.0, "c": 3.0}
    assert score.timed_out == []
    assert score.correct is None  # no checker among them


def test_a_slow_component_gets_its_fallback_and_is_reported() -> None:
    combiner = Combiner(
        [
            Component("fast", Const("fast", 1.0), run="thread"),
            Component("sleepy", Sleepy(), weight=2.0, timeout_s=0.05, fallback=-0.5, run="async"),
        ]
    )
    score = run(combiner)
    assert score.components == {"fast": 1.0, "sleepy": -0.5}
    assert score.reward == pytest.approx(1.0 + 2.0 * -0.5)
    assert score.timed_out == ["sleepy"]


def test_reward_timeout_raised_by_a_reward_means_fallback() -> None:
    class Unavailable:
        name = "judge"

        async def score(self, r):
            raise RewardTimeout("server down")

    score = run(Combiner([Component("judge", Unavailable(), fallback=0.25, run="async")]))
    assert score.components == {"judge": 0.25}
    assert score.timed_out == ["judge"]


def test_a_raising_reward_becomes_reward_error_naming_it() -> None:
    combiner = Combiner([Component("ok", Const("ok", 1.0)), Component("boom", Boom())])
    with pytest.raises(RewardError, match="reward 'boom': KeyError") as info:
        run(combiner)
    assert info.value.reward == "boom"


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), "high", None])
def test_a_non_number_or_non_finite_value_is_an_error(bad) -> None:
    with pytest.raises(RewardError, match="reward 'c'"):
        run(Combiner([Component("c", Const("c", bad), run="inline")]))


def test_components_run_concurrently() -> None:
    # Each reward waits for the other: run one after the other, both would time out.
    async_gate = None
    thread_gate = threading.Event()

    class Waiter:
        name = "waiter"

        async def score(self, r):
            thread_gate.set()  # lets the thread reward finish
            await asyncio.wait_for(async_gate.wait(), 5)
            return 1.0

    class ThreadWaiter:
        name = "thread_waiter"

        def __init__(self, loop_holder):
            self.loop_holder = loop_holder

        def score(self, r):
            assert thread_gate.wait(5)
            self.loop_holder[0].call_soon_threadsafe(async_gate.set)
            return 2.0

    holder: list = []

    async def go():
        nonlocal async_gate
        async_gate = asyncio.Event()
        holder.append(asyncio.get_running_loop())
        combiner = Combiner(
            [
                Component("w", Waiter(), timeout_s=10, run="async"),
                Component("t", ThreadWaiter(holder), timeout_s=10, run="thread"),
            ]
        )
        try:
            return await combiner.score(rollout("x"))
        finally:
            await combiner.close()

    score = asyncio.run(go())
    assert score.components == {"w": 1.0, "t": 2.0}
    assert score.timed_out == []


def test_correct_comes_from_checkers_that_did_not_time_out() -> None:
    def combo(*values: float, late: bool = False) -> Combiner:
        comps = [Component(f"c{i}", Const(f"c{i}", v), checker=True) for i, v in enumerate(values)]
        comps.append(Component("shape", Const("shape", 0.0)))  # not a checker
        if late:
            comps.append(Component("slow", Sleepy(), timeout_s=0.01, checker=True, run="async"))
        return Combiner(comps)

    assert run(combo(1.0, 1.0)).correct is True
    assert run(combo(1.0, 0.0)).correct is False
    assert run(combo(1.0, late=True)).correct is True  # the timed-out checker does not vote
    assert (
        run(Combiner([Component("slow", Sleepy(), 1, 0.01, checker=True, run="async")])).correct
        is None
    )


def test_from_config_builds_builtins_with_labels_weights_and_checker_flags() -> None:
    config = ScorerConfig(
        rewards=[
            RewardSpec(name="exact_match", weight=1.0),
            RewardSpec(
                name="format",
                label="has_digit",
                weight=0.5,
                params={"pattern": r"\d", "mode": "search"},
            ),
            RewardSpec(name="format", label="short", weight=0.25, params={"pattern": r".{0,5}"}),
        ]
    )
    combiner = Combiner.from_config(config)
    assert [c.key for c in combiner.components] == ["exact_match", "has_digit", "short"]
    assert [c.checker for c in combiner.components] == [True, False, False]

    async def go():
        try:
            return await combiner.score(rollout(r"\boxed{42}", answer="42"))
        finally:
            await combiner.close()

    score = asyncio.run(go())
    assert score.components == {"exact_match": 1.0, "has_digit": 1.0, "short": 0.0}
    assert score.reward == pytest.approx(1.5)
    assert score.correct is True


def test_config_errors_name_the_field() -> None:
    with pytest.raises(ValidationError, match=r"rewards\.0\.weight"):
        ScorerConfig(rewards=[{"name": "task", "weight": float("nan")}])
    with pytest.raises(ValidationError, match=r"rewards\.0\.timeout_s"):
        ScorerConfig(rewards=[{"name": "task", "timeout_s": 0}])
    with pytest.raises(ValidationError, match=r"rewards\.1\.wieght"):
        ScorerConfig(rewards=[{"name": "task"}, {"name": "format", "wieght": 1}])
    with pytest.raises(ValidationError, match="rewards"):
        ScorerConfig(rewards=[])
    with pytest.raises(ValidationError, match="label 'x' is used twice"):
        ScorerConfig(rewards=[{"name": "task", "label": "x"}, {"name": "format", "label": "x"}])
    with pytest.raises(RewardConfigError, match=r"rewards\.1 \(format\).*params\.mode"):
        Combiner.from_config(
            ScorerConfig(rewards=[{"name": "task"}, {"name": "format", "params": {"mode": "x"}}])
        )
    with pytest.raises(RewardConfigError, match="used twice"):
        Combiner.from_config(ScorerConfig(rewards=[{"name": "format"}, {"name": "format"}]))


def test_default_config_scores_with_the_task_checker() -> None:
    combiner = Combiner.from_config(ScorerConfig())
    assert [(c.key, c.checker) for c in combiner.components] == [("task", True)]


def test_control_knobs_are_checked_against_the_runs_reward_keys() -> None:
    """`rollstream control scorer` with the run's config known refuses a weight for a reward
    the run does not have before anything is published; without it, only shape and ranges."""
    from rollstream.services.scorer.config import validate_control

    run = ScorerConfig(rewards=[RewardSpec(name="task"), RewardSpec(name="format", label="fmt")])
    validate_control({"weights": {"fmt": 0.5}, "timeouts": {"task": 2}}, run)
    with pytest.raises(
        ValueError, match=r"weights.format: no reward with that key; the run's: \['fmt', 'task'\]"
    ):
        validate_control({"weights": {"format": 0.5}}, run)  # labelled "fmt" in this run
    validate_control({"weights": {"format": 0.5}})  # run unknown: the stage decides
    with pytest.raises(ValueError, match="out of range"):
        validate_control({"timeouts": {"task": 0}}, run)
    # a user reward without a label: its key is known only once built, so any key passes here
    user = ScorerConfig(rewards=[RewardSpec(name="my_pkg.rewards:judge")])
    validate_control({"weights": {"judge": 2}}, user)
