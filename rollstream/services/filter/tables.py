"""MutableMapping views over faust tables, so the pure core keeps its state in them:
TableView (one value a key: the done and pass-rate tables) and PendingTable (the pending
groups, one sample a key, so that a group's changelog grows with its samples, not their square).

Keys are `str` in the core and `bytes` in the table (raw serializers: a changelog hands bytes
back, so bytes are used from the start). Each value is stored as the MessagePack pair
[partition, value]: the source partition of the event that wrote it. faust writes a table
change to the changelog partition of the *current event*, so a periodic tick for partition p
may only touch entries written from p; iteration therefore yields only the entries of the
current event's partition (all entries outside an event, e.g. in tests). With `stamp`, each
value also carries a number taken when it was written (the filter stores the source offset).

Decoded values are cached (the filter reads its `done` and pending entries on every sample):
each view must be the only writer of its table while it runs, and `forget_cache` must be called
whenever the table can change underneath (a partition assigned and recovered from the
changelog, or revoked).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, MutableMapping
from typing import Any, Generic, TypeVar

import msgspec

from rollstream.schemas import ScoredRollout
from rollstream.services.filter.assembly import PendingGroup

V = TypeVar("V")


class _Tagged:
    """A bytes table whose entries are tagged with the partition (and stamp) of their write."""

    def __init__(
        self,
        table: MutableMapping[bytes, bytes],
        partition: Callable[[], int | None],
        stamp: Callable[[], int] | None,
    ) -> None:
        self.table = table
        self.partition = partition
        self.stamp = stamp
        self._encoder = msgspec.msgpack.Encoder()

    def _tag(self) -> tuple[int, int]:
        """(partition of the current event or -1, the stamp or -1) for a write now."""
        part = self.partition()
        return (-1 if part is None else part, -1 if self.stamp is None else self.stamp())


class TableView(_Tagged, MutableMapping[str, V], Generic[V]):
    """A str-keyed view of a faust table (or any bytes-keyed MutableMapping) holding `V`s."""

    def __init__(
        self,
        table: MutableMapping[bytes, bytes],
        value_type: type[V],
        partition: Callable[[], int | None],
        stamp: Callable[[], int] | None = None,
    ) -> None:
        super().__init__(table, partition, stamp)
        shape: Any = tuple[int, value_type, int] if stamp else tuple[int, value_type]  # type: ignore[valid-type]
        self._decoder = msgspec.msgpack.Decoder(shape)
        self._part_decoder = msgspec.msgpack.Decoder(
            tuple[int, msgspec.Raw, int] if stamp else tuple[int, msgspec.Raw]
        )
        self._cache: dict[str, V] = {}

    def __getitem__(self, key: str) -> V:
        try:
            return self._cache[key]
        except KeyError:
            value: V = self._decoder.decode(self.table[key.encode()])[1]
            self._cache[key] = value
            return value

    def forget_cache(self) -> None:
        """Read every value from the table again from now on."""
        self._cache.clear()

    def stamp_of(self, key: str) -> int:
        """The stamp taken when `key` was last written (needs `stamp`)."""
        return int(self._decoder.decode(self.table[key.encode()])[2])

    def __setitem__(self, key: str, value: V) -> None:
        part, stamp = self._tag()
        entry: tuple[Any, ...] = (part, value, stamp) if self.stamp is not None else (part, value)
        self.table[key.encode()] = self._encoder.encode(entry)
        self._cache[key] = value

    def __delitem__(self, key: str) -> None:
        self._cache.pop(key, None)
        del self.table[key.encode()]

    def __iter__(self) -> Iterator[str]:
        part = self.partition()
        for key, raw in list(self.table.items()):
            if part is None or self._part_decoder.decode(raw)[0] == part:
                yield key.decode() if isinstance(key, bytes) else str(key)

    def __len__(self) -> int:
        return sum(1 for _ in self)


def event_partition() -> int | None:
    """Partition of the faust event being processed, or None outside one."""
    from faust import current_event

    event: Any = current_event()
    return None if event is None else int(event.message.partition)


SAMPLE_SEP = b"\x00"  # between group_id and rollout_id in a pending table key


class PendingTable(_Tagged, MutableMapping[str, PendingGroup]):
    """The pending groups, stored one sample per table entry.

    Key `<group_id>\\0<rollout_id>`, value the MessagePack tuple [partition, ScoredRollout,
    stamp, first_seen] (partition and stamp as in TableView; first_seen is the group's).
    Setting a group writes only the samples the table does not hold yet, and deleting it
    writes one tombstone per sample. So a group of n samples costs its changelog n sample
    writes and n small tombstones; the earlier layout, the whole PendingGroup under its
    group_id, rewrote every sample so far on each arrival: n(n+1)/2 samples a group, the
    largest topic on the bus (55 % of the bytes of a default run at n = 8, measured in
    benchmarks/RESULTS.md) and O(n^2) for long rollouts or large groups.

    The decoded groups are kept in memory and read from the table at the first use after
    `forget_cache` (the whole table at once: a group's samples are not found by key), so as
    with TableView the view must be the table's only writer while it runs. A group is stored
    through its samples: one without samples is not stored.
    """

    def __init__(
        self,
        table: MutableMapping[bytes, bytes],
        partition: Callable[[], int | None],
        stamp: Callable[[], int] | None = None,
    ) -> None:
        super().__init__(table, partition, stamp)
        self._decoder = msgspec.msgpack.Decoder(tuple[int, ScoredRollout, int, float])
        self._groups: dict[str, PendingGroup] | None = None  # None: read the table first
        self._stored: dict[str, set[str]] = {}  # group_id -> rollout ids in the table
        self._meta: dict[str, tuple[int, int]] = {}  # group_id -> (partition, newest stamp)

    def forget_cache(self) -> None:
        """Read the table again at the next use (it was recovered or handed over)."""
        self._groups = None

    def _load(self) -> dict[str, PendingGroup]:
        if self._groups is not None:
            return self._groups
        groups: dict[str, PendingGroup] = {}
        self._stored, self._meta = {}, {}
        for raw in list(self.table.values()):
            part, sample, stamp, first_seen = self._decoder.decode(raw)
            r = sample.rollout  # the ids come from the sample, the key only keeps them apart
            gid, rid = r.group_id, r.rollout_id
            group = groups.get(gid)
            if group is None:
                group = groups[gid] = PendingGroup(
                    group_id=gid,
                    task_id=r.task_id,
                    task=r.task,
                    group_size=r.group_size,
                    first_seen=first_seen,
                    samples={},
                )
            group.samples[rid] = sample
            self._stored.setdefault(gid, set()).add(rid)
            newest = max(stamp, self._meta.get(gid, (part, stamp))[1])
            self._meta[gid] = (part, newest)
        self._groups = groups
        return groups

    def _key(self, gid: str, rid: str) -> bytes:
        return gid.encode() + SAMPLE_SEP + rid.encode()

    def __getitem__(self, gid: str) -> PendingGroup:
        return self._load()[gid]

    def __setitem__(self, gid: str, group: PendingGroup) -> None:
        groups = self._load()
        stored = self._stored.setdefault(gid, set())
        part, stamp = self._tag()
        for rid in stored - group.samples.keys():
            del self.table[self._key(gid, rid)]
            stored.discard(rid)
        for rid, sample in group.samples.items():
            if rid not in stored:
                entry = (part, sample, stamp, group.first_seen)
                self.table[self._key(gid, rid)] = self._encoder.encode(entry)
                stored.add(rid)
                self._meta[gid] = (part, stamp)
        if stored:
            groups[gid] = group
        else:
            groups.pop(gid, None)
            self._stored.pop(gid, None)
            self._meta.pop(gid, None)

    def __delitem__(self, gid: str) -> None:
        groups = self._load()
        del groups[gid]
        for rid in self._stored.pop(gid, set()):
            del self.table[self._key(gid, rid)]
        self._meta.pop(gid, None)

    def stamp_of(self, gid: str) -> int:
        """The stamp taken when the newest of the group's samples was written."""
        self._load()
        return self._meta[gid][1]

    def __iter__(self) -> Iterator[str]:
        groups, part = self._load(), self.partition()
        for gid in list(groups):
            if part is None or self._meta[gid][0] == part:
                yield gid

    def __contains__(self, gid: object) -> bool:
        return gid in self._load()

    def __len__(self) -> int:
        return sum(1 for _ in self)
