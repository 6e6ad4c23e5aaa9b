"""The replay buffer of Groups: capacity, eviction, staleness gate, reuse cap, priorities,
success replay and batch building. Pure: no I/O; the service feeds it and publishes results.

Reads: Groups (`add`), the learner's version (`set_learner_version`) and priorities
(`update_priorities`). Writes nothing; returns BatchItems to send and the groups that left
without being trained, so the caller can publish a DropRecord for each (reason "expired" or
"evicted"). Nothing leaves silently: every group is live, handed out, or returned as removed.

Delivery: `add` is idempotent by group_id (a re-delivered or replayed group is a no-op), and
`mark_emitted` is idempotent too, so the state can be rebuilt after a crash by re-adding the
input from the committed offset and re-applying the batches already sent (or from
`snapshot()` plus the same re-add). With `policy="fifo"` each group is handed out exactly once,
in arrival order; under `prioritized` a group is drawn by priority until it reaches `max_uses`.
The staleness gate runs before every batch: nothing handed out is more than `max_staleness`
versions older than the learner version the buffer knows.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np

from rollstream.schemas import BatchItem, Group, TrainBatch
from rollstream.services.replay.config import ReplayConfig
from rollstream.services.replay.select import draw_unique, importance_weights, interleave
from rollstream.services.replay.success import SuccessStore
from rollstream.services.replay.sumtree import SumTree


@dataclass
class Removed:
    """A group that left the buffer other than by reaching its reuse cap."""

    group: Group
    reason: str  # "expired" | "evicted"
    uses: int  # times it was handed out; 0 means it was never trained (publish a DropRecord)


@dataclass
class AddResult:
    added: bool  # False for a duplicate or a group already too stale
    removed: list[Removed] = field(default_factory=list)  # evicted for room, or itself expired


@dataclass
class BatchDraft:
    """What to send (may be empty) and what expired while building it."""

    items: list[BatchItem]
    expired: list[Removed]


def group_tokens(group: Group) -> int:
    """Prompt + completion tokens of every sample (int32 packed: 4 bytes a token)."""
    return sum(
        (len(s.rollout.prompt_ids) + len(s.rollout.completion_ids)) // 4 for s in group.samples
    )


def mean_abs_advantage(group: Group) -> float:
    return (
        float(np.abs(np.asarray(group.advantages, dtype=np.float64)).mean())
        if group.advantages
        else 0.0
    )


class ReplayBuffer:
    """Groups held between `groups.kept` and `batches.train` (see the module docstring)."""

    def __init__(self, cfg: ReplayConfig, remember_ids: int = 1_000_000) -> None:
        self.cfg = cfg
        cap = cfg.capacity
        self._groups: list[Group | None] = [None] * cap
        self._slot: dict[str, int] = {}
        self._free = list(range(cap - 1, -1, -1))
        self._uses = np.zeros(cap, dtype=np.int64)
        self._prio = np.zeros(cap, dtype=np.float64)  # raw priority, before eps and alpha
        self._tokens = np.zeros(cap, dtype=np.int64)
        self._live_tokens = 0  # sum of _tokens over live slots
        self._seq = np.zeros(cap, dtype=np.int64)
        self._mixed = np.zeros(cap, dtype=bool)  # has success-replay samples appended
        self._arrival: dict[int, None] = {}  # live slots in arrival order
        self._heap: list[tuple[int, int, int]] = []  # (policy_version, seq, slot), lazy deletes
        self._prioritized = cfg.policy == "prioritized"
        self._fresh = SumTree(cap) if self._prioritized else None  # never handed out
        self._used = SumTree(cap) if self._prioritized else None  # handed out, below the cap
        self._n_used = 0
        self._next_seq = 0
        self._max_prio = 0.0
        self.learner_version = 0
        self._remember = remember_ids
        self._retired: OrderedDict[str, None] = OrderedDict()  # ids that left; for idempotency
        self._pending: dict[str, dict] = {}  # restored metadata of groups not yet re-added
        self._emitted: OrderedDict[str, None] = OrderedDict()  # batch ids applied
        self._rng = np.random.default_rng(cfg.seed)  # replaced per batch (build_batch)
        self.success = (
            SuccessStore(cfg.success_max_pass_rate, cfg.success_mix, cfg.success_prompts)
            if cfg.success_replay
            else None
        )
        self.counters: dict[str, int] = dict.fromkeys(
            (
                "added",
                "duplicate",
                "expired_unused",
                "expired_used",
                "evicted_unused",
                "evicted_used",
                "consumed",
                "handed_out",
                "replayed",
                "batches",
            ),
            0,
        )
        self.uses_hist: dict[int, int] = {}  # uses at hand-out -> count
        self.staleness_hist: dict[int, int] = {}  # learner_version - policy_version -> count

    # ---- size -------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._slot)

    def untrained_ids(self) -> set[str]:
        """Rollout ids of the samples in live groups never handed out (with success replay a
        group may also carry samples of earlier groups: the caller tells those apart)."""
        return {
            s.rollout.rollout_id
            for slot, g in enumerate(self._groups)
            if g is not None and self._uses[slot] == 0
            for s in g.samples
        }

    def __contains__(self, group_id: str) -> bool:
        return group_id in self._slot

    @property
    def full(self) -> bool:
        return not self._free

    def uses(self, group_id: str) -> int:
        return int(self._uses[self._slot[group_id]])

    # ---- input --------------------------------------------------------------------------
    def add(self, group: Group) -> AddResult:
        """Insert a group (a known or already-retired group_id changes nothing)."""
        gid = group.group_id
        if gid in self._slot or gid in self._retired:
            self.counters["duplicate"] += 1
            return AddResult(False)
        meta = self._pending.pop(gid, None)
        known = meta is not None and "seq" in meta  # live in a restored snapshot: seen before
        seq = int(meta["seq"]) if known else self._next_seq
        self._next_seq = max(self._next_seq, seq + 1)
        if not known:
            self.counters["added"] += 1
        mixed = None
        if self.success is not None:  # mix successes of earlier groups, then store its own
            lv, stale = self.learner_version, self.cfg.max_staleness
            mixed = self.success.mix(group, seq, lv, stale)
            if not known:
                self.success.observe(group, seq)
            group = mixed or group
        uses = int(meta["uses"]) if meta else 0
        if uses >= self.cfg.max_uses:  # re-applied output: already handed out up to the cap
            self._forget(gid)
            self.counters["consumed"] += 1
            return AddResult(False)
        if self.learner_version - group.policy_version > self.cfg.max_staleness:
            self._forget(gid)
            self.counters["expired_unused" if uses == 0 else "expired_used"] += 1
            return AddResult(False, [Removed(group, "expired", uses)])
        removed = [self._evict()] if not self._free else []
        slot = self._free.pop()
        prio = meta.get("priority") if meta else None
        if prio is None:
            prio = self._initial_priority(group)
        self._groups[slot] = group
        self._slot[gid] = slot
        self._uses[slot] = uses
        self._prio[slot] = prio
        self._tokens[slot] = group_tokens(group)
        self._live_tokens += int(self._tokens[slot])
        self._seq[slot] = seq
        self._mixed[slot] = mixed is not None
        self._arrival[slot] = None
        heapq.heappush(self._heap, (group.policy_version, seq, slot))
        self._n_used += uses > 0
        self._place(np.array([slot]))
        self._max_prio = max(self._max_prio, prio)
        return AddResult(True, removed)

    def _initial_priority(self, group: Group) -> float:
        if self.cfg.priority == "learnability":
            p = group.stats.pass_rate
            return p * (1.0 - p)
        if self.cfg.priority == "feedback" and self._max_prio > 0:
            return self._max_prio
        return mean_abs_advantage(group)

    def update_priorities(self, priorities: dict[str, float]) -> int:
        """Set new priorities by group_id (learner feedback); returns how many were live."""
        slots, values = [], []
        for gid, p in priorities.items():
            slot = self._slot.get(gid)
            if slot is not None and np.isfinite(p) and p >= 0:
                slots.append(slot)
                values.append(p)
        if slots:
            self._prio[slots] = values
            self._max_prio = max(self._max_prio, max(values))
            self._place(np.asarray(slots))
        return len(slots)

    def set_learner_version(self, version: int) -> list[Removed]:
        """Advance the learner version (never backwards) and expire what became too stale."""
        self.learner_version = max(self.learner_version, int(version))
        return self.expire()

    def expire(self) -> list[Removed]:
        out = []
        limit = self.learner_version - self.cfg.max_staleness
        while self._heap and self._heap[0][0] < limit:
            _, seq, slot = heapq.heappop(self._heap)
            if self._groups[slot] is not None and self._seq[slot] == seq:
                out.append(self._remove(slot, "expired"))
        if len(self._heap) > 2 * len(self._slot) + 1024:  # drop entries of removed groups
            self._heap = [e for e in self._heap if self._live(e[2], e[1])]
            heapq.heapify(self._heap)
        return out

    # ---- output -------------------------------------------------------------------------
    def has_full_batch(self) -> bool:
        """Whether the live groups fill a batch: `batch_groups` groups, or `batch_tokens`
        tokens under a token budget (call `expire` first so that stale groups do not count)."""
        if self.cfg.batch_tokens is not None:
            return self._live_tokens >= self.cfg.batch_tokens
        return len(self._slot) >= self.cfg.batch_groups

    def build_batch(self) -> BatchDraft:
        """Choose the next batch (empty when the buffer is); apply the uses it costs."""
        expired = self.expire()
        if not self._slot:
            return BatchDraft([], expired)
        # one generator per batch from (seed, batch number): replays the same draws after a
        # restore without carrying generator state
        self._rng = np.random.default_rng([self.cfg.seed, self.counters["batches"]])
        if self._prioritized:
            slots, weights = self._select_prioritized()
        else:
            slots = self._select_fifo()
            weights = np.ones(len(slots))
        items = []
        for slot, w in zip(slots.tolist(), weights.tolist(), strict=True):
            group = self._groups[slot]
            uses = int(self._uses[slot]) + 1
            replayed = uses > 1 or bool(self._mixed[slot])
            items.append(BatchItem(group=group, weight=float(w), uses=uses, replayed=replayed))
            self.uses_hist[uses] = self.uses_hist.get(uses, 0) + 1
            lag = self.learner_version - group.policy_version
            self.staleness_hist[lag] = self.staleness_hist.get(lag, 0) + 1
            self.counters["replayed"] += replayed
        self.counters["handed_out"] += len(items)
        self.counters["batches"] += 1
        self._apply_uses(slots)
        return BatchDraft(items, expired)

    def mark_emitted(self, batch: TrainBatch) -> None:
        """Re-apply a batch that was already sent (rebuilding after a restart); idempotent."""
        if batch.batch_id in self._emitted:
            return
        self._remember_batch(batch.batch_id)
        for item in batch.items:
            gid = item.group.group_id
            slot = self._slot.get(gid)
            if slot is not None:
                missing = item.uses - int(self._uses[slot])
                if missing > 0:
                    self._apply_uses(np.array([slot]), by=missing)
            elif gid not in self._retired:
                meta = self._pending.setdefault(gid, {"uses": 0})
                meta["uses"] = max(int(meta["uses"]), item.uses)

    def _select_fifo(self) -> np.ndarray:
        out: list[int] = []
        budget = self.cfg.batch_tokens
        spent = 0
        for slot in self._arrival:
            if budget is None:
                if len(out) == self.cfg.batch_groups:
                    break
            elif out and spent + self._tokens[slot] > budget:
                break
            out.append(slot)
            spent += int(self._tokens[slot])
        return np.asarray(out, dtype=np.int64)

    def _select_prioritized(self) -> tuple[np.ndarray, np.ndarray]:
        cfg = self.cfg
        fresh, used = self._fresh, self._used
        n_used = self._n_used
        n_fresh = len(self._slot) - n_used
        if cfg.batch_tokens is None:
            k = min(cfg.batch_groups, len(self._slot))
        else:
            mean_tokens = max(1.0, self._live_tokens / len(self._slot))
            k = int(
                min(cfg.max_batch_groups, len(self._slot), 2 * cfg.batch_tokens / mean_tokens + 4)
            )
        if cfg.fresh_fraction is None:
            t_f, t_u = fresh.total, used.total
            k_f = int(self._rng.binomial(k, t_f / (t_f + t_u)))
        else:
            k_f = int(round(cfg.fresh_fraction * k))
        k_f = min(k_f, n_fresh)
        k_u = min(k - k_f, n_used)
        k_f = min(k - k_u, n_fresh)  # each side fills from the other
        pick_f = draw_unique(fresh, k_f, self._rng)
        pick_u = draw_unique(used, k_u, self._rng)
        w_f, w_u = importance_weights(
            fresh,
            used,
            n_fresh,
            n_used,
            pick_f,
            pick_u,
            cfg.beta,
            pooled=cfg.fresh_fraction is None,
        )
        slots, weights = interleave(pick_f, w_f, pick_u, w_u, cfg.fresh_fraction, self._rng)
        if cfg.batch_tokens is not None:
            cum = np.cumsum(self._tokens[slots])
            n = max(1, int(np.searchsorted(cum, cfg.batch_tokens, side="right")))
            slots, weights = slots[:n], weights[:n]
        return slots, weights

    # ---- bookkeeping --------------------------------------------------------------------
    def _live(self, slot: int, seq: int) -> bool:
        return self._groups[slot] is not None and self._seq[slot] == seq

    def _leaf(self, slots: np.ndarray) -> np.ndarray:
        return (self._prio[slots] + self.cfg.priority_eps) ** self.cfg.alpha

    def _place(self, slots: np.ndarray) -> None:
        """Put live slots in the tree their use count says (fresh or used) at their priority."""
        if not self._prioritized or slots.size == 0:
            return
        if slots.size == 1:
            slot = int(slots[0])
            leaf = (float(self._prio[slot]) + self.cfg.priority_eps) ** self.cfg.alpha
            fresh = self._uses[slot] == 0
            self._fresh.set(slot, leaf if fresh else 0.0)
            self._used.set(slot, 0.0 if fresh else leaf)
            return
        leaf = self._leaf(slots)
        is_fresh = self._uses[slots] == 0
        self._fresh.update(slots, np.where(is_fresh, leaf, 0.0))
        self._used.update(slots, np.where(is_fresh, 0.0, leaf))

    def _apply_uses(self, slots: np.ndarray, by: int = 1) -> None:
        if slots.size == 0:
            return
        first = self._uses[slots] == 0
        self._uses[slots] += by
        self._n_used += int(first.sum())
        done = self._uses[slots] >= self.cfg.max_uses
        for slot in slots[done].tolist():
            self._remove(slot, "consumed")
        self._place(slots[~done])

    def _evict(self) -> Removed:
        if self.cfg.eviction == "lowest_priority" and self._prioritized:
            tree = self._fresh if self._fresh.min() <= self._used.min() else self._used
            slot = tree.argmin()
        else:
            slot = next(iter(self._arrival))
        return self._remove(slot, "evicted")

    def _remove(self, slot: int, reason: str) -> Removed:
        group = self._groups[slot]
        uses = int(self._uses[slot])
        self._groups[slot] = None
        self._live_tokens -= int(self._tokens[slot])
        del self._slot[group.group_id]
        del self._arrival[slot]
        self._free.append(slot)
        self._n_used -= uses > 0
        if self._prioritized:
            self._fresh.set(slot, 0.0)
            self._used.set(slot, 0.0)
        self._forget(group.group_id)
        self.counters[
            reason if reason == "consumed" else f"{reason}_{'used' if uses else 'unused'}"
        ] += 1
        return Removed(group, reason, uses)

    def _forget(self, gid: str) -> None:
        self._retired[gid] = None
        if len(self._retired) > self._remember:
            self._retired.popitem(last=False)

    def _remember_batch(self, batch_id: str) -> None:
        self._emitted[batch_id] = None
        if len(self._emitted) > self._remember:
            self._emitted.popitem(last=False)

    # ---- state --------------------------------------------------------------------------
    def stats(self) -> dict[str, float]:
        """Occupancy and counters, for metrics."""
        out: dict[str, float] = dict(self.counters)
        out.update(
            size=len(self._slot),
            capacity=self.cfg.capacity,
            used=self._n_used,
            fresh=len(self._slot) - self._n_used,
            learner_version=self.learner_version,
        )
        if self.success is not None:
            out["success_prompts"] = len(self.success)
            out.update({f"success_{k}": v for k, v in self.success.counters.items()})
        return out

    def snapshot(self) -> dict:
        """Plain data (lists, dicts, numbers, bytes) of everything but the group bodies."""
        live = sorted(self._arrival, key=lambda s: self._seq[s])
        return {
            "format": 1,
            "learner_version": self.learner_version,
            "next_seq": self._next_seq,
            "max_priority": self._max_prio,
            "live": [
                {
                    "group_id": self._groups[s].group_id,
                    "uses": int(self._uses[s]),
                    "priority": float(self._prio[s]),
                    "seq": int(self._seq[s]),
                }
                for s in live
            ],
            "pending": dict(self._pending),
            "retired": list(self._retired),
            "emitted_batches": list(self._emitted),
            "counters": dict(self.counters),
            "success": self.success.snapshot() if self.success is not None else {},
        }

    def restore(self, snap: dict) -> None:
        """Load a snapshot into an empty buffer; then re-add the live groups' bodies (`add`)."""
        if self._slot or self._retired:
            raise RuntimeError("restore needs an empty buffer")
        self.learner_version = int(snap["learner_version"])
        self._next_seq = int(snap["next_seq"])
        self._max_prio = float(snap["max_priority"])
        self._pending = {k: dict(v) for k, v in snap["pending"].items()}
        for e in snap["live"]:
            self._pending[e["group_id"]] = {k: e[k] for k in ("uses", "priority", "seq")}
        for gid in snap["retired"]:
            self._forget(gid)
        for bid in snap["emitted_batches"]:
            self._remember_batch(bid)
        self.counters.update(snap["counters"])
        if self.success is not None:
            self.success.restore(snap["success"])

    def missing(self) -> list[str]:
        """Restored group ids whose bodies have not been re-added (should be empty)."""
        return [gid for gid, m in self._pending.items() if "seq" in m]
