"""Settings every service shares: where Kafka is, the namespace, client security, timeouts.

Values come from the run YAML (section `kafka`), then `ROLLSTREAM_*` environment variables,
then command-line flags — each later source wins. Bad values fail at start with the field name.
"""

from __future__ import annotations

import os
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

DEFAULT_BOOTSTRAP = "127.0.0.1:9092"


class KafkaSettings(BaseModel):
    """The Kafka cluster every stage talks to, and how its clients behave."""

    model_config = ConfigDict(extra="forbid")

    bootstrap: str = Field(DEFAULT_BOOTSTRAP, min_length=3)
    """Kafka bootstrap servers, `host:port[,host:port]` (env ROLLSTREAM_BOOTSTRAP)."""
    namespace: str | None = Field(None, pattern=r"^[A-Za-z0-9_\-]+$")
    """Prefix for every topic and consumer group, `NAME.` (env ROLLSTREAM_NAMESPACE)."""
    security: dict[str, str] = {}
    """Client security settings passed through verbatim with librdkafka names, e.g.
    {security.protocol: SASL_SSL, sasl.mechanism: SCRAM-SHA-512, sasl.username: ..., sasl.password:
    ..., ssl.ca.location: /etc/kafka/ca.crt}. faust stages get the same settings translated."""
    session_timeout_ms: int = Field(10_000, ge=1_000, le=300_000)
    """Consumer group session timeout. Lower means faster first joins and failure detection
    (`rollstream up` uses 6000, the lowest a stock Kafka broker accepts); the cluster default
    10 s is safe. Heartbeats go every session_timeout/10."""
    static_membership: bool = False
    """true: faust stages (scorer, filter) join their group with `--instance` as
    group.instance.id, so a restarted worker (a StatefulSet pod) takes its partitions back
    without a rebalance; used only with session_timeout_ms >= 10000 (a restart takes longer
    than a shorter timeout anyway). For a real Kafka cluster; off by default because the
    embedded broker (Tansu 0.6) mishandles static members: with a 6 s timeout it evicts one
    after every rebalance, in a loop (it holds their JoinGroup and SyncGroup 3 s each without
    counting them as signs of life), and with 10 s a static member restarted under its id
    joined but never completed its SyncGroup. false (default): dynamic membership; a dead
    worker's partitions move to the others when its session times out."""
    fetch_wait_max_ms: int = Field(100, ge=1, le=10_000)
    """The longest a consumer's fetch waits at the broker for new messages (librdkafka
    fetch.wait.max.ms; faust's fetch_max_wait_ms, which faust fixes at 1500). Kafka answers a
    fetch as soon as there is data, so there this only sets how often an idle consumer asks;
    the embedded broker (Tansu) looks for new data at intervals that grow with it: one hop's
    p50 was 130 ms at 500 and 22 ms at 100 (see benchmarks/RESULTS.md). Followers of the
    compacted control and weights topics, idle nearly always, wait at least 500 ms, except the
    generator's weights follower (`generator.weights_wait_ms`: pacing moves on each version)."""
    linger_ms: int = Field(5, ge=0, le=1_000)
    """How long a producer holds a message to send it in one request with those that follow
    (librdkafka linger.ms; faust's producer_linger_ms). Each request costs the broker work of
    its own: a stage that sends its messages one by one as it processes them (scorer, filter)
    makes a request per message with 0 and one per `linger_ms` with more, at the price of that
    much latency per hop."""
    partitions: int | None = Field(None, ge=1, le=1024)
    """Partitions of every multi-partition topic that rollstream creates (None: the registry's
    counts, 8 for the rollout and group topics; single-partition topics stay at 1). A topic's
    partitions cap how many replicas of the stage that reads it share the work, and every
    partition is a produce batch and a fetch of its own: few partitions mean larger batches
    and less broker work per message. `rollstream up` on its embedded broker uses the most
    replicas any stage has (1 for the default run) unless this is set."""
    client_id: str = "rollstream"
    """Kafka client id prefix; the stage name is appended."""
    replication: int = Field(1, ge=1, le=32)
    """Replication factor of the topics rollstream creates (registry topics and faust's
    changelogs). 1 suits the embedded broker; use 3 on a real cluster."""

    @field_validator("bootstrap")
    @classmethod
    def _host_port(cls, value: str) -> str:
        """Every server is `host:port` (a `SCHEME://` prefix allowed), so a typo fails here
        with the field's name instead of as an unreachable broker 10 s later."""
        for server in value.split(","):
            host, _, port = server.strip().split("://")[-1].rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"{server.strip()!r} is not host:port (e.g. kafka-0:9092)")
        return value

    def client_config(self, stage: str) -> dict[str, Any]:
        """librdkafka settings common to producers, consumers and the admin client."""
        cfg: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap,
            "client.id": f"{self.client_id}-{stage}",
        }
        cfg.update(self.security)
        return cfg


ENV_FIELDS = {"bootstrap": "ROLLSTREAM_BOOTSTRAP", "namespace": "ROLLSTREAM_NAMESPACE"}


def env_kafka() -> dict[str, str]:
    """The fields ROLLSTREAM_BOOTSTRAP / ROLLSTREAM_NAMESPACE set (those not empty)."""
    return {field: os.environ[var] for field, var in ENV_FIELDS.items() if os.environ.get(var)}


def kafka_from(bootstrap: str | None = None, namespace: str | None = None) -> KafkaSettings:
    """KafkaSettings from flags, falling back to the environment (including the run file named
    by ROLLSTREAM_CONFIG and ROLLSTREAM_KAFKA__* overrides, so security settings apply to
    `tap`, `topics` and `control` in a pod too), then defaults."""
    from rollstream.services.runtime.config import kafka_with, load_config  # imports settings

    base = load_config(os.environ.get("ROLLSTREAM_CONFIG")).kafka
    upd: dict[str, Any] = {}
    if bootstrap:
        upd["bootstrap"] = bootstrap
    if namespace:
        upd["namespace"] = namespace
    return kafka_with(base, upd, "--bootstrap, --namespace")
