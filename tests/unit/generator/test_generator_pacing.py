"""Pacing by the learner (rollstream/services/generator/pacing.py): how many groups a generator
samples before it waits for a new version, given what the filter keeps."""

from __future__ import annotations

from typing import Any

from rollstream.schemas import ControlUpdate
from rollstream.services.generator.pacing import Pacer, Unscored

N = 8  # samples per group


def totals(raw_groups: int, kept: int, dropped: int) -> dict[str, int]:
    return {"rollouts.raw": raw_groups * N, "groups.kept": kept, "groups.dropped": dropped}


def sampled_before_pause(p: Pacer, version: int, keep: float, start: tuple[int, int, int]):
    """Sample one group at a time, the filter finishing each at once with `keep` kept;
    return how many groups were sampled before the pacer said pause."""
    raw, kept, dropped = start
    n = 0
    acc = 0.0
    while not p.should_pause(version) and n < 10_000:
        raw += 1
        acc += keep
        if acc >= 1.0:
            kept, acc = kept + 1, acc - 1.0
        else:
            dropped += 1
        p.observe(totals(raw, kept, dropped), N)
        n += 1
    return n, (raw, kept, dropped)


def test_oversampling_samples_as_many_more_groups_as_the_filter_drops() -> None:
    for keep in (1.0, 0.5, 0.25):
        p = Pacer(batch_groups=16, ahead_batches=2, oversample=True, window=64, prior_keep=1.0)
        p.observe(totals(0, 0, 0), N)
        n, state = sampled_before_pause(p, version=0, keep=keep, start=(0, 0, 0))
        assert abs(n * keep - 32) <= 2, (keep, n)  # 2 batches of kept groups, whatever the rate
        assert p.kept >= 30
        # the learner takes a version: one more batch of kept groups may be sampled
        m, _ = sampled_before_pause(p, version=1, keep=keep, start=state)
        assert abs(m * keep - 16) <= 2, (keep, m)


def test_without_oversampling_a_fixed_number_of_groups_goes_out_per_version() -> None:
    p = Pacer(batch_groups=16, ahead_batches=2, oversample=False)
    p.observe(totals(0, 0, 0), N)
    n, state = sampled_before_pause(p, version=0, keep=0.25, start=(0, 0, 0))
    assert n == 32  # only 8 of them kept: the learner will wait
    m, _ = sampled_before_pause(p, version=1, keep=0.25, start=state)
    assert m == 16


def test_groups_in_flight_count_at_the_keep_rate_and_counts_start_at_the_first_probe() -> None:
    p = Pacer(batch_groups=10, ahead_batches=1, oversample=True, window=40)
    # a fresh run (version 0) on topics that hold an earlier run's traffic: only what comes
    # after counts
    p.observe(totals(1000, 300, 700), N)
    assert not p.should_pause(0)
    # 40 groups finished, 10 kept: keep rate 0.25; 20 more sampled and not yet finished
    p.observe(totals(1060, 310, 730), N)
    assert p.keep_rate == 0.25
    assert p.expected_kept() == 10 + 0.25 * 20
    assert p.should_pause(0)  # 15 expected >= 10 * (0 versions + 1 batch ahead)
    assert not p.should_pause(1)  # the learner moved on a version: target 20
    assert p.should_pause(1, unseen_groups=20.0)  # 20 groups sent since the probe: 5 more


def paced_lead(join_at: int | None, restart_at: int | None, versions: int = 30) -> list[int]:
    """Replica A paces from the run's start; replica B joins at version `join_at`, or A is
    replaced by a fresh pacer (a restart) at `restart_at`. Each version every replica samples
    group by group until its pacer says pause (probing after each group; the filter keeps
    every other group at once), then the learner trains one batch of 16. The lead (kept
    groups not yet trained) after sampling, per version."""
    b, ahead = 16, 3
    raw = kept = dropped = 0
    pacers = [Pacer(batch_groups=b, ahead_batches=ahead, window=64, prior_keep=0.5)]
    leads = []
    for version in range(versions):
        if version == join_at:
            pacers.append(Pacer(batch_groups=b, ahead_batches=ahead, window=64, prior_keep=0.5))
        if version == restart_at:
            pacers[0] = Pacer(batch_groups=b, ahead_batches=ahead, window=64, prior_keep=0.5)
        for p in pacers:
            p.observe(totals(raw, kept, dropped), N)
            while not p.should_pause(version):
                raw += 1
                kept, dropped = (kept + 1, dropped) if raw % 2 else (kept, dropped + 1)
                for q in pacers:  # every replica's probe sees the same topic totals
                    q.observe(totals(raw, kept, dropped), N)
        leads.append(kept - b * version)
    return leads


def test_a_replica_that_joins_or_restarts_in_a_running_run_counts_the_lead_on_its_way() -> None:
    """A replica added at version 10 (scaling out) or one restarted there finds a lead of 3
    batches already on its way. Counted from its own first probe, it would sample 3 batches
    more on top, for the rest of the run: 6 batches ahead, staler samples, and replay would
    expire what aged past the staleness bound."""
    alone = paced_lead(None, None)
    assert alone[5:] == [48] * 25  # 3 batches of 16 ahead
    for joined in (paced_lead(10, None), paced_lead(None, 10)):
        assert max(joined) <= 49, joined  # still 3 batches ahead, not 6


def paced_after_live_change(resize: bool, rounds: int = 30) -> tuple[list[int], int]:
    """A run paced for 16 kept groups a version (3 ahead); from round 10 on the learner takes
    32 a version (`rollstream control replay batch_groups=32`). Each round the generator
    samples until its pacer says pause (the filter keeps every other group at once), then the
    learner trains if a full batch is there (a new version), else waits. The lead (kept groups
    not yet trained) per round, and the rounds the learner waited."""
    b, version, trained, waited = 16, 0, 0, 0
    raw = kept = dropped = 0
    p = Pacer(batch_groups=b, ahead_batches=3, window=64, prior_keep=0.5)
    leads = []
    for r in range(rounds):
        if r == 10:
            b = 32
            if resize:
                p.resize(b, version)
        p.observe(totals(raw, kept, dropped), N)
        while not p.should_pause(version):
            raw += 1
            kept, dropped = (kept + 1, dropped) if raw % 2 else (kept, dropped + 1)
            p.observe(totals(raw, kept, dropped), N)
        if kept - trained >= b:
            trained, version = trained + b, version + 1
        else:
            waited += 1
        leads.append(kept - trained)
    return leads, waited


def test_a_live_change_of_the_groups_a_version_takes_moves_the_pacing_with_it() -> None:
    """Paced for the old size, the lead drains in a few versions and the learner waits from
    then on (in a run, for a pause to run out: `version_wait_s`); resized, the generator keeps
    3 batches of the new size ahead and the learner never waits."""
    leads, waited = paced_after_live_change(resize=True)
    assert waited == 0
    assert leads[5:10] == [48 - 16] * 5  # 3 batches of 16 ahead, one just trained
    assert leads[15:] == [96 - 32] * 15  # 3 batches of 32 ahead, one just trained
    _, waited_old = paced_after_live_change(resize=False)
    assert waited_old >= 15  # what the generator did before it followed the knobs


def test_the_lead_at_start_counts_kept_groups_untrained_and_groups_in_flight() -> None:
    from rollstream.services.generator.pacing import UNUSED

    p = Pacer(batch_groups=16, ahead_batches=3, prior_keep=0.5)
    # version 20: 320 groups trained; 340 kept, 4 of them expired by replay -> 16 waiting;
    # 700 groups sampled, 340 kept + 340 dropped by the filter -> 20 in flight (10 at 0.5)
    p.observe({**totals(700, 340, 344), UNUSED: 4}, N)
    assert p.lead_at_start(20) == 16 + 10
    assert p.target(20) == 16 * 3 - 26
    assert p.lead_at_start(0) == 0  # a fresh run starts from nothing
    assert p.lead_at_start(1) == 48  # at most ahead_batches' worth (an earlier run's traffic)
    # with the scorers' lag (40 rollouts: 5 groups) the groups in flight are those, not
    # sampled less finished over the run (which counts every rollout sent twice by a crash)
    q = Pacer(batch_groups=16, ahead_batches=3, prior_keep=0.5)
    q.observe({**totals(700, 340, 344), UNUSED: 4}, N, raw_lag=40)
    assert q.lead_at_start(20) == 16 + 0.5 * 5


def test_no_probe_yet_means_sample() -> None:
    p = Pacer(batch_groups=16, ahead_batches=0.5)
    assert not p.should_pause(0, unseen_groups=1_000)


def test_garbage_that_went_to_a_dead_letter_topic_is_not_counted_as_sampled_or_kept() -> None:
    """1,000 undecodable records on groups.kept and rollouts.raw, dead-lettered by their
    consumers, must not make the learner look served: the generator keeps sampling."""
    p = Pacer(batch_groups=16, ahead_batches=2, oversample=True, window=64, prior_keep=1.0)
    p.observe(totals(0, 0, 0), N)
    poisoned = {**totals(0, 1000, 0), "rollouts.raw": 1000}
    p.observe(poisoned, N)
    assert p.should_pause(0)  # counted raw, garbage looks like 1,000 kept groups
    p.observe({**poisoned, "groups.kept.dlq": 1000, "rollouts.raw.dlq": 1000}, N)
    assert (p.kept, p.sampled) == (0, 0)
    assert not p.should_pause(0)


def test_groups_replay_drops_untrained_are_sampled_again_not_counted_as_on_their_way() -> None:
    """Expired groups were kept once and will never be trained. Counted as kept (as before),
    each moved the target a group out of reach for the rest of the run: locally, 38 expired
    groups left the learner waiting 37 % of a 70 s run while pacing held the generator back."""
    from rollstream.services.generator.pacing import UNUSED

    def probe(raw: int, kept: int, dropped: int, unused: int) -> dict[str, int]:
        return {**totals(raw, kept, dropped), UNUSED: unused}

    p = Pacer(batch_groups=16, ahead_batches=2, oversample=True, window=64, prior_keep=0.5)
    p.observe(probe(0, 0, 0, 0), N)
    # 64 groups sampled and finished by the filter: 32 kept, 32 dropped -> 2 batches ahead
    p.observe(probe(64, 32, 32, 0), N)
    assert p.should_pause(0)
    # replay expires 10 of the kept ones: its DropRecords land on groups.dropped too
    p.observe(probe(64, 32, 42, 10), N)
    assert p.keep_rate == 0.5  # the filter's keep rate, not moved by replay's drops
    assert p.expected_kept() == 22  # usable: 32 kept - 10 expired; nothing in flight
    assert not p.should_pause(0)  # 10 usable groups short: sample again
    raw, kept, dropped, n = 64, 32, 42, 0
    while not p.should_pause(0) and n < 1000:  # the filter keeps every other group
        raw, n = raw + 1, n + 1
        kept, dropped = (kept + 1, dropped) if n % 2 else (kept, dropped + 1)
        p.observe(probe(raw, kept, dropped, 10), N)
    assert 18 <= n <= 22, n  # 10 more kept groups, at a keep rate of 0.5


def test_a_batch_sized_to_fill_a_learner_batch_follows_the_keep_rate_within_its_bounds() -> None:
    for keep, want in ((1.0, 16), (0.5, 32), (0.8, 20), (0.25, 48)):
        p = Pacer(batch_groups=16, ahead_batches=2, oversample=True, window=64, prior_keep=1.0)
        p.observe(totals(0, 0, 0), N)
        sampled_before_pause(p, version=0, keep=keep, start=(0, 0, 0))
        assert p.batch_prompts(8, 48) == want, keep
    assert p.batch_prompts(8, 40) == 40  # at most the upper bound
    assert p.batch_prompts(64, 80) == 64  # at least the lower one
    fixed = Pacer(batch_groups=16, ahead_batches=2, oversample=False, prior_keep=0.25)
    assert fixed.batch_prompts(8, 48) == 16  # without oversampling every group counts as kept


class Follower:
    """The newest ControlUpdate of a stage, as runtime.stage.Follower keeps it."""

    def __init__(self) -> None:
        self.latest: object = None
        self.seq = 0

    def publish(self, params: dict, revision: int) -> None:
        self.latest = ControlUpdate(
            stage="learner", params=params, revision=revision, produced_at=0
        )
        self.seq += 1


class Producer:
    """What a stage sends, as (topic, message, key)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, ControlUpdate, str]] = []

    def send(self, topic: str, msg: ControlUpdate, key: str) -> None:
        self.sent.append((topic, msg, key))


def test_pacing_follows_what_the_learner_applied_not_a_revision_it_refused() -> None:
    """A revision not from `rollstream control` (which checks it first) that the learner
    refuses whole for its bad lr: the generator keeps pacing by the publish_every the learner
    runs, then follows the next revision the learner applies."""
    from rollstream.services.generator.service import _groups_per_version, take_answers
    from rollstream.services.learner.config import LIVE_KNOBS, LearnerConfig, validate_control
    from rollstream.services.runtime.config import RunConfig
    from rollstream.services.runtime.knobs import LiveKnobs

    cfg = RunConfig(replay={"batch_groups": 2}, learner={"publish_every": 1})
    control, producer = Follower(), Producer()
    knobs = LiveKnobs(
        "learner",
        LearnerConfig(publish_every=1),
        validate_control,
        lambda cfg, changed: None,
        LIVE_KNOBS,
        follower=control,
        producer=producer,
    )

    def paced() -> int:  # the generator's kept groups a version, from the answers so far
        for topic, answer, key in producer.sent:
            assert (topic, key, answer.stage, answer.applied) == (
                "control", "learner.applied", "learner", True
            )  # fmt: skip
        applied: dict[str, dict[str, int]] = {}
        take_answers(applied, [answer for _, answer, _ in producer.sent])
        return _groups_per_version(cfg, applied)

    knobs.poll()  # the run's config
    assert [m.revision for _, m, _ in producer.sent] == [0]
    assert paced() == 2

    control.publish({"publish_every": 4, "lr": -1.0}, revision=1)
    knobs.poll()
    assert knobs.current.publish_every == 1  # refused whole
    assert [m.revision for _, m, _ in producer.sent] == [0]  # nothing answered
    assert paced() == 2

    control.publish({"publish_every": 4, "lr": 0.01}, revision=2)
    knobs.poll()
    assert [m.revision for _, m, _ in producer.sent] == [0, 2]
    assert producer.sent[-1][1].params["lr"] == 0.01  # every live knob in force
    assert paced() == 2 * 4


def test_pacing_ignores_an_answer_no_stage_would_write() -> None:
    """Pacing reads replay's batch_groups and the learner's publish_every from their answers;
    one some other writer forged with a value they would refuse is ignored, not a crash."""
    from rollstream.services.generator.service import _pacing_knobs

    def answer(stage: str, params: dict) -> ControlUpdate:
        return ControlUpdate(stage=stage, params=params, applied=True, produced_at=0)

    assert _pacing_knobs(answer("replay", {"batch_groups": 4, "beta": 0.5})) == {"batch_groups": 4}
    assert _pacing_knobs(answer("learner", {"publish_every": 2})) == {"publish_every": 2}
    assert _pacing_knobs(answer("learner", {"lr": 0.1})) == {}
    for bad in ("four", 0, 2.5, True, None):
        assert "not a whole number" in str(_pacing_knobs(answer("replay", {"batch_groups": bad})))


def answering_learner(publish_every: int) -> tuple[Follower, Producer, Any]:
    """The learner's LiveKnobs with a follower that has not yet read `control` to its end."""
    import threading

    from rollstream.services.learner.config import LIVE_KNOBS, LearnerConfig, validate_control
    from rollstream.services.runtime.knobs import LiveKnobs

    control, producer = Follower(), Producer()
    control.caught_up = threading.Event()  # type: ignore[attr-defined]
    knobs = LiveKnobs(
        "learner",
        LearnerConfig(publish_every=publish_every),
        validate_control,
        lambda cfg, changed: None,
        LIVE_KNOBS,
        follower=control,
        producer=producer,
    )
    return control, producer, knobs


def test_a_stage_answers_the_run_config_only_once_it_has_read_control_to_its_end() -> None:
    """A resumed run: the learner's revision of the earlier session is still on its way when
    the learner first polls. Answering the run's config then, and the revision a moment later,
    would resize every generator's pacing back and forth; it answers once, with the revision."""
    control, producer, knobs = answering_learner(publish_every=1)
    knobs.poll()
    assert producer.sent == []  # control not read to its end yet
    control.publish({"publish_every": 4}, revision=3)
    control.caught_up.set()  # type: ignore[attr-defined]
    knobs.poll()
    knobs.poll()
    assert [(m.revision, m.params["publish_every"]) for _, m, _ in producer.sent] == [(3, 4)]


def test_a_stage_with_nothing_on_control_answers_its_run_config() -> None:
    """A new run: control is empty; once read to its end the stage answers revision 0."""
    control, producer, knobs = answering_learner(publish_every=2)
    knobs.poll()
    control.caught_up.set()  # type: ignore[attr-defined]
    knobs.poll()
    knobs.poll()
    assert [(m.revision, m.params["publish_every"]) for _, m, _ in producer.sent] == [(0, 2)]


def test_unscored_rollouts_are_not_read_from_the_committed_lag_alone() -> None:
    est = Unscored(window_s=10.0)
    # just after a scorer commit the two readings agree: 100 wait
    assert est.read({"rollouts.raw": 1_000, "rollouts.scored": 900}, 100, now=0.0) == 100
    # 3 s on, the scorers scored 3,900 more and have not committed: 100 still wait
    totals = {"rollouts.raw": 5_000, "rollouts.scored": 4_900}
    assert est.read(totals, committed_lag=4_000, now=3.0) == 100
    # dead-lettered raw rollouts are never scored: not waiting
    assert est.read({**totals, "rollouts.raw.dlq": 100}, committed_lag=4_000, now=3.5) == 0


def test_unscored_rollouts_count_what_a_crashed_scorer_scored_twice() -> None:
    """A scorer that crashed before its commit scores those rollouts again: rollouts.scored
    holds 300 of them twice, and raw less scored reads 300 low for the rest of the run."""
    est = Unscored(window_s=10.0)
    scored_twice = 300
    for t in range(0, 30, 3):  # a commit every 3 s, 50 rollouts waiting at each
        totals = {"rollouts.raw": 10_000 + 1_000 * t, "rollouts.scored": 10_000 + 1_000 * t}
        totals["rollouts.scored"] += scored_twice - 50
        assert est.read(totals, committed_lag=50, now=float(t)) == 50
        # between two commits the committed lag reads high, the estimate does not
        assert est.read(totals, committed_lag=2_050, now=t + 1.5) == 50
    # a first reading cannot tell scored-not-committed from scored twice: the committed lag
    assert Unscored().read({"rollouts.raw": 5_000, "rollouts.scored": 4_900}, 4_000, 0.0) == 4_000


def test_unscored_rollouts_catch_up_with_a_crash_once_the_window_has_passed() -> None:
    """Before the crash the gap at each commit is 0; after it, 300 (scored twice). Until the
    old gaps leave the window the estimate reads 300 low; then it is right again."""
    est = Unscored(window_s=6.0)
    for t in range(0, 12, 3):  # commits every 3 s, 50 waiting: raw - scored = 50
        assert est.read({"rollouts.raw": 1_000 * t + 50, "rollouts.scored": 1_000 * t}, 50, t) == 50
    # t=12: the scorer crashed and scored 300 of its rollouts again
    reads = []
    for t in range(12, 24, 3):
        totals = {"rollouts.raw": 1_000 * t + 50, "rollouts.scored": 1_000 * t + 300}
        reads.append(est.read(totals, committed_lag=50, now=float(t)))
    assert reads[0] == 0  # low: the window still holds the gaps from before the crash
    assert reads[-1] == 50  # t=21: only gaps after the crash are left


def test_unscored_rollouts_never_read_more_than_the_committed_lag() -> None:
    est = Unscored()
    # raw rollouts a scorer group committed past without scoring (offsets reset): the totals
    # read high, the committed lag holds
    assert est.read({"rollouts.raw": 5_000, "rollouts.scored": 4_000}, 16, now=0.0) == 16
    # no rollouts.scored topic to read: the committed lag
    assert est.read({"rollouts.raw": 5_000}, 700, now=1.0) == 700
