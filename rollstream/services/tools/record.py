"""`rollstream record TOPIC FILE` and `rollstream replay FILE [TOPIC]`: a topic range to a file
and back, byte for byte (so a recorded `rollouts.scored` can feed a new learner later).

File format: a MessagePack stream. First a header map
    {"format": "rollstream-recording", "version": 1, "topic": <registry name>,
     "partitions": <partition count>, "created_at": <unix seconds>}
then one map per Kafka record, in the order read
    {"topic", "partition", "offset", "key" (bin|nil), "value" (bin, unmodified),
     "headers" ([[name, bin|nil], ...]), "timestamp_ms"}.
Any MessagePack reader can read it; `iter_recording` does it here.

record - Reads: the topic from its oldest message by partition assignment (no consumer group,
nothing committed) until caught up, `--limit N` records, or Ctrl-C with `--follow`. Undecodable
messages are recorded too, as they are. Writes: FILE only.

replay - Reads: FILE. Writes: the target topic (default: the recorded one, in this namespace)
with the original keys, values and headers; each record goes to its original partition when the
target has as many partitions as the source had, else the key picks it. Timestamps are new
(the original ones would fall out of retention). Idempotent producer, flushed before exit;
`--rate` paces it in messages per second. Replaying twice writes everything twice.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import msgspec

from rollstream.schemas.topics import qualified, unqualified
from rollstream.services.runtime.admin import partitions
from rollstream.services.runtime.bus import BusError, Producer, Record
from rollstream.services.runtime.reader import Reader
from rollstream.services.runtime.settings import KafkaSettings
from rollstream.services.tools.target import tool_kafka

FORMAT = "rollstream-recording"
VERSION = 1


class RecordingError(ValueError):
    """A file that is not a rollstream recording, or one written by a newer version."""


def write_recording(
    out: BinaryIO, topic: str, partitions: int, records: Iterator[Record[bytes]]
) -> int:
    """Write the header and every record to `out`; returns the number of records."""
    enc = msgspec.msgpack.Encoder()
    out.write(
        enc.encode(
            {
                "format": FORMAT,
                "version": VERSION,
                "topic": topic,
                "partitions": partitions,
                "created_at": time.time(),
            }
        )
    )
    n = 0
    for r in records:
        out.write(
            enc.encode(
                {
                    "topic": r.topic,
                    "partition": r.partition,
                    "offset": r.offset,
                    "key": r.key,
                    "value": r.value,
                    "headers": [[k, v] for k, v in r.headers],
                    "timestamp_ms": r.timestamp_ms,
                }
            )
        )
        n += 1
    return n


def read_header(path: str | Path) -> dict[str, Any]:
    """The header of a recording; RecordingError if `path` is not one."""
    with open(path, "rb") as f:
        return _header(_unpacker(f), path)


def iter_recording(path: str | Path) -> Iterator[Record[bytes]]:
    """Every record of the recording at `path`, in order (RecordingError if not a recording).

    For programmatic use, e.g. `decode(r.value, ScoredRollout) for r in iter_recording(p)`."""
    with open(path, "rb") as f:
        unpacker = _unpacker(f)
        _header(unpacker, path)
        for i, obj in enumerate(unpacker):
            try:
                yield Record(
                    topic=obj["topic"],
                    partition=obj["partition"],
                    offset=obj["offset"],
                    key=obj["key"],
                    value=obj["value"],
                    timestamp_ms=obj.get("timestamp_ms", -1),
                    headers=[(k, v) for k, v in obj.get("headers") or []],
                )
            except (KeyError, TypeError, ValueError) as exc:
                raise RecordingError(f"{path}: record {i} is malformed: {exc!r}") from None


def _unpacker(f: BinaryIO) -> Any:
    import msgpack  # streaming reader; plain data only (no ext types, no pickle)

    return msgpack.Unpacker(f, raw=False, strict_map_key=True)


def _header(unpacker: Any, path: str | Path) -> dict[str, Any]:
    try:
        head = next(unpacker)
    except StopIteration:
        raise RecordingError(f"{path} is empty, not a rollstream recording") from None
    except Exception as exc:  # msgpack raises several types on garbage
        raise RecordingError(f"{path} is not a rollstream recording ({exc})") from None
    if not isinstance(head, dict) or head.get("format") != FORMAT:
        raise RecordingError(
            f"{path} is not a rollstream recording (its first MessagePack "
            f"object is not a header with format={FORMAT!r})"
        )
    if head.get("version") != VERSION:
        raise RecordingError(
            f"{path} is a version {head.get('version')!r} recording; this "
            f"rollstream reads version {VERSION}"
        )
    return head


def record_main(args: argparse.Namespace) -> int:
    """`rollstream record TOPIC FILE`: save a topic from its oldest message to FILE."""
    from rollstream.schemas import SchemaError
    from rollstream.services.tools.tap import decode_message, registry_type

    kafka = tool_kafka(args)
    topic = unqualified(args.topic, kafka.namespace)
    typ = registry_type(topic)
    count = undecodable = 0

    def records(reader: Reader) -> Iterator[Record[bytes]]:
        nonlocal count, undecodable
        if args.limit is not None and args.limit <= 0:
            return
        for raw in reader.tail(topic, from_beginning=True, follow=args.follow):
            try:
                decode_message(raw.value, typ)
            except SchemaError:
                undecodable += 1
            count += 1
            yield raw
            if args.limit is not None and count >= args.limit:
                return

    with Reader(kafka, "record") as reader:
        try:
            partitions = len(reader.partitions(topic))
        except BusError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        with open(args.file, "wb") as f:
            try:
                write_recording(f, topic, partitions, records(reader))
            except KeyboardInterrupt:  # --follow ends with Ctrl-C; every record read is written
                pass
    size = Path(args.file).stat().st_size
    print(
        f"recorded {count} messages of {topic} ({undecodable} undecodable) to {args.file} "
        f"({size:,} bytes)"
    )
    return 0


def replay_main(args: argparse.Namespace) -> int:
    """`rollstream replay FILE [TOPIC]`: produce every recorded record into TOPIC."""
    kafka = tool_kafka(args)
    try:
        head = read_header(args.file)
        topic = unqualified(args.topic or head["topic"], kafka.namespace)
        target_parts = len(partitions(kafka, topic))
    except (RecordingError, OSError, BusError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        n = replay(
            kafka,
            iter_recording(args.file),
            topic,
            keep_partitions=target_parts == head.get("partitions"),
            rate=args.rate,
        )
    except RecordingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"replayed {n} messages from {args.file} into {qualified(topic, kafka.namespace)}")
    return 0


def replay(
    kafka: KafkaSettings,
    records: Iterator[Record[bytes]],
    topic: str,
    *,
    keep_partitions: bool,
    rate: float | None = None,
) -> int:
    """Produce `records` into registry-level `topic`; returns how many, all acknowledged."""
    producer = Producer(kafka, "replay")
    start = time.monotonic()
    n = 0
    for r in records:
        if rate:
            wait = start + n / rate - time.monotonic()
            if wait > 0:
                time.sleep(wait)
        partition = r.partition if keep_partitions else None
        producer.send_raw(topic, r.value, r.key, r.headers or None, partition)
        n += 1
    producer.flush(60)
    return n
