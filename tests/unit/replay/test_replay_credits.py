"""Credits: replay never sends more batches than the learner has granted in total."""

from __future__ import annotations

import pytest

from rollstream.services.replay.credits import Credits


def test_never_sends_past_the_granted_total() -> None:
    c = Credits()
    assert not c.can_send()
    c.grant(3)
    assert [c.record_sent() for _ in range(3)] == [1, 2, 3]  # seq numbers
    assert not c.can_send() and c.outstanding == 0
    with pytest.raises(RuntimeError):
        c.record_sent()
    assert c.sent == 3


def test_old_or_duplicate_feedback_never_over_grants() -> None:
    c = Credits()
    c.grant(2)
    c.grant(2)  # duplicate
    c.grant(1)  # older feedback, delivered late
    assert c.outstanding == 2
    c.record_sent()
    c.grant(2)  # re-sent after a learner restart: still 2 in total
    assert c.outstanding == 1
    c.grant(5)
    assert c.outstanding == 4


def test_restored_from_sent_output_stays_exact() -> None:
    c = Credits.restore({"granted": 4, "sent": 0})
    c.observe_sent(3)  # batches with seq 1..3 found on batches.train
    c.observe_sent(2)
    assert c.sent == 3 and c.outstanding == 1
    assert Credits.restore(c.snapshot()) == c
