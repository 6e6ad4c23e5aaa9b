"""Topic administration, the admin-client half of the bus: create every registry topic
(idempotent), describe them, list offsets and the groups' commits.

Topics are always created explicitly from rollstream/schemas/topics.py, with their partitions and
config; auto-created topics can get a partition count nobody asked for. Offsets as a fetch reports
them (exact on Tansu too) come from reader.Reader.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from confluent_kafka import ConsumerGroupTopicPartitions, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic, OffsetSpec

from rollstream.schemas.topics import Topic, all_topics, qualified, unqualified
from rollstream.services.runtime.bus import topic_partitions
from rollstream.services.runtime.reader import Reader
from rollstream.services.runtime.settings import KafkaSettings


def admin_client(kafka: KafkaSettings) -> AdminClient:
    return AdminClient(kafka.client_config("admin"))


def bootstrap_client(bootstrap: str) -> AdminClient:
    """An admin client of `bootstrap` alone, quick to give up on a connection and quiet: for
    asking whether a broker answers yet (`list_topics`)."""
    return AdminClient(
        {"bootstrap.servers": bootstrap, "socket.connection.setup.timeout.ms": 1000, "log_level": 0}
    )


def unreachable(kafka: KafkaSettings, timeout_s: float = 10.0) -> str | None:
    """None when `kafka` answers a metadata request within `timeout_s`, asked with its own
    client settings (a secured cluster as the stages will ask it); else the client's reason."""
    conf = {**kafka.client_config("admin"), "socket.connection.setup.timeout.ms": 3000}
    try:
        AdminClient({**conf, "log_level": 0}).list_topics(timeout=timeout_s)
    except KafkaException as exc:
        return exc.args[0].str() if exc.args and hasattr(exc.args[0], "str") else str(exc)
    return None


def partitions(
    kafka: KafkaSettings, topic: str, timeout_s: float = 10.0, admin: AdminClient | None = None
) -> list[int]:
    """The partition numbers of `topic`; BusError if it does not exist."""
    real = qualified(topic, kafka.namespace)
    md = (admin or admin_client(kafka)).list_topics(real, timeout=timeout_s)
    return topic_partitions(md, real, kafka.bootstrap)


def listed_offsets(
    admin: AdminClient, real: str, parts: list[int], *, earliest: bool, timeout_s: float
) -> dict[int, int]:
    """Per partition of topic `real`, its first (`earliest`) or end offset as ListOffsets
    answers (the end is short on Tansu when the last record batch holds several records)."""
    spec = OffsetSpec.earliest() if earliest else OffsetSpec.latest()
    futs = admin.list_offsets(
        {TopicPartition(real, p): spec for p in parts}, request_timeout=timeout_s
    )
    return {tp.partition: fut.result().offset for tp, fut in futs.items()}


def committed_offsets(
    admin: AdminClient, group: str, tps: list[tuple[str, int]] | None, timeout_s: float
) -> dict[tuple[str, int], int]:
    """The offsets group `group` (real name) has committed, by (real topic, partition): on
    `tps`, or on every partition it committed to. Partitions never committed are absent."""
    req = None if tps is None else [TopicPartition(t, p) for t, p in tps]
    futs = admin.list_consumer_group_offsets(
        [ConsumerGroupTopicPartitions(group, req)], request_timeout=timeout_s
    )
    res = next(iter(futs.values())).result()
    return {(tp.topic, tp.partition): tp.offset for tp in res.topic_partitions if tp.offset >= 0}


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
    admin = admin_client(kafka)
    md = admin.list_topics(timeout=timeout_s)
    wanted = names or [t.name for t in all_topics()]
    present = {
        n: sorted(md.topics[qualified(n, kafka.namespace)].partitions)
        for n in wanted
        if qualified(n, kafka.namespace) in md.topics
    }
    with Reader(kafka, "admin", fetch_wait_ms=10) as probe:  # an empty fetch answers at once
        ends = probe.ends([(n, p) for n, parts in present.items() for p in parts], timeout_s)
    infos = {
        n: TopicInfo(n, len(parts), [ends[(n, p)] for p in parts]) for n, parts in present.items()
    }
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
            out[unqualified(g, kafka.namespace)] = committed_offsets(admin, g, None, timeout_s)
        except Exception:
            continue
    return out


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
        self.kafka, self.timeout_s = kafka, timeout_s
        self.lag_topic = lag_topic
        # an empty fetch answers at once (see Reader.ends)
        self.reader = Reader(kafka, "admin", group=lag_group, fetch_wait_ms=10)
        md = admin_client(kafka).list_topics(timeout=timeout_s)
        self.tps: list[tuple[str, int]] = []
        for t in {*topics, lag_topic}:
            real = qualified(t, kafka.namespace)
            parts = md.topics[real].partitions if real in md.topics else {}
            self.tps += [(t, p) for p in sorted(parts)]
        self.lag_tps = [tp for tp in self.tps if tp[0] == lag_topic]

    def read(self) -> tuple[dict[str, int], int]:
        """({registry topic: total end offset}, lag of the group on the lag topic)."""
        ends = self.reader.ends(self.tps, self.timeout_s)
        totals: dict[str, int] = {}
        for (t, _), end in ends.items():
            totals[t] = totals.get(t, 0) + end
        lag = 0
        for tp, committed in self.reader.committed(self.lag_tps, self.timeout_s).items():
            lag += max(0, ends[tp] - (committed or 0))
        return totals, lag

    def close(self) -> None:
        self.reader.close()
