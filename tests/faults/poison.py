"""Bad records for every consumed topic: what a hostile producer or a broken client could write.

`bad_records(topic, n)` gives `n` values (bytes or None) that no reader of `topic` may accept,
cycling through the kinds of issue 16: null values, truncated msgpack, another message type,
missing fields, wrong field types, a future major version, random bytes, inconsistent packed
arrays and non-finite numbers where the type has them, and a few oversized records.
"""

from __future__ import annotations

import math
import random
import struct
from collections.abc import Callable
from typing import Any

import msgspec
from golden import make_golden  # tests/golden/make_golden.py

from rollstream.schemas import encode, to_builtins
from rollstream.schemas.topics import lookup

EXAMPLES = make_golden.examples()

CONSUMED = (
    "prompts",
    "rollouts.raw",
    "rollouts.scored",
    "groups.kept",
    "batches.train",
    "learner.feedback",
    "prompt.stats",
    "control",
    "weights",
    "eval.results",
)
OVERSIZED_BYTES = 2 * 1024 * 1024
_NAN = float("nan")


def _pack(d: Any) -> bytes:
    return msgspec.msgpack.encode(d)


def _rollout_path(name: str, d: dict[str, Any]) -> dict[str, Any] | None:
    """The dict of the (first) Rollout inside a message of type `name`, or None."""
    if name == "Rollout":
        return d
    if name == "ScoredRollout":
        return d["rollout"]
    if name == "Group":
        return d["samples"][0]["rollout"]
    if name == "TrainBatch":
        return d["items"][0]["group"]["samples"][0]["rollout"]
    return None


def _non_finite(name: str, d: dict[str, Any], value: float) -> dict[str, Any] | None:
    if name == "ScoredRollout":
        d["reward"] = value
    elif name == "Group":
        d["advantages"][0] = value
    elif name == "TrainBatch":
        d["items"][0]["weight"] = value
    elif name == "Feedback":
        d["priorities"] = {"g1": value}
    elif name == "Rollout":
        d["logprobs"] = struct.pack("<2f", -0.5, value)  # the example has 2 tokens
    else:
        return None
    return d


def kinds(topic: str) -> list[tuple[str, Callable[[random.Random], bytes | None]]]:
    """(kind, make) pairs for `topic`; `make(rng)` builds one bad value."""
    typ = lookup(topic).message
    name = typ.__name__
    good = EXAMPLES[name]
    raw = encode(good)
    other = next(m for n, m in EXAMPLES.items() if n != name and n != "DeadLetter")

    def fresh() -> dict[str, Any]:
        return to_builtins(good)

    def wrong_field(_: random.Random) -> bytes:
        d = fresh()
        key = (
            "produced_at" if "produced_at" in d else next(k for k in d if k not in ("schema", "v"))
        )
        d[key] = "yesterday"
        return _pack(d)

    def future(_: random.Random) -> bytes:
        return _pack({**fresh(), "v": 2})

    out: list[tuple[str, Callable[[random.Random], bytes | None]]] = [
        ("null", lambda _: None),
        ("truncated", lambda r: raw[: r.randrange(1, len(raw) - 1)]),
        ("wrong_type", lambda _: encode(other)),
        ("missing_fields", lambda _: _pack({"schema": name, "v": 1})),
        ("wrong_field_type", wrong_field),
        ("future_version", future),
        ("random_bytes", lambda r: r.randbytes(r.randrange(1, 300))),
    ]
    if _rollout_path(name, fresh()) is not None:

        def arrays(_: random.Random) -> bytes:
            d = fresh()
            ro = _rollout_path(name, d)
            assert ro is not None
            ro["completion_ids"] = bytes(4 * 7)  # 7 tokens, 2 logprobs
            return _pack(d)

        out.append(("inconsistent_arrays", arrays))
    if _non_finite(name, fresh(), _NAN) is not None:
        for label, value in (("nan", _NAN), ("inf", math.inf)):

            def bad_number(_: random.Random, value: float = value) -> bytes:
                d = _non_finite(name, fresh(), value)
                assert d is not None
                return _pack(d)

            out.append((label, bad_number))
    return out


def bad_records(topic: str, n: int, seed: int = 0, oversized: int = 3) -> list[bytes | None]:
    """`n` bad values for `topic`, every kind in turn; the first `oversized` are 2 MiB of noise."""
    rng = random.Random(f"{topic}-{seed}")
    ks = kinds(topic)
    out: list[bytes | None] = [rng.randbytes(OVERSIZED_BYTES) for _ in range(oversized)]
    i = 0
    while len(out) < n:
        out.append(ks[i % len(ks)][1](rng))
        i += 1
    return out
