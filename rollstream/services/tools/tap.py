"""`rollstream tap TOPIC`: decode a topic live, without joining or moving any consumer group.

Reads: one topic - a registry topic, a `<topic>.dlq`, or any other topic - by assigning every
partition directly (reader.Reader.tail: no group join, no offsets committed, so no stage's
position moves), from the end by default or the oldest message with `--from-beginning`. Stops
once every partition is caught up unless `--follow`. Writes: stdout only (one line per
message; JSON lines with `--json`; a summary with `--stats`).

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
from typing import Any

import msgspec
import numpy as np

from rollstream.schemas import Message, SchemaError, decode, decode_any
from rollstream.schemas.topics import lookup, unqualified
from rollstream.services.runtime.bus import BusError, Record
from rollstream.services.runtime.reader import Reader
from rollstream.services.tools.tapstats import TapStats
from rollstream.services.tools.target import tool_kafka
from rollstream.services.tools.where import Where, WhereError, resolve_path

ID_FIELDS = frozenset({"prompt_ids", "completion_ids"})  # packed little-endian int32
FLOAT_FIELDS = frozenset({"logprobs"})  # packed little-endian float32

# The fields one human-readable line shows per schema (dotted paths; `task` on a
# ScoredRollout resolves inside its rollout).
SUMMARY: dict[str, list[str]] = {
    name: fields.split()
    for name, fields in {
        "PromptTask": "task_id task n prompt",
        "Rollout": "task sample_index policy_version finish_reason completion_ids completion",
        "ScoredRollout": "reward correct task policy_version finish_reason completion_ids "
        "completion",
        "Group": "task samples advantages stats.reward_mean stats.pass_rate policy_version",
        "DropRecord": "task_id reason filter scope stats",
        "PromptStats": "task_id pass_rate last_pass_rate groups",
        "TrainBatch": "seq items learner_version",
        "Feedback": "credits_total step learner_version trained_batches",
        "WeightUpdate": "policy version uri size_bytes",
        "ControlUpdate": "stage revision applied params",
        "EvalResult": "policy_version accuracy n per_task",
        "DeadLetter": "topic partition offset error",
    }.items()
}


def _unknown_hint(topic: str) -> str:
    """For a name that is not in the registry: the registry names close to it, else all."""
    import difflib

    from rollstream.schemas.topics import all_topics

    names = [t.name for t in all_topics()]
    close = difflib.get_close_matches(topic, names, n=3)
    if close:
        return f" ({topic!r} is not one of rollstream's topics; did you mean {', '.join(close)}?)"
    return f" ({topic!r} is not one of rollstream's topics: `rollstream topics list`)"


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
        for k in [k for k, v in d.items() if _leaf(k) in ID_FIELDS and isinstance(v, list)]:
            d[f"{k}_text"] = tokenizer.decode(d[k], skip_special_tokens=False)
        for v in d.values():
            add_text(v, tokenizer)
    elif isinstance(d, list):
        for v in d:
            add_text(v, tokenizer)


def _leaf(path: str) -> str:
    return path.rsplit(".", 1)[-1]


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

    def message(
        self, raw: Record[bytes], d: dict[str, Any], paths: list[str], tokenizer: Any = None
    ) -> None:
        from rich.text import Text

        shown = select(d, paths) if paths else select(d, _summary_paths(d))
        if tokenizer is not None:
            add_text(shown, tokenizer)
        line = Text()
        line.append(f"{raw.partition}@{raw.offset}", style="dim")
        line.append(f"  {key_text(raw.key) or '-'}  ", style="cyan")
        line.append(str(d.get("schema", "?")), style="bold")
        for k, v in shown.items():
            line.append(f"  {k}=", style="dim")
            line.append(_compact(k, v))
        self.console.print(line)

    def error(self, raw: Record[bytes], reason: str) -> None:
        from rich.text import Text

        line = Text()
        line.append(f"{raw.partition}@{raw.offset}", style="dim")
        line.append(f"  {key_text(raw.key) or '-'}  ", style="cyan")
        line.append(f"ERROR undecodable ({len(raw.value)} bytes): {reason}", style="bold red")
        self.console.print(line)


class JsonOut:
    """JSON lines: the decoded message plus `_topic`, `_partition`, `_offset`, `_key`."""

    def message(
        self, raw: Record[bytes], d: dict[str, Any], paths: list[str], tokenizer: Any = None
    ) -> None:
        body = select(d, paths) if paths else d
        if tokenizer is not None:
            add_text(body, tokenizer)
        self._write({**body, **_coords(raw)})

    def error(self, raw: Record[bytes], reason: str) -> None:
        self._write({"_error": reason, **_coords(raw), "_size": len(raw.value)})

    @staticmethod
    def _write(obj: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(obj, ensure_ascii=False) + "\n")
        sys.stdout.flush()


def _coords(raw: Record[bytes]) -> dict[str, Any]:
    return {
        "_topic": raw.topic,
        "_partition": raw.partition,
        "_offset": raw.offset,
        "_key": key_text(raw.key),
    }


def _summary_paths(d: dict[str, Any]) -> list[str]:
    paths = SUMMARY.get(str(d.get("schema")))
    if paths is None:
        paths = [k for k in d if k not in ("schema", "v")][:6]
    return paths


def _compact(name: str, v: Any) -> str:
    if isinstance(v, list) and _leaf(name) in ID_FIELDS:
        return f"{len(v)} tokens"
    if isinstance(v, list) and v and isinstance(v[0], dict):
        return f"[{len(v)}]"
    if isinstance(v, float):
        return f"{v:.4g}"
    text = json.dumps(v, ensure_ascii=False) if not isinstance(v, str) else repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


def main(args: argparse.Namespace) -> int:
    """`rollstream tap`: print a topic's messages (see the module docstring)."""
    kafka = tool_kafka(args)
    typ = registry_type(args.topic)
    known = field_names(typ) if typ is not None else None
    try:
        where = Where(args.where, known) if args.where else None
        paths = parse_fields(args.fields, known)
    except WhereError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    tap = Tap(
        JsonOut() if args.json else HumanOut(),
        where,
        paths,
        TapStats() if args.stats else None,
        _load_tokenizer(args.tokenizer) if args.tokenizer else None,
    )
    topic = unqualified(args.topic, kafka.namespace)
    try:
        if args.limit is None or args.limit > 0:
            with Reader(kafka, "tap") as reader:
                for raw in reader.tail(
                    topic, from_beginning=args.from_beginning, follow=args.follow
                ):
                    tap.handle(raw, typ)
                    if args.limit is not None and tap.shown >= args.limit:
                        break
    except KeyboardInterrupt:
        pass
    except BrokenPipeError:  # e.g. `| head`: the reader has gone; not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except BusError as exc:
        print(f"error: {exc}{_unknown_hint(topic) if typ is None else ''}", file=sys.stderr)
        return 2
    tap.finish(topic, from_beginning=args.from_beginning, follow=args.follow, as_json=args.json)
    return 0


class Tap:
    """Decode, filter and show (or count) one message at a time."""

    def __init__(
        self,
        out: HumanOut | JsonOut,
        where: Where | None,
        paths: list[str],
        stats: TapStats | None,
        tokenizer: Any,
    ) -> None:
        self.out, self.where, self.paths = out, where, paths
        self.stats, self.tokenizer = stats, tokenizer
        self.shown = 0  # messages and error lines shown (or counted, with --stats)
        self.where_failures = 0
        self.first_where_failure = ""

    def handle(self, raw: Record[bytes], typ: type[Message] | None) -> None:
        try:
            msg = decode_message(raw.value, typ)
        except SchemaError as exc:
            if self.stats is not None:
                self.stats.add_error()
            else:
                self.out.error(raw, str(exc))
            self.shown += 1
            return
        b = builtins(msg)
        d = plain(b) if self.where is not None or self.stats is None else {}
        if self.where is not None and not self._holds(d):
            return
        if self.stats is not None:
            self.stats.add(b, len(raw.value), raw.timestamp_ms)
        else:
            self.out.message(raw, d, self.paths, self.tokenizer)
        self.shown += 1

    def _holds(self, d: dict[str, Any]) -> bool:
        assert self.where is not None
        try:
            return self.where.matches(d)
        except WhereError as exc:  # e.g. a message of another schema: not a match
            self.where_failures += 1
            self.first_where_failure = self.first_where_failure or str(exc)
            return False

    def finish(self, topic: str, *, from_beginning: bool, follow: bool, as_json: bool) -> None:
        """Print the --stats summary and notes (to stderr) a user would want to see."""
        if self.stats is not None:
            self.stats.print(as_json=as_json)
        if self.where_failures:
            print(
                f"note: --where could not be evaluated on {self.where_failures} message(s) "
                f"(treated as not matching), e.g.: {self.first_where_failure}",
                file=sys.stderr,
            )
        if self.shown == 0 and not follow:  # with --stats too: `count 0` alone says not why
            if not from_beginning:
                note = f"nothing new at the end of {topic!r}; use --from-beginning or --follow"
            else:
                note = f"no {'matching ' if self.where else ''}messages in {topic!r}"
            print(f"note: {note}", file=sys.stderr)


def _load_tokenizer(path: str) -> Any:
    from transformers import AutoTokenizer  # heavy: only with --tokenizer

    return AutoTokenizer.from_pretrained(path)
