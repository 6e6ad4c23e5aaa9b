"""Group assembly: completion, dedup by rollout_id, late samples, timeouts, persistence."""

from __future__ import annotations

from filter_builders import scored

from rollstream.services.filter.assembly import GroupAssembler
from rollstream.services.filter.pass_rate import PassRateTracker
from rollstream.services.filter.tables import PendingTable


def test_a_group_completes_when_group_size_distinct_samples_arrived() -> None:
    asm = GroupAssembler()
    assert asm.add(scored(2, group_size=3), now=10.0).status == "pending"
    assert asm.add(scored(0, group_size=3), now=11.0).status == "pending"
    assert asm.add(scored(0, group_size=3), now=11.5).status == "duplicate"  # redelivery
    added = asm.add(scored(1, group_size=3), now=12.0)
    assert added.status == "complete"
    assert [s.rollout.sample_index for s in added.group.ordered()] == [0, 1, 2]
    assert added.group.first_seen == 10.0
    assert asm.pending == {} and asm.done == {"g1": 12.0}


def test_samples_of_a_finished_group_are_late_and_ignored() -> None:
    asm = GroupAssembler()
    for i in range(2):
        asm.add(scored(i, group_size=2), now=1.0)
    assert asm.add(scored(1, group_size=2), now=2.0).status == "late"
    assert asm.pending == {}


def test_expire_hands_back_groups_older_than_the_timeout() -> None:
    asm = GroupAssembler()
    asm.add(scored(0, group_id="old"), now=0.0)
    asm.add(scored(0, group_id="new"), now=50.0)
    assert asm.expire(now=60.0, timeout_s=100.0) == []
    expired = asm.expire(now=100.5, timeout_s=100.0)
    assert [g.group_id for g in expired] == ["old"]
    assert list(asm.pending) == ["new"]
    assert asm.add(scored(1, group_id="old"), now=101.0).status == "late"
    assert asm.prune_done(now=500.0, ttl_s=300.0) == 1
    assert asm.add(scored(1, group_id="old"), now=501.0).status == "pending"


def test_state_lives_in_the_callers_mappings_and_round_trips_as_bytes() -> None:
    table: dict[bytes, bytes] = {}  # bytes only, as a changelogged table keeps them
    asm = GroupAssembler(pending=PendingTable(table, lambda: 0))
    asm.add(scored(0, reward=0.5, group_size=2), now=1.0)
    # a new worker, same state
    restarted = GroupAssembler(pending=PendingTable(table, lambda: 0), done=asm.done)
    added = restarted.add(scored(1, reward=1.0, group_size=2), now=2.0)
    assert added.status == "complete"
    assert [s.reward for s in added.group.ordered()] == [0.5, 1.0]
    assert table == {}  # a finished group leaves nothing behind


def test_pass_rate_tracker_ewma_and_recent() -> None:
    tracker = PassRateTracker(alpha=0.5, keep=2)
    assert tracker.update("t1", "toy", 1.0).ewma == 1.0  # first group sets it
    assert tracker.update("t1", "toy", 0.0).ewma == 0.5  # 0.5 * 0 + 0.5 * 1
    record = tracker.update("t1", "toy", 0.5)  # 0.5 * 0.5 + 0.5 * 0.5
    assert (record.ewma, record.last, record.groups, record.recent) == (0.5, 0.5, 3, [0.0, 0.5])
    msg = tracker.message("t1", record, policy_version=7, now=9.0)
    assert (msg.task_id, msg.pass_rate, msg.last_pass_rate, msg.groups, msg.recent) == (
        "t1",
        0.5,
        0.5,
        3,
        [0.0, 0.5],
    )
    assert msg.policy_version == 7
    assert tracker.update("t2", "toy", 0.25).ewma == 0.25  # prompts are independent


def test_keep_finished_holds_the_samples_of_finished_groups_until_forgotten() -> None:
    asm = GroupAssembler(keep_finished=True)
    for i in range(2):
        added = asm.add(scored(i, group_size=2), now=1.0)
    assert added.status == "complete"
    assert asm.done == {"g1": 1.0}
    assert len(asm.pending["g1"].samples) == 2  # kept (complete) for a re-send after a crash
    assert asm.add(scored(0, group_size=2), now=2.0).status == "late"
    asm.add(scored(0, group_id="slow"), now=0.0)
    assert [g.group_id for g in asm.expire(now=100.0, timeout_s=50.0)] == ["slow"]
    assert asm.expire(now=200.0, timeout_s=50.0) == []  # finished groups never expire again
    asm.forget("g1")
    assert "g1" not in asm.pending and "g1" in asm.done
    assert asm.prune_done(now=1000.0, ttl_s=10.0) == 2
    assert asm.pending == {} and asm.done == {}
