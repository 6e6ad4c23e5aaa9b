"""MutableMapping views over faust tables, so the pure core keeps its state in them.

Keys are `str` in the core and `bytes` in the table (raw serializers: a changelog hands bytes
back, so bytes are used from the start). Each value is stored as the MessagePack pair
[partition, value]: the source partition of the event that wrote it. faust writes a table
change to the changelog partition of the *current event*, so a periodic tick for partition p
may only touch entries written from p; iteration therefore yields only the entries of the
current event's partition (all entries outside an event, e.g. in tests). With `stamp`, each
value also carries a number taken when it was written (the filter stores the source offset).

Decoded values are cached (the filter reads a pending group on every sample): the view must be
the only writer of the table while it runs, and `forget_cache` must be called whenever the
table can change underneath (a partition assigned and recovered from the changelog, or revoked).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, MutableMapping
from typing import Any, Generic, TypeVar

import msgspec

V = TypeVar("V")


class TableView(MutableMapping[str, V], Generic[V]):
    """A str-keyed view of a faust table (or any bytes-keyed MutableMapping) holding `V`s."""

    def __init__(
        self,
        table: MutableMapping[bytes, bytes],
        value_type: type[V],
        partition: Callable[[], int | None],
        stamp: Callable[[], int] | None = None,
    ) -> None:
        self.table = table
        self.partition = partition
        self.stamp = stamp
        self._encoder = msgspec.msgpack.Encoder()
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
        part = self.partition()
        entry: tuple[Any, ...] = (-1 if part is None else part, value)
        if self.stamp is not None:
            entry += (self.stamp(),)
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
