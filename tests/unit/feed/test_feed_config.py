"""The `feed:` section of a run file: bad values fail with the field's name."""

from __future__ import annotations

import pytest

from rollstream.schemas import Sampling
from rollstream.services.feed.config import FeedConfig
from rollstream.services.runtime.config import ConfigError, load_config, section


def feed(*overrides: str) -> FeedConfig:
    return section(load_config(None, list(overrides), env={}), "feed", FeedConfig)


def test_defaults_feed_the_built_in_mixture_forever() -> None:
    cfg = feed()
    assert (cfg.tasks, cfg.datasets, cfg.epochs, cfg.n) == (None, [], None, 8)
    assert cfg.curriculum.policy == "epochs"
    assert cfg.sampling_overrides() is None


def test_sampling_overrides_become_the_wire_struct() -> None:
    cfg = feed("feed.sampling={temperature: 0.7, stop: ['END']}", "feed.n=4")
    assert cfg.sampling_overrides() == Sampling(temperature=0.7, stop=["END"])
    assert cfg.n == 4


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("feed.sampling={temprature: 0.7}", r"feed\.sampling.*unknown sampling key.*temprature"),
        ("feed.sampling={temperature: 11}", r"feed\.sampling.*temperature"),
        ("feed.sampling={n: 4}", r"feed\.sampling.*feed\.n"),
        ("feed.max_ahead=0", r"feed\.max_ahead"),
        ("feed.tasks=[{task: add, difficulty: 0}]", r"feed\.tasks\.0\.difficulty"),
        ("feed.tasks=[]", "nothing to feed"),
        ("feed.bogus=1", r"feed\.bogus"),
    ],
)
def test_bad_values_name_the_field(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        feed(override)
