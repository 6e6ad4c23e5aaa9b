"""The one topic registry: every topic, in flow order, with its key, message and owners.

`rollstream topics create`, the Helm chart's topic resources, the README's topic table and
the DLQ names all come from `TOPICS`. An optional namespace prefixes every topic (and every
consumer group) with `NAME.` so several runs can share one Kafka cluster.
"""

from __future__ import annotations

from dataclasses import dataclass

from rollstream.schemas._base import Message
from rollstream.schemas.control import ControlUpdate, EvalResult, WeightUpdate
from rollstream.schemas.deadletter import DeadLetter
from rollstream.schemas.group import DropRecord, Group
from rollstream.schemas.prompt import PromptStats, PromptTask
from rollstream.schemas.rollout import Rollout, ScoredRollout
from rollstream.schemas.train import Feedback, TrainBatch

DAY_MS = 24 * 3600 * 1000


@dataclass(frozen=True)
class Topic:
    name: str
    key: str
    message: type[Message]
    producer: str
    consumers: tuple[str, ...]
    partitions: int
    cleanup_policy: str = "delete"  # "delete" | "compact"
    retention_ms: int = 7 * DAY_MS  # -1 = forever
    notes: str = ""

    @property
    def dlq(self) -> str:
        return dlq_name(self.name)

    def config(self) -> dict[str, str]:
        """Kafka topic configs to create it with."""
        cfg = {"cleanup.policy": self.cleanup_policy, "retention.ms": str(self.retention_ms)}
        if self.name in ("rollouts.raw", "rollouts.scored", "groups.kept", "batches.train"):
            cfg["max.message.bytes"] = str(8 * 1024 * 1024)
        return cfg


TOPICS: tuple[Topic, ...] = (
    Topic(
        "prompts",
        "task_id",
        PromptTask,
        "feed",
        ("generator",),
        8,
        notes="group size n, sampling overrides, reference data for the scorer",
    ),
    Topic(
        "rollouts.raw",
        "group_id",
        Rollout,
        "generator",
        ("scorer",),
        8,
        notes="one message per sample; behaviour logprobs per token; policy_version",
    ),
    Topic(
        "rollouts.scored",
        "group_id",
        ScoredRollout,
        "scorer",
        ("filter",),
        8,
        notes="reward, reward components, scorer latency",
    ),
    Topic(
        "groups.kept",
        "group_id",
        Group,
        "filter",
        ("replay",),
        8,
        notes="the n samples, advantages, group stats",
    ),
    Topic(
        "groups.dropped",
        "group_id",
        DropRecord,
        "filter",
        ("inspection", "feed"),
        4,
        notes="reason and the stats that decided it",
    ),
    Topic(
        "prompt.stats",
        "task_id",
        PromptStats,
        "filter",
        ("feed",),
        4,
        notes="running pass rate per prompt (curriculum, pre-rollout skipping)",
    ),
    Topic(
        "batches.train",
        "learner_id",
        TrainBatch,
        "replay",
        ("learner",),
        1,
        notes="only as many as the learner asked for",
    ),
    Topic(
        "learner.feedback",
        "learner_id",
        Feedback,
        "learner",
        ("replay",),
        1,
        notes="credits (demand), new priorities, trained ids",
    ),
    Topic(
        "weights",
        "policy",
        WeightUpdate,
        "learner",
        ("generator", "replay", "filter"),
        1,
        cleanup_policy="compact",
        retention_ms=-1,
        notes="compacted; claim-check pointer, never the tensors",
    ),
    Topic(
        "control",
        "stage",
        ControlUpdate,
        "operator",
        ("feed", "generator", "scorer", "filter", "replay", "learner"),
        1,
        cleanup_policy="compact",
        retention_ms=-1,
        notes="compacted; applied live, without restart; answers keyed <stage>.applied",
    ),
    Topic(
        "eval.results",
        "run",
        EvalResult,
        "evaluator",
        ("ui",),
        1,
        notes="held-out greedy accuracy per policy version",
    ),
)

BY_NAME: dict[str, Topic] = {t.name: t for t in TOPICS}

DLQ_SUFFIX = ".dlq"


def dlq_name(name: str) -> str:
    return name + DLQ_SUFFIX


def dead_letter_topics() -> tuple[Topic, ...]:
    """One `<topic>.dlq` per topic, keyed by the original key, holding DeadLetters."""
    return tuple(
        Topic(
            dlq_name(t.name),
            t.key,
            DeadLetter,
            "any consumer",
            ("inspection",),
            1,
            retention_ms=14 * DAY_MS,
            notes=f"undecodable messages from {t.name}",
        )
        for t in TOPICS
    )


def all_topics() -> tuple[Topic, ...]:
    """Every topic the system creates: the registry plus each one's dead-letter topic."""
    return TOPICS + dead_letter_topics()


def lookup(name: str) -> Topic:
    """The Topic for a registry name or a DLQ name; KeyError names the topic."""
    for t in all_topics():
        if t.name == name:
            return t
    raise KeyError(f"unknown topic {name!r}; known: {', '.join(t.name for t in TOPICS)}")


def qualified(name: str, namespace: str | None) -> str:
    """The real Kafka topic (or group) name under an optional namespace."""
    return f"{namespace}.{name}" if namespace else name


def unqualified(name: str, namespace: str | None) -> str:
    if namespace and name.startswith(namespace + "."):
        return name[len(namespace) + 1 :]
    return name
