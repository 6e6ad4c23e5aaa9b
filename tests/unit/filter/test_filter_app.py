"""The filter app's glue without a broker: decoding, counting, table views."""

from __future__ import annotations

from filter_builders import scored

from rollstream.schemas import encode
from rollstream.services.filter.app import FilterStage
from rollstream.services.filter.assembly import GroupAssembler
from rollstream.services.filter.config import FilterConfig
from rollstream.services.filter.core import FilterCore
from rollstream.services.filter.metrics import register
from rollstream.services.filter.tables import PendingTable, TableView
from rollstream.services.runtime.metrics import StageMetrics


def value(m: StageMetrics, name: str, **labels: str) -> float:
    return m.registry.get_sample_value(name, labels) or 0.0


def test_stage_decodes_assembles_and_counts() -> None:
    m = StageMetrics("filter")
    stage = FilterStage(FilterCore(track_pass_rates=False), register(m))
    outcomes = []
    for group, rewards in (("a", [1, 0, 0, 1]), ("b", [1, 1, 1, 1])):
        for i, r in enumerate(rewards):
            outcome, error = stage.add(encode(scored(i, float(r), group_id=group)), now=5.0)
            assert error == ""
            if outcome is not None:
                stage.count(outcome)
                outcomes.append(outcome)
    assert [o.group is not None for o in outcomes] == [True, False]
    assert outcomes[0].prompt_stats is None and outcomes[0].pass_rate == 0.5
    assert stage.add(encode(scored(0, 1.0, group_id="a")), now=6.0) == (None, "")  # late
    outcome, error = stage.add(b"\x01", now=6.0)
    assert outcome is None and "malformed bytes" in error
    assert value(m, "rollstream_filter_groups_kept_total") == 1
    assert value(m, "rollstream_filter_samples_kept_total") == 4
    reason = {"filter": "zero_variance", "reason": "zero_variance_all_correct"}
    assert value(m, "rollstream_filter_groups_dropped_total", **reason) == 1
    assert value(m, "rollstream_filter_samples_dropped_total", **reason) == 4
    assert value(m, "rollstream_filter_zero_variance_ratio", kind="all_correct") == 0.5
    assert value(m, "rollstream_filter_samples_ignored_total", why="late") == 1


def test_a_knob_removed_from_the_control_revision_goes_back_to_the_run_value() -> None:
    run = FilterConfig(chain=[{"name": "stale", "params": {"max_lag": 4}}], min_samples=3)
    stage = FilterStage(FilterCore(run))
    stage.knobs.poll()  # no follower: puts the run's config in force
    knobs = {"estimator": "rloo", "min_samples": 5, "pass_rate_alpha": 0.5}
    assert stage.knobs.update({**knobs, "chain": {"stale": {"max_lag": 0}}}, 1)
    core = stage.core
    assert (core.config.estimator, core.config.min_samples) == ("rloo", 5)
    assert core.chain.filters[0].params.max_lag == 0 and core.tracker.alpha == 0.5
    assert stage.knobs.update(knobs, 2)  # `--unset chain`
    assert core.chain.filters[0].params.max_lag == 4 and core.config.estimator == "rloo"
    assert stage.knobs.update({}, 3)  # every knob unset
    assert core.config == run and core.tracker.alpha == run.pass_rate_alpha


def test_bad_control_revisions_are_refused_and_counted_and_change_nothing() -> None:
    m = StageMetrics("filter")
    run = FilterConfig(chain=[{"name": "stale", "params": {"max_lag": 4}}])
    stage = FilterStage(FilterCore(run), register(m))
    assert stage.knobs.update({"estimator": "rloo"}, 1)
    for bad in (
        {"estimator": "ppo", "min_samples": 4},
        {"chain": {"stale": {"max_lag": -1}}, "min_samples": 4},
        {"chain": {"pods": {"m": 2}}},  # not in the run's chain
        {"tick_s": 5},  # not a live knob
    ):
        assert not stage.knobs.update(bad, 2)
    core = stage.core
    assert (core.config.estimator, core.config.min_samples) == ("rloo", 2)
    assert core.chain.filters[0].params.max_lag == 4
    assert value(m, "rollstream_filter_control_updates_total", result="refused") == 4
    assert value(m, "rollstream_filter_control_updates_total", result="applied") == 1


def test_a_filter_keeps_its_state_across_knob_changes_that_keep_it_in_the_chain() -> None:
    counting = {"name": "filter_builders:Counting", "params": {"limit": 7}}
    run = FilterConfig(chain=[counting, {"name": "zero_variance"}], min_samples=2)
    stage = FilterStage(FilterCore(run))
    flt = stage.core.chain.filters[0]
    for i, r in enumerate([1, 0, 0, 1]):
        stage.add(encode(scored(i, float(r))), now=5.0)
    assert flt.seen == 1
    assert stage.knobs.update({"min_samples": 3}, 1)  # another field
    assert stage.knobs.update({"chain": {"counting": {"limit": 9}}}, 2)  # its own params
    assert stage.core.chain.filters[0] is flt and flt.seen == 1 and flt.params.limit == 9
    pods = {"name": "pods", "params": {"m": 2}}
    assert stage.knobs.update({"chain": [pods, counting]}, 3)  # a new chain with it
    assert stage.core.chain.filters[1] is flt and flt.params.limit == 7
    assert stage.knobs.update({}, 4)
    assert stage.core.chain.filters[0] is flt and flt.seen == 1 and flt.params.limit == 7
    for i, r in enumerate([1, 0, 0, 1]):
        stage.add(encode(scored(i, float(r), group_id="g2")), now=6.0)
    assert flt.seen == 2
    relabelled = {**counting, "label": "other"}  # another filter of the same class
    assert stage.knobs.update({"chain": [relabelled]}, 5)
    assert stage.core.chain.filters[0] is not flt and stage.core.chain.filters[0].seen == 0


def test_pending_table_tags_entries_with_their_partition() -> None:
    table: dict[bytes, bytes] = {}
    current = {"p": 3}
    pending = PendingTable(table, lambda: current["p"])
    asm = GroupAssembler(pending, TableView({}, float, lambda: current["p"]))
    asm.add(scored(0, group_id="a"), now=1.0)
    current["p"] = 5
    asm.add(scored(0, group_id="b"), now=1.0)
    assert set(table) == {b"a\x00a/0", b"b\x00b/0"}  # bytes keys, as a changelog gives them
    assert list(pending) == ["b"] and len(pending) == 1  # only this partition's entries
    current["p"] = 3
    assert [g.group_id for g in asm.expire(now=100.0, timeout_s=10.0)] == ["a"]
    assert set(table) == {b"b\x00b/0"}  # partition 5's group untouched by partition 3's tick
    assert pending["b"].group_id == "b"  # direct lookups see every partition
    current["p"] = None
    assert list(pending) == ["b"]  # outside an event: everything


def test_a_stamped_table_view_keeps_the_stamp_taken_at_each_write() -> None:
    stamp = {"v": 7}
    view = TableView({}, float, lambda: 3, lambda: stamp["v"])
    view["g"] = 1.5
    stamp["v"] = 9
    view["h"] = 2.5
    assert (view["g"], view.stamp_of("g"), view["h"], view.stamp_of("h")) == (1.5, 7, 2.5, 9)
    view["g"] = 4.0
    assert view.stamp_of("g") == 9 and sorted(view) == ["g", "h"]


def test_a_table_view_reads_values_written_underneath_once_told_to_forget_its_cache() -> None:
    """The view caches decoded values; a changelog recovery writes the table directly, and
    the app calls forget_cache on every assignment and revocation."""
    table: dict[bytes, bytes] = {}
    view = TableView(table, float, lambda: 0)
    other = TableView(table, float, lambda: 0)  # stands in for the changelog recovery
    view["g"] = 1.0
    other["g"] = 2.0
    assert view["g"] == 1.0  # cached
    view.forget_cache()
    assert view["g"] == 2.0
    del other["g"]
    assert view["g"] == 2.0  # cached until told
    view.forget_cache()
    assert "g" not in view
    view["h"] = 3.0
    del view["h"]
    assert "h" not in view and table == {}


class Changelog(dict):  # type: ignore[type-arg]
    """A bytes table that records what a changelog would carry: (key, value or None)."""

    def __init__(self) -> None:
        super().__init__()
        self.log: list[tuple[bytes, bytes | None]] = []

    def __setitem__(self, key: bytes, value: bytes) -> None:
        self.log.append((key, value))
        super().__setitem__(key, value)

    def __delitem__(self, key: bytes) -> None:
        self.log.append((key, None))
        super().__delitem__(key)


def test_a_pending_group_costs_its_changelog_each_sample_once() -> None:
    """n samples: n writes of one sample each and, when the group is forgotten, n tombstones;
    not the whole group again on every arrival (n(n+1)/2 samples)."""
    table = Changelog()
    stamp = {"v": 0}
    pending = PendingTable(table, lambda: 0, lambda: stamp["v"])
    asm = GroupAssembler(pending, TableView({}, float, lambda: 0), keep_finished=True)
    one = len(pending._encoder.encode((0, scored(7, group_size=8), 0, 0.0)))
    for i in range(8):
        stamp["v"] = 100 + i
        asm.add(scored(i, reward=float(i % 2), group_size=8), now=1.0 + i)
    assert len(table.log) == 8 and all(v is not None for _, v in table.log)
    assert max(len(v or b"") for _, v in table.log) <= one + 8  # one sample per write
    assert pending.stamp_of("g1") == 107 and pending["g1"].complete
    asm.forget("g1")
    assert [v for _, v in table.log[8:]] == [None] * 8 and table == {} and "g1" not in pending


def test_a_pending_table_read_back_from_its_table_has_the_same_groups() -> None:
    """What a restarted worker sees after the changelog recovery: the groups, their samples,
    first_seen, the newest stamp of each and the partition each belongs to."""
    table: dict[bytes, bytes] = {}
    current, stamp = {"p": 2}, {"v": 10}
    pending = PendingTable(table, lambda: current["p"], lambda: stamp["v"])
    asm = GroupAssembler(pending, TableView({}, float, lambda: current["p"]))
    asm.add(scored(0, reward=1.0, group_id="a"), now=5.0)
    stamp["v"] = 11
    asm.add(scored(2, reward=0.0, group_id="a"), now=6.0)
    current["p"], stamp["v"] = 4, 12
    asm.add(scored(1, reward=1.0, group_id="b"), now=7.0)

    again = PendingTable(table, lambda: current["p"], lambda: stamp["v"])
    current["p"] = None
    assert sorted(again) == ["a", "b"]
    for gid in ("a", "b"):
        assert again[gid] == pending[gid]  # samples, first_seen, task and group size
    assert [s.rollout.sample_index for s in again["a"].ordered()] == [0, 2]
    assert (again["a"].first_seen, again.stamp_of("a"), again.stamp_of("b")) == (5.0, 11, 12)
    current["p"] = 4
    assert list(again) == ["b"] and len(again) == 1
    again.forget_cache()  # a later recovery wrote underneath: read again
    del table[next(k for k in table if k.startswith(b"b"))]
    assert "b" not in again and list(again) == []
