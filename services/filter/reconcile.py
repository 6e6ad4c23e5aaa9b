"""After a restart or rebalance: which finished groups already reached the output topics.

A filter worker writes two logs that Kafka cannot update together without transactions: its
table changelog (the group is finished) and the outputs (`groups.kept`, `groups.dropped`). A
crash between the two either loses the group (changelog written, outputs not) or emits it
twice (outputs written, changelog not). So the app keeps each finished group's samples until
the source offset that finished it is committed (faust flushes the outputs before it commits),
and when it takes a partition over it reads back the output partitions for the groups finished
after the last commit: those found are not sent again, the others are. This module is that
read-back; it uses its own consumer (no group, nothing committed).
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from confluent_kafka import Consumer, KafkaError, TopicPartition

from rollstream.services.runtime.admin import end_offsets
from rollstream.services.runtime.settings import KafkaSettings


def read_back(
    kafka: KafkaSettings,
    wanted: Mapping[tuple[str, int], set[bytes]],
    since_ms: int,
    timeout_s: float = 60.0,
) -> dict[tuple[str, bytes], list[bytes]]:
    """Values of the records keyed by one of `wanted[(topic, partition)]`, written at or
    after `since_ms` (record timestamps, as the dead worker's producer stamped them), by
    (topic, key). Raises TimeoutError when the partitions cannot be read to their end."""
    cfg = kafka.client_config("filter-reconcile")
    cfg.update(
        {
            "group.id": "rollstream-nogroup-filter-reconcile",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "fetch.wait.max.ms": 50,
        }
    )
    consumer = Consumer(cfg)
    found: dict[tuple[str, bytes], list[bytes]] = {}
    try:
        tps = [TopicPartition(t, p, since_ms) for t, p in wanted]
        starts = consumer.offsets_for_times(tps, timeout=timeout_s)
        ends = end_offsets(consumer, [TopicPartition(t, p) for t, p in wanted], timeout_s)
        todo: dict[tuple[str, int], int] = {}
        assign = []
        for tp in starts:
            end = ends[(tp.topic, tp.partition)]
            start = tp.offset if tp.offset >= 0 else end  # -1: nothing at or after since_ms
            if start < end:
                todo[(tp.topic, tp.partition)] = end
                assign.append(TopicPartition(tp.topic, tp.partition, start))
        if not assign:
            return found
        consumer.assign(assign)
        deadline = time.monotonic() + timeout_s
        while todo and time.monotonic() < deadline:
            for m in consumer.consume(1000, 0.1):
                where = (str(m.topic()), int(m.partition() or 0))
                err = m.error()
                if err is not None:
                    if err.code() != KafkaError._PARTITION_EOF:
                        raise RuntimeError(f"reading {where} back: {err}")
                    todo.pop(where, None)
                    continue
                key = m.key()
                if key is not None and key in wanted.get(where, ()):
                    found.setdefault((where[0], key), []).append(m.value() or b"")
                if int(m.offset() or 0) + 1 >= todo.get(where, 0):
                    todo.pop(where, None)
        if todo:
            raise TimeoutError(f"could not read {sorted(todo)} to their end in {timeout_s:.0f} s")
        return found
    finally:
        consumer.close()
