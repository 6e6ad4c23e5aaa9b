"""`rollstream tap TOPIC`: decode a topic live, without joining or moving any consumer group.

Reads: one topic - a registry topic, a `<topic>.dlq`, or any other topic - by assigning every
partition directly (no group join, no offsets committed, so no stage's position moves), from
the end by default or the oldest message with `--from-beginning`. Stops once every partition
is caught up unless `--follow`. Writes: stdout only (one line per message; JSON lines with
`--json`; a summary with `--stats`).

Messages are decoded as the topic's registry type, else as whatever registered schema they
say they are (`decode_any`). A message that decodes as neither is shown as an error line with
its partition and offset, and tap goes on: it never stops on bad data.
"""

from __future__ import annotations

import argparse
import base64
import json
import math
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import msgspec
import numpy as np

from rollstream.schemas import Message, SchemaError, decode, decode_any
from rollstream.schemas.topics import lookup, qualified, unqualified
from rollstream.services.runtime.settings import KafkaSettings, kafka_from
from rollstream.services.runtime.tapstats import TapStats
from rollstream.services.runtime.where import Where, WhereError, resolve_path

ID_FIELDS = frozenset({"prompt_ids", "completion_ids"})  # packed little-endian int32
FLOAT_FIELDS = frozenset({"logprobs"})  # packed little-endian float32

# The fields one human-readable line shows per schema (dotted paths; `task` on a
# ScoredRollout resolves inside its rollout).
SUMMARY: dict[str, tuple[str, ...]] = {
    "PromptTask": ("task_id", "task", "n", "prompt"),
    "Rollout": (
        "task",
        "sample_index",
        "policy_version",
        "finish_reason",
        "completion_ids",
        "completion",
    ),
    "ScoredRollout": (
        "reward",
        "correct",
        "task",
        "policy_version",
        "finish_reason",
        "completion_ids",
        "completion",
    ),
    "Group": (
        "task",
        "samples",
        "advantages",
        "stats.reward_mean",
        "stats.pass_rate",
        "policy_version",
    ),
    "DropRecord": ("task_id", "reason", "filter", "scope", "stats"),
    "PromptStats": ("task_id", "pass_rate", "last_pass_rate", "groups"),
    "TrainBatch": ("seq", "items", "learner_version"),
    "Feedback": ("credits_total", "step", "learner_version", "trained_batches"),
    "WeightUpdate": ("policy", "version", "uri", "size_bytes"),
    "ControlUpdate": ("stage", "revision", "params"),
    "EvalResult": ("policy_version", "accuracy", "n", "per_task"),
    "DeadLetter": ("topic", "partition", "offset", "error"),
}


class TapError(RuntimeError):
    """A topic that does not exist, or a client that cannot reach Kafka."""


@dataclass(frozen=True)
class RawMessage:
    topic: str  # as asked for (namespace stripped)
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes | None]]
    timestamp_ms: int


def read_raw(
    kafka: KafkaSettings, topic: str, *, from_beginning: bool, follow: bool, stage: str = "tap"
) -> Iterator[RawMessage]:
    """Every message of `topic` in arrival order, read by partition assignment (no group).

    Without `follow` it returns once every partition has reached its end."""
    from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, KafkaError, TopicPartition

    real = qualified(topic, kafka.namespace)
    cfg = kafka.client_config(stage)
    cfg.update(
        {
            "group.id": f"rollstream-nogroup-{stage}",  # required by librdkafka, never joined
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "enable.partition.eof": True,
            "fetch.max.bytes": 64 * 1024 * 1024,
            "max.partition.fetch.bytes": 16 * 1024 * 1024,
        }
    )
    consumer = Consumer(cfg)
    try:
        md = consumer.list_topics(timeout=10)
        if real not in md.topics or md.topics[real].error is not None:
            raise TapError(
                f"topic {real!r} does not exist at {kafka.bootstrap}; "
                f"run `rollstream topics create` (or check --namespace)"
            )
        start = OFFSET_BEGINNING if from_beginning else OFFSET_END
        parts = sorted(md.topics[real].partitions)
        consumer.assign([TopicPartition(real, p, start) for p in parts])
        at_end: set[int] = set()
        while True:
            for m in consumer.consume(500, 0.5):
                err = m.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        at_end.add(m.partition())
                        continue
                    if err.fatal():
                        raise TapError(str(err))
                    continue  # transient (the client retries on its own)
                at_end.discard(m.partition())
                yield RawMessage(
                    topic,
                    m.partition(),
                    m.offset(),
                    m.key(),
                    m.value() or b"",
                    list(m.headers() or []),
                    m.timestamp()[1],
                )
            if not follow and len(at_end) == len(parts):
                return
    finally:
        consumer.close()


def registry_type(topic: str) -> type[Message] | None:
    try:
        return lookup(topic).message
    except KeyError:
        return None


def field_names(typ: type[Message]) -> set[str]:
    """The names a `--where` or `--fields` may start with for messages of `typ`."""
    names = {"schema"}
    for f in msgspec.structs.fields(typ):
        names.add(f.encode_name)
        if f.encode_name == "rollout" and isinstance(f.type, type):
            names |= {g.encode_name for g in msgspec.structs.fields(f.type)}
    return names


def decode_message(value: bytes, typ: type[Message] | None) -> Message:
    """As the topic's type, else as any registered schema; SchemaError names the problem."""
    if typ is None:
        return decode_any(value)
    try:
        return decode(value, typ)
    except SchemaError as exc:
        try:
            return decode_any(value)
        except SchemaError:
            raise exc from None


def builtins(msg: Message) -> dict[str, Any]:
    """The message as a dict of plain values; bytes fields stay bytes."""
    return msgspec.to_builtins(msg, builtin_types=(bytes,))


def plain(value: Any, name: str = "") -> Any:
    """JSON-ready form: token ids as ints, logprobs as floats (4 decimals), other bytes base64,
    non-finite floats as strings ("nan", "inf", "-inf")."""
    if isinstance(value, dict):
        return {k: plain(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, bytes):
        if name in ID_FIELDS and len(value) % 4 == 0:
            return np.frombuffer(value, dtype="<i4").tolist()
        if name in FLOAT_FIELDS and len(value) % 4 == 0:
            return [_float(round(x, 4)) for x in np.frombuffer(value, dtype="<f4").tolist()]
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, float):
        return _float(value)
    return value


def _float(x: float) -> float | str:
    return x if math.isfinite(x) else str(x)


def key_text(key: bytes | None) -> str | None:
    """A Kafka key as text (UTF-8), or base64 when it is not text."""
    if key is None:
        return None
    try:
        return key.decode("utf-8")
    except UnicodeDecodeError:
        return base64.b64encode(key).decode("ascii")


def add_text(d: Any, tokenizer: Any) -> None:
    """Next to each token-id list, `<name>_text`: the ids detokenized by `tokenizer`."""
    if isinstance(d, dict):
        for k in [k for k in d if k in ID_FIELDS and isinstance(d[k], list)]:
            d[f"{k}_text"] = tokenizer.decode(d[k], skip_special_tokens=False)
        for v in d.values():
            add_text(v, tokenizer)
    elif isinstance(d, list):
        for v in d:
            add_text(v, tokenizer)


def select(d: dict[str, Any], paths: list[str]) -> dict[str, Any]:
    """`{path: value}` for each dotted path (None where the message has no such field)."""
    out: dict[str, Any] = {}
    for p in paths:
        try:
            out[p] = resolve_path(d, p)
        except WhereError:
            out[p] = None
    return out


def parse_fields(spec: str | None, known: set[str] | None) -> list[str]:
    if not spec:
        return []
    paths = [p.strip() for p in spec.split(",") if p.strip()]
    for p in paths:
        head = p.split(".")[0]
        if known is not None and head not in known:
            raise WhereError(
                f"unknown field {head!r} in --fields; fields: {', '.join(sorted(known))}"
            )
    return paths


class HumanOut:
    """One compact line per message (rich; styles only on a terminal)."""

    def __init__(self) -> None:
        from rich.console import Console

        self.console = Console(highlight=False, soft_wrap=True)

    def message(self, raw: RawMessage, d: dict[str, Any], paths: list[str]) -> None:
        from rich.text import Text

        shown = select(d, paths) if paths else select(d, list(_summary_paths(d)))
        line = Text()
        line.append(f"{raw.partition}@{raw.offset}", style="dim")
        line.append(f"  {key_text(raw.key) or '-'}  ", style="cyan")
        line.append(str(d.get("schema", "?")), style="bold")
        for k, v in shown.items():
            line.append(f"  {k}=", style="dim")
            line.append(_compact(k, v))
        self.console.print(line)

    def error(self, raw: RawMessage, reason: str) -> None:
        from rich.text import Text

        line = Text()
        line.append(f"{raw.partition}@{raw.offset}", style="dim")
        line.append(f"  {key_text(raw.key) or '-'}  ", style="cyan")
        line.append(f"ERROR undecodable ({len(raw.value)} bytes): {reason}", style="bold red")
        self.console.print(line)


class JsonOut:
    """JSON lines: the decoded message plus `_topic`, `_partition`, `_offset`, `_key`."""

    def message(self, raw: RawMessage, d: dict[str, Any], paths: list[str]) -> None:
        body = select(d, paths) if paths else d
        self._write({**body, **_coords(raw)})

    def error(self, raw: RawMessage, reason: str) -> None:
        self._write({"_error": reason, **_coords(raw), "_size": len(raw.value)})

    @staticmethod
    def _write(obj: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(obj, ensure_ascii=False) + "\n")
        sys.stdout.flush()


def _coords(raw: RawMessage) -> dict[str, Any]:
    return {
        "_topic": raw.topic,
        "_partition": raw.partition,
        "_offset": raw.offset,
        "_key": key_text(raw.key),
    }


def _summary_paths(d: dict[str, Any]) -> tuple[str, ...]:
    paths = SUMMARY.get(str(d.get("schema")))
    if paths is None:
        paths = tuple(k for k in d if k not in ("schema", "v"))[:6]
    return paths


def _compact(name: str, v: Any) -> str:
    leaf = name.rsplit(".", 1)[-1]
    if isinstance(v, list) and leaf in ID_FIELDS:
        return f"{len(v)} tokens"
    if isinstance(v, list) and v and isinstance(v[0], dict):
        return f"[{len(v)}]"
    if isinstance(v, float):
        return f"{v:.4g}"
    text = json.dumps(v, ensure_ascii=False) if not isinstance(v, str) else repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


def main(args: argparse.Namespace) -> int:
    """`rollstream tap`: print a topic's messages (see the module docstring)."""
    kafka = kafka_from(args.bootstrap, args.namespace)
    typ = registry_type(args.topic)
    known = field_names(typ) if typ is not None else None
    try:
        where = Where(args.where, known) if args.where else None
        paths = parse_fields(args.fields, known)
    except WhereError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    tokenizer = _load_tokenizer(args.tokenizer) if args.tokenizer else None
    out: HumanOut | JsonOut = JsonOut() if args.json else HumanOut()
    stats = TapStats() if args.stats else None
    where_failed: list[str] = []
    shown = 0
    try:
        if args.limit is not None and args.limit <= 0:
            return 0
        for raw in read_raw(
            kafka,
            unqualified(args.topic, kafka.namespace),
            from_beginning=args.from_beginning,
            follow=args.follow,
        ):
            try:
                msg = decode_message(raw.value, typ)
            except SchemaError as exc:
                if stats is not None:
                    stats.add_error()
                else:
                    out.error(raw, str(exc))
                shown += 1
            else:
                b = builtins(msg)
                d = plain(b)
                if where is not None and not _holds(where, d, where_failed):
                    continue
                if stats is not None:
                    stats.add(b, len(raw.value), raw.timestamp_ms)
                else:
                    if tokenizer is not None:
                        add_text(d, tokenizer)
                    out.message(raw, d, paths)
                shown += 1
            if args.limit is not None and shown >= args.limit:
                break
    except KeyboardInterrupt:
        pass
    except BrokenPipeError:  # e.g. `| head`: the reader has gone; not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except TapError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if stats is not None:
        stats.print(as_json=args.json)
    if where_failed:
        print(
            f"note: --where could not be evaluated on {len(where_failed)} message(s) "
            f"(treated as not matching), e.g.: {where_failed[0]}",
            file=sys.stderr,
        )
    if shown == 0 and not args.from_beginning and not args.follow:
        print(
            f"note: nothing new at the end of {args.topic!r}; use --from-beginning or --follow",
            file=sys.stderr,
        )
    return 0


def _holds(where: Where, d: dict[str, Any], failed: list[str]) -> bool:
    try:
        return where.matches(d)
    except WhereError as exc:
        failed.append(str(exc))
        return False


def _load_tokenizer(path: str) -> Any:
    from transformers import AutoTokenizer  # heavy: only with --tokenizer

    return AutoTokenizer.from_pretrained(path)
