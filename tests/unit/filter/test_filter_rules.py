"""Each built-in filter against hand-computed decisions; PODS against brute force."""

from __future__ import annotations

import itertools
import random
import statistics

import pytest
from filter_builders import group_of, scored

from rollstream.services.filter.chain import CandidateGroup, FilterConfigError, load_filter
from rollstream.services.filter.rules.pods import max_variance_subset


def cand(samples, learner_version=None) -> CandidateGroup:
    return CandidateGroup("g1", "t1", "toy", samples, len(samples), learner_version)


def decide(name: str, samples, learner_version=None, **params):
    return load_filter(name, params).apply(cand(samples, learner_version))


def test_zero_variance_keeps_a_group_with_spread() -> None:
    assert decide("zero_variance", group_of([1, 0, 0, 1])).action == "keep"


@pytest.mark.parametrize(
    ("rewards", "correct", "reason", "rate"),
    [
        ([1, 1, 1, 1], None, "zero_variance_all_correct", 1.0),
        ([0, 0, 0, 0], None, "zero_variance_all_wrong", 0.0),
        ([0.3, 0.3, 0.3, 0.3], [True, False, True, True], "zero_variance", 0.75),
    ],
)
def test_zero_variance_drops_equal_rewards_with_the_right_reason(rewards, correct, reason, rate):
    samples = group_of(rewards)
    if correct is not None:
        samples = [
            scored(i, r, correct=c, group_size=4)
            for i, (r, c) in enumerate(zip(rewards, correct, strict=True))
        ]
    d = decide("zero_variance", samples)
    assert (d.action, d.reason) == ("drop_group", reason)
    assert d.stats == {
        "reward_std": 0.0,
        "reward_mean": pytest.approx(rewards[0]),
        "pass_rate": rate,
    }


def test_zero_variance_eps_and_correct_metric() -> None:
    # rewards 1.0 and 1.02: population std 0.01
    near = group_of([1.0, 1.02])
    assert decide("zero_variance", near).action == "keep"
    assert decide("zero_variance", near, eps=0.02).reason == "zero_variance_all_correct"
    # rewards differ (shaping terms) but every verdict is correct
    shaped = [scored(i, r, correct=True, group_size=2) for i, r in enumerate([0.9, 1.1])]
    assert decide("zero_variance", shaped).action == "keep"
    assert decide("zero_variance", shaped, metric="correct").reason == "zero_variance_all_correct"


def test_truncated_drops_samples_or_the_group() -> None:
    samples = [
        scored(0, 1),
        scored(1, 0, finish="length"),
        scored(2, 0),
        scored(3, 1, finish="abort"),
    ]
    d = decide("truncated", samples)
    assert (d.action, d.reason, d.rollout_ids) == ("drop_samples", "truncated", ("g1/1",))
    assert d.stats == {"count": 1.0, "fraction": 0.25}
    both = decide("truncated", samples, finish_reasons=["length", "abort"])
    assert both.rollout_ids == ("g1/1", "g1/3")
    whole = decide("truncated", samples, scope="group")
    assert (whole.action, whole.stats["fraction"]) == ("drop_group", 0.25)
    assert decide("truncated", samples, scope="group", max_fraction=0.25).action == "keep"
    assert decide("truncated", group_of([1, 0])).action == "keep"


def test_format_drops_samples_that_do_not_match() -> None:
    samples = [
        scored(0, completion="<answer>4</answer>"),
        scored(1, completion="four"),
        scored(2, completion="x <answer>\n5\n</answer>"),
    ]
    d = decide("format", samples, pattern=r"<answer>.*</answer>")
    assert (d.action, d.reason, d.rollout_ids) == ("drop_samples", "format", ("g1/1",))
    strict = decide("format", samples, pattern=r"<answer>.*</answer>", mode="fullmatch")
    assert strict.rollout_ids == ("g1/1", "g1/2")
    with pytest.raises(FilterConfigError, match="params.pattern"):
        load_filter("format", {"pattern": "(("})
    with pytest.raises(FilterConfigError, match="params.pattern"):
        load_filter("format", {})


def test_duplicate_keeps_the_first_copy() -> None:
    samples = [
        scored(0, completion="The answer is 4"),
        scored(1, completion="the answer is 4"),
        scored(2, completion="The  answer is\n4"),
        scored(3, completion="The answer is 5"),
    ]
    d = decide("duplicate", samples)
    assert (d.reason, d.rollout_ids, d.stats) == (
        "duplicate",
        ("g1/2",),
        {"count": 1.0, "distinct": 3.0},
    )
    loose = decide("duplicate", samples, case_sensitive=False)
    assert loose.rollout_ids == ("g1/1", "g1/2")
    exact = decide("duplicate", samples, normalise_whitespace=False)
    assert exact.action == "keep"


def test_stale_drops_samples_beyond_the_lag_bound() -> None:
    samples = [scored(i, version=v) for i, v in enumerate([10, 7, 6, 3])]
    d = decide("stale", samples, learner_version=10, max_lag=3)
    assert (d.reason, d.rollout_ids) == ("stale", ("g1/2", "g1/3"))
    assert d.stats == {"count": 2.0, "max_lag": 3.0, "worst_lag": 7.0}
    assert decide("stale", samples, learner_version=None, max_lag=0).action == "keep"
    assert decide("stale", samples, learner_version=10, max_lag=7).action == "keep"


def test_pass_rate_band_is_closed() -> None:
    quarter = group_of([1, 0, 0, 0])  # p = 0.25
    assert decide("pass_rate_band", quarter, lo=0.25, hi=0.75).action == "keep"
    low = decide("pass_rate_band", quarter, lo=0.3, hi=0.9)
    assert (low.reason, low.stats) == (
        "pass_rate_below_band",
        {"pass_rate": 0.25, "lo": 0.3, "hi": 0.9},
    )
    high = decide("pass_rate_band", group_of([1, 1, 1, 0]), lo=0.0, hi=0.7)
    assert (high.reason, high.stats["pass_rate"]) == ("pass_rate_above_band", 0.75)
    with pytest.raises(FilterConfigError, match="lo must not exceed hi"):
        load_filter("pass_rate_band", {"lo": 0.8, "hi": 0.2})


def test_learnability_threshold_on_p_times_one_minus_p() -> None:
    tenth = group_of([1] + [0] * 9)  # p = 0.1 -> 0.09
    assert decide("learnability", tenth, threshold=0.09).action == "keep"
    d = decide("learnability", tenth, threshold=0.1)
    assert (d.reason, d.stats) == (
        "low_learnability",
        {"learnability": pytest.approx(0.09), "pass_rate": 0.1, "threshold": 0.1},
    )
    assert decide("learnability", group_of([1, 0]), threshold=0.25).action == "keep"
    with pytest.raises(FilterConfigError, match="params.threshold"):
        load_filter("learnability", {"threshold": 0.3})


def test_pods_keeps_the_max_variance_subset() -> None:
    # rewards by index: 0.2 0.9 0.5 0.1 1.0 0.4; m = 4 -> the 2 lowest (3: 0.1, 0: 0.2) and
    # the 2 highest (4: 1.0, 1: 0.9)
    samples = group_of([0.2, 0.9, 0.5, 0.1, 1.0, 0.4])
    d = decide("pods", samples, m=4)
    assert (d.action, d.reason) == ("drop_samples", "pods_downsample")
    assert d.rollout_ids == ("g1/2", "g1/5")
    assert d.stats["variance"] == pytest.approx(statistics.pvariance([0.2, 0.9, 0.1, 1.0]))
    assert d.stats["count"] == 2.0 and d.stats["target"] == 4.0
    assert decide("pods", samples, m=6).action == "keep"
    # binary rewards, 3 correct of 8, m = 4: two correct and two wrong
    binary = group_of([1, 0, 0, 1, 0, 0, 1, 0])
    kept = set(range(8)) - {int(r.split("/")[1]) for r in decide("pods", binary, m=4).rollout_ids}
    assert sorted(binary[i].reward for i in kept) == [0, 0, 1, 1]


def test_pods_matches_brute_force_on_random_groups() -> None:
    rng = random.Random(7)
    for trial in range(400):
        n = rng.randint(2, 9)
        m = rng.randint(1, n)
        if trial % 2:
            rewards = [float(rng.random() < 0.4) for _ in range(n)]
        else:
            rewards = [round(rng.uniform(-1, 2), 3) for _ in range(n)]
        best = max(
            statistics.pvariance([rewards[i] for i in c])
            for c in itertools.combinations(range(n), m)
        )
        chosen = max_variance_subset(rewards, m)
        assert len(chosen) == m and len(set(chosen)) == m
        assert statistics.pvariance([rewards[i] for i in chosen]) == pytest.approx(best, abs=1e-9)


def test_update_validates_and_changes_nothing_on_error() -> None:
    flt = load_filter("stale", {"max_lag": 2})
    flt.update({"max_lag": 5})
    assert flt.params.max_lag == 5
    with pytest.raises(FilterConfigError, match="params.max_lag"):
        flt.update({"max_lag": -1})
    with pytest.raises(FilterConfigError, match="params.max_lagg"):
        flt.update({"max_lagg": 1})
    assert flt.params.max_lag == 5


def test_load_filter_by_path_and_unknown_names(user_code) -> None:
    user_code(
        "my_filters",
        "from rollstream.services.filter.chain import Filter, FilterParams, Decision, KEEP\n"
        "class Short(Filter):\n"
        "    name = 'short'\n"
        "    class Params(FilterParams):\n"
        "        max_chars: int = 5\n"
        "    def apply(self, group):\n"
        "        bad = [s.rollout.rollout_id for s in group.samples\n"
        "               if len(s.rollout.completion) > self.params.max_chars]\n"
        "        return Decision.drop_samples(bad, 'too_long', count=len(bad)) if bad else KEEP\n",
    )
    flt = load_filter("my_filters:Short", {"max_chars": 3})
    d = flt.apply(cand([scored(0, completion="abc"), scored(1, completion="abcd")]))
    assert (d.reason, d.rollout_ids) == ("too_long", ("g1/1",))
    with pytest.raises(FilterConfigError, match="unknown filter 'nope'"):
        load_filter("nope")
    with pytest.raises(FilterConfigError, match="has no 'Missing'"):
        load_filter("my_filters:Missing")
