"""Running pass rate of each prompt (task_id), for the feed's curriculum (PromptStats).

After each group: ewma <- alpha * p + (1 - alpha) * ewma (the first group sets it to p),
`last` = p, `groups` += 1, and `recent` keeps the last `keep` group pass rates, newest last
(GRESO counts trailing all-correct / all-wrong groups from it). The store is a mapping the
caller owns (a faust table in the app, a dict in tests). Pure: time is an argument.
"""

from __future__ import annotations

from collections.abc import MutableMapping

import msgspec

from rollstream.schemas import PromptStats


class PassRecord(msgspec.Struct, kw_only=True):
    """Pass-rate history of one prompt."""

    task: str
    ewma: float
    last: float
    groups: int
    recent: list[float] = []


class PassObservation(msgspec.Struct, kw_only=True):
    """One group's pass rate, sent by the filter app to itself on an internal topic keyed by
    task_id, so that one worker owns each prompt's running pass rate."""

    task_id: str
    task: str
    pass_rate: float
    policy_version: int = 0


class PassRateTracker:
    """Per-prompt EWMA and recent history of group pass rates."""

    def __init__(
        self,
        alpha: float = 0.3,
        keep: int = 8,
        store: MutableMapping[str, PassRecord] | None = None,
    ) -> None:
        if not 0 < alpha <= 1:
            raise ValueError("alpha must be in (0, 1]")
        if keep < 1:
            raise ValueError("keep must be at least 1")
        self.alpha, self.keep = alpha, keep
        self.store: MutableMapping[str, PassRecord] = {} if store is None else store

    def update(self, task_id: str, task: str, pass_rate: float) -> PassRecord:
        """Record one group's pass rate; returns the new record."""
        old = self.store.get(task_id)
        if old is None:
            record = PassRecord(task=task, ewma=pass_rate, last=pass_rate, groups=1, recent=[])
        else:
            ewma = self.alpha * pass_rate + (1 - self.alpha) * old.ewma
            record = PassRecord(
                task=task, ewma=ewma, last=pass_rate, groups=old.groups + 1, recent=old.recent
            )
        record.recent = (list(record.recent) + [pass_rate])[-self.keep :]
        self.store[task_id] = record
        return record

    @staticmethod
    def message(task_id: str, record: PassRecord, policy_version: int, now: float) -> PromptStats:
        """The PromptStats message for one prompt."""
        return PromptStats(
            task_id=task_id,
            task=record.task,
            pass_rate=min(1.0, max(0.0, record.ewma)),
            last_pass_rate=record.last,
            groups=record.groups,
            recent=list(record.recent),
            policy_version=policy_version,
            produced_at=now,
        )
