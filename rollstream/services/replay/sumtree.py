"""Sum tree and min tree over a fixed number of slots, vectorised with numpy.

Pure data structure; reads and writes nothing outside itself.

Leaves hold non-negative values (sampling weights). `sample(n)` draws n slots with
probability value / total, all n samples descending the tree together level by level as numpy
arrays, so a batch costs O(n log capacity) in a handful of array operations per level rather
than n Python loops. `update(slots, values)` writes leaves and recomputes their ancestors from
their children (never by adding deltas), so the totals do not drift over millions of updates.
A parallel min tree (zero leaves count as +inf) gives the smallest positive leaf in O(1) and
its slot in O(log n): importance-weight normalisation and lowest-priority eviction use it.
"""

from __future__ import annotations

import numpy as np


class SumTree:
    """Binary sum tree (and min tree) over `capacity` slots; a slot with value 0 is never drawn."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self.capacity = capacity
        leaves = 1
        while leaves < capacity:
            leaves *= 2
        self._leaves = leaves
        self._depth = leaves.bit_length() - 1  # levels below the root
        self._sum = np.zeros(2 * leaves, dtype=np.float64)  # node i: children 2i, 2i+1; root 1
        self._min = np.full(2 * leaves, np.inf, dtype=np.float64)

    @property
    def total(self) -> float:
        """Sum of all leaves."""
        return float(self._sum[1])

    def min(self) -> float:
        """Smallest positive leaf (inf when every leaf is 0)."""
        return float(self._min[1])

    def get(self, slots: np.ndarray | int) -> np.ndarray:
        """Leaf values of `slots`."""
        return self._sum[np.asarray(slots, dtype=np.int64) + self._leaves]

    def update(self, slots: np.ndarray | list[int] | int, values: np.ndarray | list[float] | float):
        """Set leaves `slots` to `values` (>= 0); a repeated slot takes its last value."""
        slots = np.atleast_1d(np.asarray(slots, dtype=np.int64))
        values = np.broadcast_to(np.asarray(values, dtype=np.float64), slots.shape)
        if slots.size == 0:
            return
        if slots.min() < 0 or slots.max() >= self.capacity:
            raise IndexError("slot out of range")
        if values.min() < 0 or not np.isfinite(values).all():
            raise ValueError("values must be finite and >= 0")
        if slots.size == 1:  # one leaf (every `add`): a scalar walk beats array ops here
            self._update_one(int(slots[0]) + self._leaves, float(values[0]))
            return
        if slots.size > 1:  # keep the last write of each slot
            rev_unique, rev_first = np.unique(slots[::-1], return_index=True)
            slots, values = rev_unique, values[::-1][rev_first]
        pos = slots + self._leaves
        self._sum[pos] = values
        self._min[pos] = np.where(values > 0, values, np.inf)
        for _ in range(self._depth):
            pos = pos >> 1  # repeated parents are fine: each is recomputed from its children
            left = pos << 1
            self._sum[pos] = self._sum[left] + self._sum[left + 1]
            self._min[pos] = np.minimum(self._min[left], self._min[left + 1])

    def set(self, slot: int, value: float) -> None:
        """Set one leaf (the cheap path for single inserts)."""
        if not 0 <= slot < self.capacity:
            raise IndexError("slot out of range")
        if not (value >= 0 and value < np.inf):
            raise ValueError("values must be finite and >= 0")
        self._update_one(slot + self._leaves, float(value))

    def _update_one(self, pos: int, value: float) -> None:
        total, low = self._sum, self._min
        if total[pos] == value:  # unchanged (e.g. zeroing an empty leaf): ancestors are too
            return
        total[pos] = value
        low[pos] = value if value > 0 else np.inf
        pos >>= 1
        while pos:
            left = pos << 1
            total[pos] = total[left] + total[left + 1]
            low[pos] = min(low[left], low[left + 1])
            pos >>= 1

    def find(self, mass: np.ndarray) -> np.ndarray:
        """Slots whose cumulative-value interval contains each of `mass` (values in [0, total))."""
        u = np.array(mass, dtype=np.float64, copy=True)
        node = np.ones(u.shape, dtype=np.int64)
        for _ in range(self._depth):
            left = node << 1
            left_sum = self._sum[left]
            # go right when the mass lies past the left subtree; never into an empty subtree
            # (guards against u landing on total through rounding)
            right = (u >= left_sum) & (self._sum[left + 1] > 0)
            u = np.where(right, u - left_sum, u)
            node = np.where(right, left + 1, left)
        return node - self._leaves

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """n slots drawn independently (with replacement) with probability value / total."""
        total = self.total
        if total <= 0:
            raise ValueError("cannot sample from an empty tree")
        return self.find(rng.random(n) * total)

    def argmin(self) -> int:
        """Slot of the smallest positive leaf; raises when every leaf is 0."""
        if not np.isfinite(self._min[1]):
            raise ValueError("tree is empty")
        node = 1
        for _ in range(self._depth):
            left = node << 1
            node = left if self._min[left] <= self._min[left + 1] else left + 1
        return node - self._leaves
