"""Curriculum policies: which prompts the feed sends or skips, from their PromptStats."""

from __future__ import annotations

import pytest

from rollstream.schemas import PromptStats
from rollstream.services.feed.curriculum import (
    Band,
    CurriculumError,
    Epochs,
    Greso,
    make_policy,
    trailing,
)
from rollstream.services.feed.items import FeedItem

ITEM = FeedItem("add-d2-abc", "add", "add 1+2=", "3")


def stats(pass_rate: float, groups: int = 1, recent: list[float] | None = None) -> PromptStats:
    return PromptStats(
        task_id=ITEM.task_id,
        task="add",
        pass_rate=pass_rate,
        last_pass_rate=recent[-1] if recent else pass_rate,
        groups=groups,
        recent=recent or [],
        produced_at=1.0,
    )


class FixedDraw:
    """Stands in for random.Random: every draw returns `value`."""

    def __init__(self, value: float) -> None:
        self.value = value

    def random(self) -> float:
        return self.value


def test_epochs_never_skips_even_a_solved_prompt() -> None:
    assert Epochs().decide(ITEM, stats(1.0, groups=50)) is None
    assert make_policy("epochs").decide(ITEM, None) is None


def test_band_skips_outside_the_closed_band_once_enough_groups() -> None:
    band = Band(lo=0.1, hi=0.9, min_groups=2)
    assert band.decide(ITEM, None) is None  # never seen: send
    assert band.decide(ITEM, stats(1.0, groups=1)) is None  # too few groups to judge
    assert band.decide(ITEM, stats(1.0, groups=2)) == "band_too_easy"
    assert band.decide(ITEM, stats(0.05, groups=3)) == "band_too_hard"
    assert band.decide(ITEM, stats(0.5, groups=3)) is None
    assert band.decide(ITEM, stats(0.9, groups=3)) is None  # the bounds are inside the band
    assert band.decide(ITEM, stats(0.1, groups=3)) is None


def test_trailing_counts_the_newest_run() -> None:
    assert trailing([1.0, 0.0, 1.0, 1.0], lambda x: x == 1.0) == 2
    assert trailing([1.0, 1.0, 0.5], lambda x: x == 1.0) == 0
    assert trailing([], lambda x: True) == 0


def test_greso_skip_probability_grows_with_the_zero_variance_streak() -> None:
    g = Greso(p_easy=0.5, p_hard=0.5)
    # two trailing all-correct groups: keep with 0.5**2 = 0.25, skip with 0.75
    assert g.skip_probability([0.5, 1.0, 1.0]) == (pytest.approx(0.75), "greso_too_easy")
    # three trailing all-wrong groups: keep 0.125, skip 0.875
    assert g.skip_probability([1.0, 0.0, 0.0, 0.0]) == (pytest.approx(0.875), "greso_too_hard")
    # a long streak is floored at min_keep = 0.01: skip 0.99
    assert g.skip_probability([1.0] * 20) == (pytest.approx(0.99), "greso_too_easy")
    # the newest group had variance: never skipped
    assert g.skip_probability([1.0, 1.0, 0.5]) == (0.0, None)


def test_greso_decides_by_the_draw() -> None:
    two_easy = stats(1.0, groups=3, recent=[0.5, 1.0, 1.0])  # skip probability 0.75
    assert Greso(rng=FixedDraw(0.74)).decide(ITEM, two_easy) == "greso_too_easy"
    assert Greso(rng=FixedDraw(0.76)).decide(ITEM, two_easy) is None
    assert Greso(rng=FixedDraw(0.0)).decide(ITEM, None) is None  # no stats yet: send


def test_greso_adapts_p_toward_the_target_zero_variance_share() -> None:
    # target 0.25: easy target 0.25/3 = 0.083, hard target 2*0.25/3 = 0.167
    g = Greso(adapt_every=4, p_easy=0.5, p_hard=0.5, step=0.01)
    for rate in (1.0, 1.0, 0.0, 0.5):  # easy share 0.5, hard share 0.25: both above target
        g.observe(stats(rate))
    assert g.gauges() == {"p_easy": pytest.approx(0.49), "p_hard": pytest.approx(0.49)}
    for rate in (1.0, 0.5, 0.5, 0.5):  # easy 0.25 above target, hard 0.0 below: p_hard rises
        g.observe(stats(rate))
    assert g.gauges() == {"p_easy": pytest.approx(0.48), "p_hard": pytest.approx(0.50)}
    for rate in (0.5, 0.5, 0.5):  # an unfinished window changes nothing
        g.observe(stats(rate))
    assert g.gauges() == {"p_easy": pytest.approx(0.48), "p_hard": pytest.approx(0.50)}


def test_greso_adaptation_stays_within_bounds() -> None:
    g = Greso(adapt_every=1, p_easy=0.06, min_p=0.05, step=0.02)
    g.observe(stats(1.0))
    assert g.p_easy == pytest.approx(0.05)
    g.observe(stats(1.0))
    assert g.p_easy == pytest.approx(0.05)


def test_make_policy_names_a_bad_parameter() -> None:
    with pytest.raises(CurriculumError, match=r"feed\.curriculum\.params\.p_easy"):
        make_policy("greso", {"p_easy": 2.0})
    with pytest.raises(CurriculumError, match="lo"):
        make_policy("band", {"lo": 0.9, "hi": 0.1})
    with pytest.raises(CurriculumError, match="wobble"):
        make_policy("band", {"wobble": 1})
    with pytest.raises(CurriculumError, match="epochs, band, greso"):
        make_policy("nosuchpolicy")


def test_make_policy_loads_a_user_policy_by_dotted_path(user_code) -> None:
    user_code(
        "my_curriculum",
        "class SkipTask:\n"
        "    needs_stats = False\n"
        "    def __init__(self, task):\n"
        "        self.task = task\n"
        "    def decide(self, item, stats):\n"
        "        return 'not_this_task' if item.task == self.task else None\n",
    )
    policy = make_policy("my_curriculum:SkipTask", {"task": "add"})
    assert policy.decide(ITEM, None) == "not_this_task"
    assert policy.decide(FeedItem("sort-x", "sort", "sort 21=", "12"), None) is None
    assert make_policy("my_curriculum.SkipTask", {"task": "sort"}).decide(ITEM, None) is None
