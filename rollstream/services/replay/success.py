"""Success replay for hard prompts (ExGRPO-style). Pure: no I/O.

Precise rule (what this module does, in order):

1. A sample is a *verified success* when the scorer's checker said `correct is True` and it
   finished normally (`finish_reason == "stop"`). Reward alone is not enough: unverified or
   truncated samples are never stored.
2. A prompt (task_id) is *hard* while the pass rate of its latest group is
   <= `success_max_pass_rate`. When a group of the prompt arrives (`observe`):
   - pass rate > success_max_pass_rate: the prompt is no longer hard; its stored successes
     are dropped ("retired", as ExGRPO retires solved questions);
   - 0 < pass rate <= success_max_pass_rate: its verified successes join the prompt's store,
     which keeps the best `success_mix` by mean behaviour log-prob (highest = least
     surprising; ExGRPO keeps the lowest-entropy success, and the mean log-prob is the
     entropy proxy every sample carries). Ties keep the newer one.
   - pass rate 0: nothing to store, nothing retired.
   At most `success_prompts` prompts are stored; the least recently stored leaves first.
   Each stored success remembers the arrival number of its group, so a group re-added after a
   restore is only ever mixed with successes of groups that arrived before it.
3. When a group of a hard prompt arrives, *before* its own successes are stored (`mix`, then
   `observe`), up to `success_mix` stored successes of earlier groups of the same prompt are
   appended to it, as RLEP /
   ExGRPO mix replayed successes into the fresh group. A stored success older than the
   staleness bound (learner_version - its policy_version > max_staleness) is dropped instead.
   The advantages of the mixed group are recomputed over all its rewards with the group's
   estimator (`recompute_advantages`; an unknown estimator leaves the group unmixed), its
   `policy_version` becomes the oldest among its samples and `stats.kept` counts the extra
   samples. The replayed samples keep their own behaviour log-probs, so the learner's
   importance correction covers them.
"""

from __future__ import annotations

from collections import OrderedDict

import msgspec
import numpy as np

from rollstream.schemas import Group, ScoredRollout, decode, encode, floats


def is_verified_success(sample: ScoredRollout) -> bool:
    """True when a checker verified the sample and it stopped normally."""
    return sample.correct is True and sample.rollout.finish_reason == "stop"


def _quality(sample: ScoredRollout) -> float:
    lp = floats(sample.rollout.logprobs)
    return float(lp.mean()) if lp.size else 0.0


def recompute_advantages(rewards: list[float], estimator: str) -> list[float] | None:
    """Group advantages of `rewards` under `estimator`; None for an estimator not known here.

    grpo: (r - mean) / (std + 1e-6), std with n-1 (torch.std's default, as TRL and verl);
    dr_grpo / drgrpo / mean: r - mean; rloo: r_i - mean of the others = n/(n-1) (r_i - mean).
    """
    r = np.asarray(rewards, dtype=np.float64)
    n = r.size
    centred = r - r.mean()
    if estimator == "grpo":
        std = r.std(ddof=1) if n > 1 else 0.0
        return (centred / (std + 1e-6)).tolist()
    if estimator in ("dr_grpo", "drgrpo", "mean"):
        return centred.tolist()
    if estimator == "rloo":
        return (centred * (n / (n - 1)) if n > 1 else np.zeros(n)).tolist()
    return None


class SuccessStore:
    """Verified successes of hard prompts, keyed by task_id (see the module docstring)."""

    def __init__(self, max_pass_rate: float, per_prompt: int, max_prompts: int) -> None:
        self.max_pass_rate = max_pass_rate
        self.per_prompt = per_prompt
        self.max_prompts = max_prompts
        # task_id -> [(arrival seq of the group it came from, success)], best first
        self._store: OrderedDict[str, list[tuple[int, ScoredRollout]]] = OrderedDict()
        self.counters = {"stored": 0, "retired": 0, "mixed": 0, "expired": 0, "unmixable": 0}

    def __len__(self) -> int:
        return len(self._store)

    def get(self, task_id: str) -> list[ScoredRollout]:
        return [s for _, s in self._store.get(task_id, ())]

    def observe(self, group: Group, seq: int) -> None:
        """Update the store with a group of its prompt that arrived as number `seq`."""
        rate = group.stats.pass_rate
        if rate > self.max_pass_rate:
            if self._store.pop(group.task_id, None) is not None:
                self.counters["retired"] += 1
            return
        wins = [s for s in group.samples if is_verified_success(s)]
        if rate <= 0 or not wins:
            return
        have = self._store.get(group.task_id, [])
        known = {s.rollout.rollout_id for _, s in have}
        new = [(seq, s) for s in wins if s.rollout.rollout_id not in known]
        # newest first so that a stable sort keeps the newer of two equal ones
        merged = sorted(new[::-1] + have, key=lambda e: _quality(e[1]), reverse=True)
        merged = merged[: self.per_prompt]
        self.counters["stored"] += sum(1 for e in new if e in merged)
        self._store[group.task_id] = merged
        self._store.move_to_end(group.task_id)
        while len(self._store) > self.max_prompts:
            self._store.popitem(last=False)

    def mix(self, group: Group, seq: int, learner_version: int, max_staleness: int) -> Group | None:
        """The group (arrival number `seq`) with stored successes of earlier groups appended,
        or None when nothing applies."""
        if group.stats.pass_rate > self.max_pass_rate or group.task_id not in self._store:
            return None
        stored = self._store[group.task_id]
        fresh = [
            e for e in stored if learner_version - e[1].rollout.policy_version <= max_staleness
        ]
        if len(fresh) < len(stored):
            self.counters["expired"] += len(stored) - len(fresh)
            if fresh:
                self._store[group.task_id] = fresh
            else:
                del self._store[group.task_id]
        extra = [s for at, s in fresh if at < seq and s.rollout.group_id != group.group_id]
        if not extra:
            return None
        samples = list(group.samples) + extra
        adv = recompute_advantages([s.reward for s in samples], group.stats.estimator)
        if adv is None:
            self.counters["unmixable"] += 1
            return None
        self.counters["mixed"] += len(extra)
        return msgspec.structs.replace(
            group,
            samples=samples,
            advantages=adv,
            policy_version=min([group.policy_version] + [s.rollout.policy_version for s in extra]),
            stats=msgspec.structs.replace(group.stats, kept=group.stats.kept + len(extra)),
        )

    def snapshot(self) -> dict[str, list[list]]:
        """Plain data: task_id -> [[seq, encoded ScoredRollout]], least recent prompt first."""
        return {k: [[at, encode(s)] for at, s in v] for k, v in self._store.items()}

    def restore(self, data: dict[str, list[list]]) -> None:
        self._store = OrderedDict(
            (k, [(int(at), decode(b, ScoredRollout)) for at, b in v]) for k, v in data.items()
        )
