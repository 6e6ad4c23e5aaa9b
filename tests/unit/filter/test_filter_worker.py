"""FilterWorker without faust or a broker: what comes out on the output topics, and what a
worker taking a partition over sends again (nothing that is already there)."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from filter_builders import scored

from rollstream.schemas import DropRecord, Group, PromptStats, decode, encode
from rollstream.services.filter.advantage import grpo
from rollstream.services.filter.config import FilterConfig
from rollstream.services.filter.metrics import register
from rollstream.services.filter.pass_rate import PassObservation
from rollstream.services.filter.worker import FilterWorker, OutputTopics
from rollstream.services.runtime.metrics import BusMetrics, StageMetrics

TOPICS = OutputTopics("groups.kept", "groups.dropped", "passrate", "prompt.stats")


class ListSender:
    """Keeps what was sent: (topic, value, key, headers)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, bytes | None, Any]] = []

    def send(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None = None,
        *,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> None:
        self.sent.append((topic, value, key, headers))

    def on(self, topic: str) -> list[tuple[bytes | None, bytes | None]]:
        return [(value, key) for t, value, key, _ in self.sent if t == topic]


def worker_over(
    tables: tuple[dict[bytes, bytes], ...] | None = None, config: FilterConfig | None = None
) -> tuple[FilterWorker, ListSender, StageMetrics]:
    m = StageMetrics("filter")
    sender = ListSender()
    worker = FilterWorker(
        config or FilterConfig(),
        sender,
        TOPICS,
        BusMetrics(m),
        register(m),
        tables=tables,
        partition=lambda: 0,  # every event on source partition 0
    )
    return worker, sender, m


def feed(worker: FilterWorker, rewards: list[float], group_id: str, first_offset: int = 0) -> None:
    """One group's samples as messages of partition 0, each outcome emitted as the app does."""
    for i, r in enumerate(rewards):
        data = encode(scored(i, r, group_id=group_id, group_size=len(rewards)))
        outcome, error = worker.read(0, first_offset + i, data, now=10.0)
        assert error == ""
        if outcome is not None:
            worker.emit(outcome, 0)


def test_a_complete_group_goes_to_groups_kept_with_advantages_and_its_pass_rate() -> None:
    worker, sender, m = worker_over()
    feed(worker, [1.0, 0.0, 0.0, 1.0], "g1")
    [(value, key)] = sender.on("groups.kept")
    group = decode(value, Group)
    assert key == b"g1" and group.group_id == "g1" and len(group.samples) == 4
    assert group.advantages == pytest.approx(grpo([1.0, 0.0, 0.0, 1.0]))  # the default
    assert group.advantages[0] > 0 > group.advantages[1]
    assert sender.on("groups.dropped") == []
    [(obs_value, obs_key)] = sender.on("passrate")
    obs = msgspec.msgpack.decode(obs_value, type=PassObservation)
    assert (obs_key, obs.task_id, obs.pass_rate) == (b"t1", "t1", 0.5)

    worker.observe(obs_value, now=11.0)  # the pass_rates agent's step
    [(stats_value, stats_key)] = sender.on("prompt.stats")
    stats = decode(stats_value, PromptStats)
    assert stats_key == b"t1" and (stats.pass_rate, stats.groups) == (0.5, 1)
    counted = m.registry.get_sample_value
    assert counted("rollstream_filter_groups_kept_total") == 1
    assert counted("rollstream_filter_messages_out_total", {"topic": "groups.kept"}) == 1
    assert counted("rollstream_filter_messages_in_total", {"topic": "rollouts.scored"}) == 4


def test_an_all_same_reward_group_goes_to_groups_dropped_with_its_reason() -> None:
    worker, sender, _ = worker_over()
    feed(worker, [1.0, 1.0, 1.0, 1.0], "g2")
    assert sender.on("groups.kept") == []
    [(value, key)] = sender.on("groups.dropped")
    drop = decode(value, DropRecord)
    assert key == b"g2" and drop.filter == "zero_variance"
    assert drop.reason == "zero_variance_all_correct"
    assert sorted(drop.rollout_ids) == [f"g2/{i}" for i in range(4)]
    assert len(sender.on("passrate")) == 1  # a dropped group's pass rate counts too


def test_a_bad_message_is_a_dead_letter_and_a_late_sample_is_ignored() -> None:
    worker, sender, _ = worker_over()
    assert worker.read(0, 0, b"\x01", now=1.0)[1] != ""
    feed(worker, [1.0, 0.0], "g3", first_offset=1)
    assert worker.read(0, 3, encode(scored(0, 1.0, group_id="g3", group_size=2)), 2.0) == (None, "")
    assert len(sender.on("groups.kept")) == 1


def test_a_tick_expires_an_overdue_group_and_a_commit_forgets_finished_samples() -> None:
    worker, sender, _ = worker_over(config=FilterConfig(group_timeout_s=5.0))
    feed(worker, [1.0, 0.0, 1.0, 1.0], "done")
    worker.read(0, 4, encode(scored(0, 1.0, group_id="late")), now=10.0)
    for outcome in worker.expire(0, now=20.0):
        worker.emit(outcome, 0)
    [(value, _)] = sender.on("groups.dropped")
    assert decode(value, DropRecord).reason == "incomplete_timeout"
    assert set(worker.core.assembler.pending) == {"done", "late"}  # kept until committed
    worker.forget_committed(0, committed=4)  # finished at offset 3: 3 < 4 - 1 is false
    assert set(worker.core.assembler.pending) == {"done", "late"}
    worker.forget_committed(0, committed=5)
    assert set(worker.core.assembler.pending) == {"late"}
    worker.forget_committed(0, committed=6)
    assert set(worker.core.assembler.pending) == set()


def taken_over(tables: tuple[dict[bytes, bytes], ...]) -> tuple[FilterWorker, ListSender]:
    """A fresh worker over the same state (as recovered from the changelogs)."""
    worker, sender, _ = worker_over(tuple(dict(t) for t in tables))
    worker.assigned()
    return worker, sender


def test_a_taken_over_group_already_on_groups_kept_is_not_sent_again() -> None:
    tables: tuple[dict[bytes, bytes], ...] = ({}, {}, {})
    first, sent_before, _ = worker_over(tables)
    feed(first, [1.0, 0.0, 0.0, 1.0], "g1")  # finished at offset 3, nothing committed yet
    [(kept, _)] = sent_before.on("groups.kept")

    worker, sender = taken_over(tables)
    plan = worker.plan_reconcile(0, committed=0)
    assert set(plan.unsure) == {"g1"}
    worker.settle(plan, {("groups.kept", b"g1"): [kept]}, now=20.0)
    assert sender.sent == []  # neither the group nor its pass rate twice

    worker, sender = taken_over(tables)  # the outputs never reached the broker
    worker.settle(worker.plan_reconcile(0, committed=0), {}, now=20.0)
    assert [t for t, *_ in sender.sent] == ["groups.kept", "passrate"]
    again, before = decode(sender.on("groups.kept")[0][0], Group), decode(kept, Group)
    assert (again.samples, again.advantages) == (before.samples, before.advantages)

    worker, sender = taken_over(tables)  # committed past it: its outputs were flushed
    plan = worker.plan_reconcile(0, committed=5)
    assert plan.unsure == {}
    assert sender.sent == []


def test_a_taken_over_drop_sends_only_the_drop_records_not_found() -> None:
    tables: tuple[dict[bytes, bytes], ...] = ({}, {}, {})
    first, sent_before, _ = worker_over(tables)
    feed(first, [0.0, 0.0, 0.0, 0.0], "g4")
    [(dropped, _)] = sent_before.on("groups.dropped")
    worker, sender = taken_over(tables)
    worker.settle(worker.plan_reconcile(0, 0), {("groups.dropped", b"g4"): [dropped]}, 20.0)
    assert sender.sent == []


def test_a_pending_group_whose_outputs_are_already_out_is_marked_done() -> None:
    """Its `done` entry was lost with the dead worker: its replayed samples must be ignored."""
    tables: tuple[dict[bytes, bytes], ...] = ({}, {}, {})
    first, _, _ = worker_over(tables)
    for i in (0, 1):  # half of a group of four
        first.read(0, i, encode(scored(i, 1.0, group_id="g5")), now=10.0)
    worker, sender = taken_over(tables)
    found = {("groups.kept", b"g5"): [b"the group, sent by the dead worker"]}
    worker.settle(worker.plan_reconcile(0, committed=0), found, now=20.0)
    for i in (0, 1, 2, 3):  # the source is read again from the commit
        assert worker.read(0, i, encode(scored(i, 1.0, group_id="g5")), now=21.0) == (None, "")
    assert sender.sent == []


def test_groups_read_again_past_the_commit_are_looked_up_even_without_a_stamp_there() -> None:
    """The dead worker committed half of g6 and g7, then finished both; those table writes
    were lost, g6's outputs were not. Only the source past the commit names them."""
    tables: tuple[dict[bytes, bytes], ...] = ({}, {}, {})
    first, _, _ = worker_over(tables)
    for offset, (gid, i) in enumerate([("g6", 0), ("g6", 1), ("g7", 0), ("g7", 1)]):
        first.read(0, offset, encode(scored(i, 1.0, group_id=gid)), now=10.0)
    worker, sender = taken_over(tables)
    assert worker.plan_reconcile(0, committed=10).unsure == {}  # the stamps alone miss them
    replayed = {"g6": 11.0, "g7": 11.0, "g8": 12.0}  # g8: no state at all
    plan = worker.plan_reconcile(0, committed=10, replayed=replayed)
    assert plan.unsure == {"g6": 10.0, "g7": 10.0, "g8": 12.0}
    found = {
        ("groups.kept", b"g6"): [b"g6, sent by the dead worker"],
        ("groups.kept", b"g8"): [b"g8"],
    }
    worker.settle(plan, found, now=20.0)
    assert sender.sent == []
    for offset, (gid, i) in enumerate([("g6", 2), ("g6", 3), ("g7", 2), ("g7", 3)], start=10):
        outcome, _ = worker.read(0, offset, encode(scored(i, float(i % 2), group_id=gid)), 21.0)
        if outcome is not None:
            worker.emit(outcome, 0)
    assert [decode(v, Group).group_id for v, _ in sender.on("groups.kept")] == ["g7"]
    assert worker.read(0, 14, encode(scored(0, 1.0, group_id="g8")), now=21.0) == (None, "")
