"""Pacing sampling by the learner: sample until enough *kept* groups are on their way for the
learner's next `ahead_batches` batches, then wait for a new policy version. Pure: no I/O (the
generator feeds it topic counts from runtime/admin.FlowProbe and its own sends).

Why. The learner takes `batch_groups` kept groups per version (replay hands out full
batches). If the generators sample far more than that, what they sample ages past
`staleness.max_versions` and is dropped unused; if they sample less, the learner waits. A
fixed rollout budget per version (`staleness.rollouts_per_version`) cannot be right for long:
the share of groups the filter keeps moves as the policy learns (zero-variance groups grow as
prompts get solved). So the target is counted in kept groups:

    expected kept groups since start  <  batch_groups * (versions since start + ahead_batches)

where expected kept = groups already kept + keep_rate * groups still in flight (sampled, not
yet kept or dropped), keep_rate = kept / (kept + dropped) over a recent window of
`groups.kept` / `groups.dropped` — over-sampling exactly as much as the filter drops (DAPO's
dynamic sampling, done as a stream). `oversample=False` counts every sampled group as kept
(a fixed number of groups per version, whatever the filter drops).

Every count is global (topic end offsets), so several generator replicas share one target.
A partial or lost batch makes the learner look further behind than it is (more sampling).
Groups that replay drops untrained (expired past `staleness.max_versions`, or evicted) were
counted as kept and will never be trained: they are taken off the kept groups, and off the
drops on `groups.dropped` (which also holds the filter's), by their own count (`UNUSED`, the
generator counts replay's DropRecords). Counted as kept, each one moved the target a group
further out of reach for the rest of the run: with 38 expired groups in a 70-second run here
the learner waited 37 % of its time while pacing held the generator back 34 %.

`ahead_batches` counts what the learner holds too: with `learner.prefetch: 1` one batch is
training and one waits in its queue, so 3 ahead leaves about one batch on its way.

A pacer that starts in a running run (a replica added to scale out, or one restarted after a
crash) finds a lead already on its way: the other replicas' (they keep `ahead_batches`), or
what its own last life sampled. Counted from its first probe alone, that lead would be
invisible and the new replica would sample `ahead_batches` more on top of it, for the rest of
the run (the counts are relative, so the excess never drains: it ages past
`staleness.max_versions` in replay and is sampled again). So a pacer whose first version is
past 0 takes the lead at start off its target (`lead_at_start`). One that starts at version 0
(a fresh run) starts from nothing: topics that hold an earlier run's traffic are ignored then.

Groups a version follow the live knobs (`resize`): `rollstream control replay batch_groups=32`
in a run paced for 16 a version left the generator sampling half of what the learner took, its
lead drained in 3 versions, and from then on each batch came only when a pause ran out
(`version_wait_s`, 10 s).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

PACED_TOPICS = ("rollouts.raw", "groups.kept", "groups.dropped")
UNUSED = "replay.unused"
"""Key in `observe`'s totals: groups replay has dropped untrained (DropRecords it wrote)."""


@dataclass
class Unscored:
    """Rollouts on `rollouts.raw` the scorers have not yet scored, from each probe's topic
    totals and the scorer group's committed lag.

    The committed lag alone reads high by what the scorers scored since their last commit
    (faust commits every ~2.8 s): a GPU generator sending 1,600 rollouts a second read ~4,000
    rollouts of lag while the scorer's own lag was ~0, and `max_raw_lag` (4,096) paused it 20 %
    of its time. Every raw rollout becomes one `rollouts.scored` message or one dead letter on
    `rollouts.raw.dlq`, so raw less its dead letters less scored is the true count, less the
    rollouts scored twice (a scorer that crashed before its commit scores them again), a count
    that only grows. So the estimate is that difference plus the twice-scored count, taken as
    the smallest gap between the two readings over the last `window_s` (right after a commit
    the gap is that count alone), and never more than the committed lag.

    Where it reads off: with several scorer replicas, which commit at different moments, the
    gap never falls to the twice-scored count alone and the estimate reads high by what the
    others scored since their commits (still less than the committed lag); for `window_s`
    after a scorer crash it reads low by what that scorer had scored and not committed, until
    the gap from before the crash leaves the window; the first probe of a generator (nothing
    to compare yet) reads the committed lag."""

    window_s: float = 6.0
    """Seconds of readings the smallest gap is taken over: two of faust's commit intervals."""
    _gaps: deque[tuple[float, int]] = field(default_factory=deque)

    def read(self, totals: dict[str, int], committed_lag: int, now: float) -> int:
        if "rollouts.scored" not in totals:
            return committed_lag
        by_totals = good(totals, "rollouts.raw") - totals["rollouts.scored"]
        self._gaps.append((now, committed_lag - by_totals))
        while self._gaps and self._gaps[0][0] < now - self.window_s:
            self._gaps.popleft()
        twice = max(0, min(gap for _, gap in self._gaps))
        return max(0, min(committed_lag, by_totals + twice))


def good(totals: dict[str, int], topic: str) -> int:
    """Messages on `topic` that its consumer could decode: the end offset less what went to
    `<topic>.dlq`. Garbage written to a topic (a hostile or broken producer) is dead-lettered
    by the topic's consumer; counted raw, it would look like kept or sampled groups and
    stall sampling (the fault suite's poison run trained 38 steps that way)."""
    return totals.get(topic, 0) - totals.get(f"{topic}.dlq", 0)


@dataclass
class Pacer:
    batch_groups: int
    ahead_batches: float
    oversample: bool = True
    window: int = 256
    """Finished groups (kept + dropped) the keep rate is measured over."""
    prior_keep: float = 0.5
    """Keep rate assumed until `window / 4` groups have finished."""
    min_keep: float = 0.05
    start: dict[str, int] | None = None
    version0: int | None = None
    keep_rate: float = field(init=False)
    kept: int = 0  # kept groups since start
    finished: int = 0  # kept + dropped groups since start (by the filter)
    unused: int = 0  # kept groups replay dropped untrained since start
    sampled: float = 0.0  # sampled groups since start (all generators), at the last probe
    lead0: float = 0.0  # kept groups expected from what was on its way at start
    _size0: float = 8.0  # samples per group at the first probe
    _lag0: int | None = None  # rollouts on rollouts.raw not yet scored, at the first probe
    _hist: deque[tuple[int, int]] = field(default_factory=lambda: deque(maxlen=4096))
    _base: float = 0.0  # kept groups the versions before `_from` took (resize)
    _from: int | None = None  # the version `batch_groups` holds from

    def __post_init__(self) -> None:
        self.keep_rate = self.prior_keep

    def observe(
        self, totals: dict[str, int], group_size: float, raw_lag: int | None = None
    ) -> None:
        """A probe: total messages ever on rollouts.raw, groups.kept, groups.dropped and
        their dead-letter topics (`good` counts the difference), and under UNUSED the groups
        replay dropped untrained; `raw_lag`: rollouts the scorers have not yet taken."""
        totals = {**{t: good(totals, t) for t in PACED_TOPICS}, UNUSED: totals.get(UNUSED, 0)}
        if self.start is None:
            self.start, self._size0 = dict(totals), max(group_size, 1.0)
            self._lag0 = raw_lag
        s = self.start
        unused = totals[UNUSED] - s[UNUSED]
        kept = totals["groups.kept"] - s["groups.kept"]
        dropped = totals["groups.dropped"] - s["groups.dropped"] - unused  # the filter's
        self.finished = kept + dropped  # groups the filter is done with
        self.kept = kept - unused  # ... and of its kept ones, those still to be trained
        self.unused = unused
        raw = totals["rollouts.raw"] - s["rollouts.raw"]
        self.sampled = raw / max(group_size, 1.0)
        self._hist.append((kept, self.finished))
        while len(self._hist) > 2 and self.finished - self._hist[1][1] >= self.window:
            self._hist.popleft()
        k0, f0 = self._hist[0]
        if self.finished - f0 >= self.window // 4:  # the filter's keep rate
            rate = (kept - k0) / (self.finished - f0)
            self.keep_rate = min(1.0, max(self.min_keep, rate))

    def expected_kept(self, unseen_groups: float = 0.0) -> float:
        """Kept groups expected from everything sampled since start; `unseen_groups`: groups
        sent since the last probe (not in its counts yet)."""
        in_flight = max(0.0, self.sampled - self.finished) + unseen_groups
        if not self.oversample:
            return self.finished - self.unused + in_flight
        return self.kept + self.keep_rate * in_flight

    def target(self, version: int) -> float:
        """Kept groups the learner can use by the time it has moved `ahead_batches` past
        `version` (counted from the first version this pacer saw), less the lead that was
        already on its way then."""
        if self.version0 is None:
            self.version0 = self._from = version
            self.lead0 = self.lead_at_start(version)
        assert self._from is not None
        versions = version - self._from
        return self._base + self.batch_groups * (versions + self.ahead_batches) - self.lead0

    def resize(self, batch_groups: int, version: int) -> None:
        """The learner takes `batch_groups` kept groups a version from `version` on (a live
        change of replay's batch_groups or the learner's publish_every): the versions before
        keep what they took, the lead becomes `ahead_batches` of the new size."""
        if batch_groups == self.batch_groups:
            return
        if self._from is not None and version > self._from:
            self._base += self.batch_groups * (version - self._from)
            self._from = version
        self.batch_groups = batch_groups

    def lead_at_start(self, version: int) -> float:
        """Kept groups expected from what was on its way at the first probe, when the run was
        already at `version`: kept groups not yet trained (the learner trains `batch_groups`
        a version) or dropped by replay, plus sampled groups the filter had not finished, at
        the keep rate. 0 at version 0 (a fresh run). At most `ahead_batches` worth: topics
        that also hold an earlier run's traffic then pace this run in lockstep (one batch a
        version) instead of not at all.

        Groups in flight are the scorers' lag when the probe has it (bounded by what is on its
        way now), else sampled less finished over the whole run, which also counts every
        rollout a crash made a generator send twice."""
        if self.start is None or version <= 0:
            return 0.0
        s = self.start
        kept, unused = s["groups.kept"], s[UNUSED]
        waiting = max(0, kept - unused - self.batch_groups * version)
        if self._lag0 is not None:
            in_flight = self._lag0 / self._size0
        else:
            finished = kept + s["groups.dropped"] - unused
            in_flight = max(0.0, s["rollouts.raw"] / self._size0 - finished)
        rate = self.keep_rate if self.oversample else 1.0
        return min(self.batch_groups * self.ahead_batches, waiting + rate * in_flight)

    def batch_prompts(self, least: int, most: int) -> int:
        """Prompts a batch takes to yield one learner batch of kept groups at the measured
        keep rate (counting every group as kept without `oversample`), within [least, most]."""
        rate = self.keep_rate if self.oversample else 1.0
        return max(least, min(most, math.ceil(self.batch_groups / rate)))

    def should_pause(self, version: int, unseen_groups: float = 0.0) -> bool:
        if self.start is None:
            return False  # no probe yet: sample (the first batch is needed anyway)
        return self.expected_kept(unseen_groups) >= self.target(version)
