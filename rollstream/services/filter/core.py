"""Everything the filter stage decides, without I/O: assemble groups, run the filter chain,
compute advantages, account every sample, track pass rates.

`FilterCore.add(sample, now)` returns the Outcome of a group when that sample completed it;
`expire(now)` returns the Outcomes of groups that waited too long. An Outcome holds the Group
for `groups.kept` (or None), the DropRecords for `groups.dropped` and the PromptStats for
`prompt.stats`; the faust app only sends them. Every arrived sample of a finished group is in
exactly one place: `group.samples` or one DropRecord.

GroupStats: reward_mean and reward_std (population) are over the kept samples (what the
advantages were computed from); pass_rate is over every arrived sample (the prompt's
difficulty, the same number PromptStats tracks).
"""

from __future__ import annotations

from collections.abc import MutableMapping
from dataclasses import dataclass, field

from rollstream.schemas import DropRecord, Group, GroupStats, PromptStats, ScoredRollout
from rollstream.services.filter.advantage import advantages
from rollstream.services.filter.assembly import Added, GroupAssembler, PendingGroup
from rollstream.services.filter.chain import (
    CandidateGroup,
    Drop,
    FilterChain,
)
from rollstream.services.filter.config import FilterConfig
from rollstream.services.filter.pass_rate import PassRateTracker, PassRecord
from rollstream.services.filter.stats import mean, pass_rate, pstd


@dataclass(frozen=True)
class Outcome:
    """What became of one finished group."""

    group_id: str
    group: Group | None
    drops: list[DropRecord]
    prompt_stats: PromptStats | None  # None when pass rates are tracked elsewhere
    partial: bool = False  # finished by the timeout with samples missing
    assembly_s: float = 0.0
    task_id: str = ""
    task: str = ""
    pass_rate: float | None = None  # over every arrived sample; None when none arrived
    policy_version: int = 0  # newest policy version among the arrived samples


@dataclass
class FilterCore:
    """The pure filter stage (see module docstring). State lives in the three mappings."""

    config: FilterConfig = field(default_factory=FilterConfig)
    pending: MutableMapping[str, PendingGroup] | None = None
    done: MutableMapping[str, float] | None = None
    pass_rates: MutableMapping[str, PassRecord] | None = None
    learner_version: int | None = None  # newest published version, for the stale filter
    track_pass_rates: bool = True  # False: Outcome.prompt_stats stays None (the app
    # aggregates pass rates per task_id on its own partitioning)
    keep_finished: bool = False  # see GroupAssembler

    def __post_init__(self) -> None:
        self.chain = FilterChain.from_specs(self.config.chain)
        self.assembler = GroupAssembler(self.pending, self.done, self.keep_finished)
        self.tracker = PassRateTracker(
            self.config.pass_rate_alpha, self.config.pass_rate_recent, self.pass_rates
        )

    def add(self, sample: ScoredRollout, now: float) -> tuple[Added, Outcome | None]:
        """Add one sample; the Outcome is set when it completed its group."""
        added = self.assembler.add(sample, now)
        if added.status != "complete" or added.group is None:
            return added, None
        return added, self.finish(added.group, now)

    def expire(self, now: float, prune: bool = True) -> list[Outcome]:
        """Outcomes of the groups whose first sample is older than the group timeout; with
        `prune`, also forget finished group ids older than `done_ttl_s`."""
        expired = self.assembler.expire(now, self.config.group_timeout_s)
        outcomes = [self.decide(pending, now) for pending in expired]
        if prune:
            self.assembler.prune_done(now, self.config.done_ttl_s)
        return outcomes

    def decide(self, pending: PendingGroup, now: float) -> Outcome:
        """The Outcome of a finished group: complete, or expired (then by timeout_policy)."""
        if pending.complete:
            return self.finish(pending, now)
        if self.config.timeout_policy == "emit" and pending.samples:
            return self.finish(pending, now, partial=True)
        return self._timeout_drop(pending, now)

    def finish(self, pending: PendingGroup, now: float, partial: bool = False) -> Outcome:
        """Filter one assembled group and build its messages."""
        arrived = pending.ordered()
        candidate = CandidateGroup(
            pending.group_id,
            pending.task_id,
            pending.task,
            arrived,
            pending.group_size,
            self.learner_version,
        )
        result = self.chain.apply(candidate)
        drops = [self._record(pending, d, now) for d in result.drops]
        kept = result.kept
        if kept and len(kept) < self.config.min_samples:
            ids = [s.rollout.rollout_id for s in kept]
            stats = {"kept": float(len(kept)), "min_samples": float(self.config.min_samples)}
            drop = Drop("chain", "too_few_samples", "group", ids, stats)
            drops.append(self._record(pending, drop, now))
            kept = []
        assembly_s = max(0.0, now - pending.first_seen)
        group = self._group(pending, arrived, kept, now, assembly_s) if kept else None
        return self._outcome(pending, arrived, group, drops, now, partial, assembly_s)

    def _group(
        self,
        pending: PendingGroup,
        arrived: list[ScoredRollout],
        kept: list[ScoredRollout],
        now: float,
        assembly_s: float,
    ) -> Group:
        rewards = [s.reward for s in kept]
        return Group(
            group_id=pending.group_id,
            task_id=pending.task_id,
            task=pending.task,
            samples=kept,
            advantages=advantages(rewards, self.config.estimator, self.config.eps),
            stats=GroupStats(
                reward_mean=mean(rewards),
                reward_std=pstd(rewards),
                pass_rate=pass_rate(arrived),
                generated=len(arrived),
                kept=len(kept),
                assembly_s=assembly_s,
                estimator=self.config.estimator,
            ),
            policy_version=min(s.rollout.policy_version for s in kept),
            produced_at=now,
        )

    def _stats(
        self, pending: PendingGroup, arrived: list[ScoredRollout], now: float
    ) -> PromptStats | None:
        if not arrived:
            return None
        record = self.tracker.update(pending.task_id, pending.task, pass_rate(arrived))
        version = max(s.rollout.policy_version for s in arrived)
        return self.tracker.message(pending.task_id, record, version, now)

    def _timeout_drop(self, pending: PendingGroup, now: float) -> Outcome:
        arrived = pending.ordered()
        waited = now - pending.first_seen
        stats = {
            "arrived": float(len(arrived)),
            "expected": float(pending.group_size),
            "waited_s": waited,
        }
        ids = [s.rollout.rollout_id for s in arrived]
        drop = Drop("assembly", "incomplete_timeout", "group", ids, stats)
        record = self._record(pending, drop, now)
        return self._outcome(pending, arrived, None, [record], now, True, waited)

    def _outcome(
        self,
        pending: PendingGroup,
        arrived: list[ScoredRollout],
        group: Group | None,
        drops: list[DropRecord],
        now: float,
        partial: bool,
        assembly_s: float,
    ) -> Outcome:
        return Outcome(
            pending.group_id,
            group,
            drops,
            self._stats(pending, arrived, now) if self.track_pass_rates else None,
            partial,
            assembly_s,
            pending.task_id,
            pending.task,
            pass_rate(arrived) if arrived else None,
            max((s.rollout.policy_version for s in arrived), default=0),
        )

    def _record(self, pending: PendingGroup, drop: Drop, now: float) -> DropRecord:
        versions = [
            pending.samples[rid].rollout.policy_version
            for rid in drop.rollout_ids
            if rid in pending.samples
        ]
        return DropRecord(
            group_id=pending.group_id,
            task_id=pending.task_id,
            reason=drop.reason,
            filter=drop.filter,
            scope=drop.scope,
            rollout_ids=list(drop.rollout_ids),
            stats=dict(drop.stats),
            policy_version=min(versions, default=0),
            produced_at=now,
        )

    def configure(self, config: FilterConfig) -> None:
        """Put `config` in force: the run's config with the live knobs applied (see
        `config.validate_control`), never merged onto the current one. A filter whose name and
        label stay is kept with what it accumulated, only its params set to the config's; the
        pass-rate tracker takes the new alpha and window. FilterConfigError if a filter cannot
        be built, and then nothing changes."""
        self.chain = FilterChain.from_specs(config.chain, reuse=self.chain.filters)
        self.config = config
        self.tracker.alpha, self.tracker.keep = config.pass_rate_alpha, config.pass_rate_recent
