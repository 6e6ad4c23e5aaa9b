"""The whole pure filter stage: synthetic scored samples in, exactly the expected groups,
drops (with reasons and numbers) and prompt stats out; chain semantics; live updates;
config errors naming the field."""

from __future__ import annotations

import math

import pytest
from filter_builders import scored
from pydantic import ValidationError

from rollstream.services.filter.chain import FilterConfigError
from rollstream.services.filter.config import FilterConfig, validate_control
from rollstream.services.filter.core import FilterCore


def feed(core: FilterCore, samples, now: float = 10.0):
    outcomes = []
    for s in samples:
        _, outcome = core.add(s, now)
        if outcome is not None:
            outcomes.append(outcome)
    return outcomes


def accounted(outcome) -> list[str]:
    ids = [s.rollout.rollout_id for s in outcome.group.samples] if outcome.group else []
    for drop in outcome.drops:
        ids += drop.rollout_ids
    return sorted(ids)


def test_a_mixed_group_is_kept_with_grpo_advantages_and_stats() -> None:
    core = FilterCore()
    samples = [scored(i, r) for i, r in enumerate([1.0, 0.0, 0.0, 1.0])]
    samples[0] = scored(0, 1.0, version=3)
    [out] = feed(core, samples[::-1], now=12.0)  # arrival order does not matter
    a = 0.5 / math.sqrt(1 / 3)
    assert out.drops == []
    g = out.group
    assert [s.rollout.sample_index for s in g.samples] == [0, 1, 2, 3]
    assert g.advantages == pytest.approx([a, -a, -a, a], rel=1e-5)
    assert (g.stats.reward_mean, g.stats.reward_std, g.stats.pass_rate) == (0.5, 0.5, 0.5)
    assert (g.stats.generated, g.stats.kept, g.stats.estimator) == (4, 4, "grpo")
    assert g.policy_version == 0 and g.produced_at == 12.0
    ps = out.prompt_stats
    assert (ps.task_id, ps.pass_rate, ps.groups, ps.recent, ps.policy_version) == (
        "t1",
        0.5,
        1,
        [0.5],
        3,
    )


def test_an_all_correct_group_is_dropped_with_its_reason_and_numbers() -> None:
    [out] = feed(FilterCore(), [scored(i, 1.0) for i in range(4)])
    assert out.group is None
    [drop] = out.drops
    assert (drop.filter, drop.reason, drop.scope) == (
        "zero_variance",
        "zero_variance_all_correct",
        "group",
    )
    assert drop.stats == {"reward_std": 0.0, "reward_mean": 1.0, "pass_rate": 1.0}
    assert drop.rollout_ids == ["g1/0", "g1/1", "g1/2", "g1/3"]
    assert out.prompt_stats.pass_rate == 1.0


def test_sample_drops_and_group_drops_account_for_every_sample() -> None:
    # truncated sample 1 is dropped; the rest [1, 0, 1] still vary -> kept with 3 samples
    samples = [scored(0, 1.0), scored(1, 0.0, finish="length"), scored(2, 0.0), scored(3, 1.0)]
    [out] = feed(FilterCore(), samples)
    assert [(d.filter, d.reason, d.scope, d.rollout_ids) for d in out.drops] == [
        ("truncated", "truncated", "samples", ["g1/1"])
    ]
    assert out.group.stats.generated == 4 and out.group.stats.kept == 3
    # kept rewards [1, 0, 1]: mean 2/3, sample std sqrt(1/3)
    r3 = math.sqrt(3)
    assert out.group.advantages == pytest.approx([1 / r3, -2 / r3, 1 / r3], rel=1e-5)
    assert accounted(out) == ["g1/0", "g1/1", "g1/2", "g1/3"]
    # truncated samples 1 and 2 go; the rest [1, 1] have no spread -> group dropped
    samples = [
        scored(0, 1.0),
        scored(1, 0.0, finish="length"),
        scored(2, 0.0, finish="length"),
        scored(3, 1.0),
    ]
    [out] = feed(FilterCore(), samples)
    assert out.group is None
    assert [(d.reason, d.scope, d.rollout_ids) for d in out.drops] == [
        ("truncated", "samples", ["g1/1", "g1/2"]),
        ("zero_variance_all_correct", "group", ["g1/0", "g1/3"]),
    ]
    assert accounted(out) == ["g1/0", "g1/1", "g1/2", "g1/3"]
    # the prompt's pass rate counts every arrived sample: 2 of 4
    assert out.prompt_stats.last_pass_rate == 0.5


def test_a_sample_drop_that_empties_the_group_is_a_group_drop() -> None:
    samples = [scored(i, float(i % 2), finish="length") for i in range(4)]
    [out] = feed(FilterCore(), samples)
    assert [(d.reason, d.scope, len(d.rollout_ids)) for d in out.drops] == [
        ("truncated", "group", 4)
    ]


def test_too_few_samples_left_is_a_drop() -> None:
    config = FilterConfig(chain=[{"name": "pods", "params": {"m": 1}}], min_samples=2)
    [out] = feed(FilterCore(config), [scored(i, float(i)) for i in range(4)])
    assert out.group is None
    assert [(d.filter, d.reason, d.scope) for d in out.drops] == [
        ("pods", "pods_downsample", "samples"),
        ("chain", "too_few_samples", "group"),
    ]
    assert out.drops[1].stats == {"kept": 1.0, "min_samples": 2.0}
    assert accounted(out) == ["g1/0", "g1/1", "g1/2", "g1/3"]


def test_pods_then_rloo_on_the_selected_subset() -> None:
    config = FilterConfig(chain=[{"name": "pods", "params": {"m": 2}}], estimator="rloo")
    [out] = feed(FilterCore(config), [scored(i, r) for i, r in enumerate([0.2, 0.9, 0.5, 0.1])])
    assert [s.rollout.rollout_id for s in out.group.samples] == ["g1/1", "g1/3"]
    assert out.group.advantages == pytest.approx([0.8, -0.8])  # 0.9 - 0.1, 0.1 - 0.9


def test_stale_uses_the_learner_version() -> None:
    config = FilterConfig(chain=[{"name": "stale", "params": {"max_lag": 1}}], estimator="dr_grpo")
    core = FilterCore(config, learner_version=5)
    samples = [
        scored(0, 1.0, version=5),
        scored(1, 0.0, version=4),
        scored(2, 0.0, version=3),
        scored(3, 0.5, version=5),
    ]
    [out] = feed(core, samples)
    assert [d.rollout_ids for d in out.drops] == [["g1/2"]]
    assert out.drops[0].policy_version == 3
    assert out.group.advantages == pytest.approx([0.5, -0.5, 0.0])
    assert out.group.policy_version == 4


def test_timeout_drop_policy() -> None:
    core = FilterCore(FilterConfig(group_timeout_s=30, timeout_policy="drop"))
    feed(core, [scored(0, 1.0), scored(1, 0.0)], now=100.0)
    assert core.expire(now=120.0) == []
    [out] = core.expire(now=131.0)
    assert out.group is None and out.partial
    [drop] = out.drops
    assert (drop.filter, drop.reason, drop.rollout_ids) == (
        "assembly",
        "incomplete_timeout",
        ["g1/0", "g1/1"],
    )
    assert drop.stats == {"arrived": 2.0, "expected": 4.0, "waited_s": 31.0}
    assert out.prompt_stats.last_pass_rate == 0.5
    # a straggler of the timed-out group does not start a new one
    added, outcome = core.add(scored(2, 1.0), now=132.0)
    assert (added.status, outcome) == ("late", None)


def test_timeout_emit_policy_filters_what_arrived() -> None:
    core = FilterCore(FilterConfig(group_timeout_s=30, timeout_policy="emit", estimator="dr_grpo"))
    feed(core, [scored(0, 1.0), scored(1, 0.0), scored(2, 0.0)], now=100.0)
    [out] = core.expire(now=200.0)
    assert out.partial and out.drops == []
    assert out.group.stats.generated == 3
    assert out.group.advantages == pytest.approx([2 / 3, -1 / 3, -1 / 3])
    assert out.group.stats.assembly_s == 100.0


def test_redelivered_samples_do_not_duplicate_a_group() -> None:
    core = FilterCore()
    samples = [scored(i, float(i % 2)) for i in range(4)]
    outs = feed(core, samples + samples)
    assert len(outs) == 1


def test_prompt_stats_follow_the_ewma_across_groups() -> None:
    core = FilterCore(FilterConfig(pass_rate_alpha=0.5, chain=[]))
    feed(core, [scored(i, 1.0, group_id="a") for i in range(4)])  # p = 1
    [out] = feed(core, [scored(i, float(i == 0), group_id="b") for i in range(4)])  # p = 0.25
    assert out.prompt_stats.pass_rate == pytest.approx(0.625)
    assert out.prompt_stats.recent == [1.0, 0.25] and out.prompt_stats.groups == 2


def test_live_knobs_set_params_estimator_and_whole_chain_onto_the_run_config() -> None:
    run = FilterConfig(chain=[{"name": "stale", "params": {"max_lag": 4}}])
    core = FilterCore(run)
    core.configure(validate_control({"chain": {"stale": {"max_lag": 0}}, "estimator": "rloo"}, run))
    assert core.chain.filters[0].params.max_lag == 0
    assert core.config.estimator == "rloo"
    assert core.config.chain[0].params == {"max_lag": 0}
    # all or nothing: a bad estimator refuses the filter params too, and vice versa
    with pytest.raises(FilterConfigError, match="estimator"):
        validate_control({"chain": {"stale": {"max_lag": 9}}, "estimator": "ppo"}, run)
    with pytest.raises(FilterConfigError, match="params.max_lag"):
        validate_control({"chain": {"stale": {"max_lag": -1}}, "min_samples": 3}, run)
    with pytest.raises(FilterConfigError, match="no filter labelled"):
        validate_control({"chain": {"pods": {"m": 2}}}, run)
    with pytest.raises(FilterConfigError, match="unknown knob.*tick_s"):
        validate_control({"tick_s": 5}, run)  # fixed when the app starts
    chain = [{"name": "zero_variance"}, {"name": "pods", "params": {"m": 2}}]
    core.configure(validate_control({"chain": chain}, run))
    assert [f.label for f in core.chain.filters] == ["zero_variance", "pods"]
    assert core.config.estimator == "grpo"  # the revision does not name it: the run's value
    with pytest.raises(FilterConfigError, match=r"chain.0 \(pods\).*params.m"):
        validate_control({"chain": [{"name": "pods", "params": {"m": 0}}]}, run)


def test_the_cli_checks_filter_params_it_cannot_place_only_for_shape() -> None:
    """Without the run's config (`rollstream control`), a label outside the default chain
    may be the run's: its params go to the stage, which checks them against its chain."""
    validate_control({"chain": {"pods": {"m": 2}}})
    with pytest.raises(FilterConfigError, match=r"expected \{param: value\}"):
        validate_control({"chain": {"pods": 2}})
    with pytest.raises(FilterConfigError, match="params.bogus"):
        validate_control({"chain": {"zero_variance": {"bogus": 1}}})


def test_config_errors_name_the_field() -> None:
    with pytest.raises(ValidationError, match="group_timeout_s"):
        FilterConfig(group_timeout_s=0)
    with pytest.raises(ValidationError, match="timeout_policy"):
        FilterConfig(timeout_policy="wait")
    with pytest.raises(ValidationError, match=r"chain\.0\.name"):
        FilterConfig(chain=[{"params": {}}])
    with pytest.raises(ValidationError, match="filters used twice"):
        FilterConfig(
            chain=[
                {"name": "format", "params": {"pattern": "a"}},
                {"name": "format", "params": {"pattern": "b"}},
            ]
        )
    two = FilterConfig(
        chain=[
            {"name": "format", "label": "has_answer", "params": {"pattern": "answer"}},
            {"name": "format", "label": "short", "params": {"pattern": "^.{0,8}$"}},
        ]
    )
    [out] = feed(
        FilterCore(two),
        [
            scored(i, float(i % 2), completion=c)
            for i, c in enumerate(["answer 1", "nope", "answer 22", "answer"])
        ],
    )
    assert [(d.filter, d.rollout_ids) for d in out.drops] == [
        ("has_answer", ["g1/1"]),
        ("short", ["g1/2"]),
    ]
    with pytest.raises(FilterConfigError, match=r"chain.0 \(format\)"):
        FilterCore(FilterConfig(chain=[{"name": "format"}]))
