"""After a restart or rebalance: which finished groups already reached the output topics.

A filter worker writes two logs that Kafka cannot update together without transactions: its
table changelog (the group is finished) and the outputs (`groups.kept`, `groups.dropped`). A
crash between the two either loses the group (changelog written, outputs not) or emits it
twice (outputs written, changelog not). So the app keeps each finished group's samples until
the source offset that finished it is committed (faust flushes the outputs before it commits),
and when it takes a partition over it reads back the output partitions for the groups touched
after the last commit, and for the groups with a sample past it (`replayed_groups`: a changelog
write lost with the dead worker leaves no mark in the tables): those found are not sent again,
the others are. This module is those reads, through a reader.Reader (no group joined, nothing
committed).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from rollstream.schemas.topics import qualified, unqualified
from rollstream.services.runtime.reader import Reader
from rollstream.services.runtime.settings import KafkaSettings

log = logging.getLogger("rollstream.filter")


def replayed_groups(
    kafka: KafkaSettings, topic: str, part: int, start: int, timeout_s: float = 60.0
) -> dict[str, float]:
    """The keys (group ids) of the records of `topic` (registry name) partition `part` from
    offset `start` to its end, each with the timestamp (s) of its first record there: the
    samples a worker taking the partition over reads again. Raises like `read_back`."""
    keys: dict[str, float] = {}
    with Reader(kafka, "filter-reconcile", fetch_wait_ms=50) as reader:
        end = reader.ends([(topic, part)], timeout_s)[(topic, part)]
        for r in reader.read({(topic, part): (start, end)}, timeout_s, strict=True):
            if r.key is not None:
                keys.setdefault(r.key.decode(errors="replace"), r.timestamp_ms / 1000)
    return keys


def read_back(
    kafka: KafkaSettings,
    wanted: Mapping[tuple[str, int], set[bytes]],
    since_ms: int,
    timeout_s: float = 60.0,
) -> dict[tuple[str, bytes], list[bytes]]:
    """Values of the records keyed by one of `wanted[(topic, partition)]` (real topic names),
    written at or after `since_ms` (record timestamps, as the dead worker's producer stamped
    them), by (topic, key). Raises TimeoutError when the partitions cannot be read to their
    end, BusError on any client error."""
    ns = kafka.namespace
    keys = {(unqualified(t, ns), p): k for (t, p), k in wanted.items()}
    found: dict[tuple[str, bytes], list[bytes]] = {}
    with Reader(kafka, "filter-reconcile", fetch_wait_ms=50) as reader:
        starts = reader.offsets_for_times({tp: since_ms for tp in keys}, timeout_s)
        ends = reader.ends(keys, timeout_s)
        ranges = {tp: (ends[tp] if s is None else s, ends[tp]) for tp, s in starts.items()}
        log.info("reading back (topic, partition): (start, end) %s", ranges)
        for r in reader.read(ranges, timeout_s, strict=True):
            if r.key is not None and r.key in keys[(r.topic, r.partition)]:
                found.setdefault((qualified(r.topic, ns), r.key), []).append(r.value)
    return found
