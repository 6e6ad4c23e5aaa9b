"""The run-ahead bound (un-consumed prompts, when the feed may send) and the resume header."""

from __future__ import annotations

from rollstream.services.feed.offsets import header_pos, pos_header
from rollstream.services.feed.runahead import RunAhead, unconsumed


def test_unconsumed_counts_from_commits_or_the_log_start() -> None:
    ends = {0: 10, 1: 5, 2: 7}
    committed = {0: 4}  # partitions 1 and 2 never committed
    starts = {0: 0, 1: 2, 2: 0}  # partition 1 lost its first two messages to retention
    assert unconsumed(ends, committed, starts) == (10 - 4) + (5 - 2) + (7 - 0)


def test_unconsumed_never_goes_negative_per_partition() -> None:
    # a commit past the reported end (the embedded broker under-reports ends) counts as 0
    assert unconsumed({0: 3, 1: 6}, {0: 5, 1: 1}, {}) == 0 + 5


def test_run_ahead_room_follows_sends_and_measurements() -> None:
    bound = RunAhead(max_ahead=3)
    assert bound.room == 3
    bound.measured(1)
    assert bound.room == 2
    bound.sent()
    bound.sent()
    assert bound.room == 0  # paused until the next measurement
    bound.sent()
    assert bound.room == 0
    bound.measured(1)  # the generators committed two
    assert bound.room == 2


def test_resume_position_is_read_only_from_this_pools_header() -> None:
    key, value = pos_header("abc123", epoch=2, index=17)
    assert key == "feed_pos"
    assert header_pos([("schema", b"PromptTask"), (key, value)], "abc123") == (2, 17)
    assert header_pos([(key, value)], "other-pool") is None  # another pool: start over
    assert header_pos([(key, b"garbage")], "abc123") is None
    assert header_pos(None, "abc123") is None


def test_the_bound_grows_with_what_the_generators_consume_and_shrinks_back() -> None:
    bound = RunAhead(max_ahead=64, lead_polls=2.0, poll_s=0.5)
    bound.measured(0, now=0.0)
    assert bound.bound == 64  # no rate yet
    # the generators took all 64 within the interval: 128 a second, and more was wanted
    bound.sent(64)
    bound.measured(0, now=0.5)
    assert bound.rate == 64.0  # smoothed from 0 halfway to 128
    assert bound.bound == 64  # 64 a second * 2 polls * 0.5 s
    bound.sent(64)
    bound.measured(0, now=1.0)
    assert bound.bound == 96  # rate 96: the cap rises above max_ahead a poll interval
    for t in range(3, 12):
        bound.sent(bound.room)
        bound.measured(0, now=t * 0.5)
    assert bound.bound > 300  # the lead keeps ahead of a consumer that takes everything
    for t in range(12, 30):  # the generators stop consuming (pacing holds them back)
        bound.measured(bound.ahead, now=t * 0.5)
    assert bound.bound == 64


def test_a_fixed_bound_without_a_lead() -> None:
    bound = RunAhead(max_ahead=8)
    bound.measured(0, now=0.0)
    bound.sent(8)
    bound.measured(0, now=0.1)  # 80 a second, but no lead asked for
    assert bound.bound == 8 and bound.room == 8
