"""Topic administration: create every registry topic (idempotent) and describe them.

Topics are always created explicitly from schemas/topics.py, with their partitions and config;
auto-created topics can get a partition count nobody asked for.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import ConsumerGroupTopicPartitions, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from rollstream.schemas.topics import Topic, all_topics, qualified, unqualified
from rollstream.services.runtime.settings import KafkaSettings


def admin_client(kafka: KafkaSettings) -> AdminClient:
    return AdminClient(kafka.client_config("admin"))


def create_topics(
    kafka: KafkaSettings,
    topics: tuple[Topic, ...] | None = None,
    partitions: dict[str, int] | None = None,
    replication: int | None = None,
    timeout_s: float = 30.0,
) -> dict[str, str]:
    """Create each topic that does not exist yet. Returns name -> "created" | "exists".

    `partitions` overrides registry defaults per topic name (e.g. from the run config)."""
    admin = admin_client(kafka)
    replication = replication or kafka.replication
    topics = topics if topics is not None else all_topics()
    existing = set(admin.list_topics(timeout=timeout_s).topics)
    result: dict[str, str] = {}
    new = []
    for t in topics:
        real = qualified(t.name, kafka.namespace)
        if real in existing:
            result[t.name] = "exists"
            continue
        n = (partitions or {}).get(t.name, t.partitions)
        if kafka.partitions is not None and n > 1:
            n = kafka.partitions
        new.append(
            NewTopic(real, num_partitions=n, replication_factor=replication, config=t.config())
        )
    if new:
        for real, fut in admin.create_topics(new, request_timeout=timeout_s).items():
            name = unqualified(real, kafka.namespace)
            try:
                fut.result()
                result[name] = "created"
            except KafkaException as exc:
                if exc.args[0].code() == 36:  # TOPIC_ALREADY_EXISTS (a racing creator)
                    result[name] = "exists"
                else:
                    raise
    return result


@dataclass
class TopicInfo:
    name: str
    partitions: int
    end_offsets: list[int]
    group_lags: dict[str, int] = field(default_factory=dict)

    @property
    def messages(self) -> int:
        return sum(self.end_offsets)


def describe(
    kafka: KafkaSettings, names: list[str] | None = None, timeout_s: float = 10.0
) -> list[TopicInfo]:
    """Partitions and end offsets of each registry topic, and each consumer group's lag on it."""
    from confluent_kafka import Consumer

    admin = admin_client(kafka)
    md = admin.list_topics(timeout=timeout_s)
    wanted = names or [t.name for t in all_topics()]
    probe = Consumer(
        {
            **kafka.client_config("admin"),
            "group.id": "rollstream-admin-probe",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "fetch.wait.max.ms": 10,  # an empty fetch answers at once (see end_offsets)
        }
    )
    infos: dict[str, TopicInfo] = {}
    try:
        present = [n for n in wanted if qualified(n, kafka.namespace) in md.topics]
        tps = [
            TopicPartition(qualified(n, kafka.namespace), p)
            for n in present
            for p in sorted(md.topics[qualified(n, kafka.namespace)].partitions)
        ]
        ends = end_offsets(probe, tps, timeout_s)
        for name in present:
            real = qualified(name, kafka.namespace)
            parts = sorted(md.topics[real].partitions)
            infos[name] = TopicInfo(name, len(parts), [ends[(real, p)] for p in parts])
    finally:
        probe.close()
    for group, offsets in _group_offsets(admin, kafka, timeout_s).items():
        for (real, part), committed in offsets.items():
            name = unqualified(real, kafka.namespace)
            info = infos.get(name)
            if info is None or part >= len(info.end_offsets):
                continue
            lag = info.end_offsets[part] - max(committed, 0)
            info.group_lags[group] = info.group_lags.get(group, 0) + max(lag, 0)
    return [infos[n] for n in wanted if n in infos]


def _group_offsets(
    admin: AdminClient, kafka: KafkaSettings, timeout_s: float
) -> dict[str, dict[tuple[str, int], int]]:
    """Committed offsets of every consumer group (of this namespace)."""
    out: dict[str, dict[tuple[str, int], int]] = {}
    try:
        listing = admin.list_consumer_groups(request_timeout=timeout_s).result()
    except Exception:
        return out
    groups = [g.group_id for g in listing.valid]
    if kafka.namespace:
        groups = [g for g in groups if g.startswith(kafka.namespace + ".")]
    groups = [g for g in groups if not g.startswith("rollstream-admin") and "nogroup" not in g]
    for g in groups:
        try:
            futs = admin.list_consumer_group_offsets(
                [ConsumerGroupTopicPartitions(g)], request_timeout=timeout_s
            )
            res = next(iter(futs.values())).result()
        except Exception:
            continue
        out[unqualified(g, kafka.namespace)] = {
            (tp.topic, tp.partition): tp.offset for tp in res.topic_partitions if tp.offset >= 0
        }
    return out


def end_offsets(
    consumer: Any, tps: list[TopicPartition], timeout_s: float = 10.0
) -> dict[tuple[str, int], int]:
    """The end offset (high watermark) of each partition, as a fetch response reports it.

    `get_watermark_offsets` asks ListOffsets(latest), which the embedded broker (Tansu) answers
    with the last record batch's base offset + 1: short of the end whenever that batch holds
    several records. A fetch response carries the true high watermark, so this assigns every
    partition at that (possibly short) end and reads until each one reports end-of-partition;
    on any other Kafka that is one empty fetch. `consumer` must have enable.partition.eof on
    (and a short fetch.wait.max.ms, or each empty fetch waits 500 ms) and must not be assigned
    anything else; it is left unassigned."""
    from confluent_kafka import OFFSET_END, KafkaError

    ends: dict[tuple[str, int], int] = {}
    if not tps:
        return ends
    todo = {(tp.topic, tp.partition) for tp in tps}
    consumer.assign([TopicPartition(t, p, OFFSET_END) for t, p in todo])
    deadline = time.monotonic() + timeout_s
    try:
        while todo and time.monotonic() < deadline:
            for m in consumer.consume(1000, 0.05):
                err = m.error()
                if err is not None and err.code() == KafkaError._PARTITION_EOF:
                    ends[(m.topic(), m.partition())] = m.offset()
                    todo.discard((m.topic(), m.partition()))
    finally:
        consumer.unassign()
    for t, p in todo:  # no answer in time: fall back to what ListOffsets says
        ends[(t, p)] = consumer.get_watermark_offsets(TopicPartition(t, p), timeout=timeout_s)[1]
    return ends


class FlowProbe:
    """One long-lived client that reads, on each `read()`, the total end offset (messages ever
    written) of some registry topics and how far one consumer group lags on one of them (the
    generator asks several times a second, so the client is kept, not built per call). The
    group is only read (`committed`), never joined or committed to."""

    def __init__(
        self,
        kafka: KafkaSettings,
        topics: list[str],
        lag_group: str,
        lag_topic: str,
        timeout_s: float = 5.0,
    ) -> None:
        from confluent_kafka import Consumer

        self.kafka, self.timeout_s = kafka, timeout_s
        self.lag_topic = qualified(lag_topic, kafka.namespace)
        self.consumer = Consumer(
            {
                **kafka.client_config("admin"),
                "group.id": qualified(lag_group, kafka.namespace),
                "enable.auto.commit": False,
                "enable.partition.eof": True,
                "fetch.wait.max.ms": 10,  # an empty fetch answers at once (see end_offsets)
            }
        )
        md = admin_client(kafka).list_topics(timeout=timeout_s)
        self.tps: list[TopicPartition] = []
        for t in {*topics, lag_topic}:
            real = qualified(t, kafka.namespace)
            parts = md.topics[real].partitions if real in md.topics else {}
            self.tps += [TopicPartition(real, p) for p in sorted(parts)]
        self.lag_tps = [tp for tp in self.tps if tp.topic == self.lag_topic]

    def read(self) -> tuple[dict[str, int], int]:
        """({registry topic: total end offset}, lag of the group on the lag topic)."""
        ends = end_offsets(self.consumer, self.tps, self.timeout_s)
        totals: dict[str, int] = {}
        for (t, _), end in ends.items():
            name = unqualified(t, self.kafka.namespace)
            totals[name] = totals.get(name, 0) + end
        lag = 0
        for tp in self.consumer.committed(self.lag_tps, timeout=self.timeout_s):
            lag += max(0, ends[(tp.topic, tp.partition)] - max(tp.offset, 0))
        return totals, lag

    def close(self) -> None:
        self.consumer.close()
