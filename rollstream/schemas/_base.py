"""Base of every wire message: a MessagePack map tagged with `schema` (type name) and `v`.

Every message encodes to a map whose keys are field names, so any Kafka client in any
language can read it with a plain msgpack decoder. `schema` is the type name (msgspec's tag),
`v` the major version. Readers ignore unknown fields (a newer minor version adds fields) and
reject another major version, a wrong type or malformed bytes with one typed error,
`SchemaError`, that names what was wrong.

Token ids and logprobs travel as packed little-endian int32 / float32 bytes; `ids()` and
`floats()` turn such a field into a read-only numpy view without copying.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, TypeVar

import msgspec
import numpy as np

INT32 = np.dtype("<i4")
FLOAT32 = np.dtype("<f4")


class SchemaError(ValueError):
    """A message that cannot be decoded as the expected type: malformed bytes, wrong schema,
    other major version, or a field that fails validation. `.reason` is one short phrase."""

    def __init__(self, reason: str, *, expected: str | None = None) -> None:
        self.reason = reason
        self.expected = expected
        super().__init__(f"{expected}: {reason}" if expected else reason)


class Message(msgspec.Struct, tag_field="schema", kw_only=True):
    """Base class; subclasses set `tag=<TypeName>` and may raise `VERSION` (the major)."""

    VERSION: ClassVar[int] = 1
    v: int = 1

    def headers(self) -> list[tuple[str, bytes]]:
        """Kafka headers that repeat the envelope, so tools can route without decoding."""
        return [("schema", type(self).__name__.encode()), ("v", str(self.v).encode())]


M = TypeVar("M", bound=Message)

_encoder = msgspec.msgpack.Encoder()
_decoders: dict[Any, msgspec.msgpack.Decoder[Any]] = {}


class _Envelope(msgspec.Struct):
    schema: str = ""
    v: int = -1


_envelope_decoder = msgspec.msgpack.Decoder(_Envelope)


def encode(msg: Message) -> bytes:
    """MessagePack map with `schema`, `v` and every field by name."""
    return _encoder.encode(msg)


def envelope(data: bytes | bytearray | memoryview) -> tuple[str, int]:
    """(schema, v) of a message without decoding the rest; raises SchemaError if not a map."""
    try:
        env = _envelope_decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise SchemaError(f"malformed bytes: {exc}") from None
    return env.schema, env.v


def decode(data: bytes | bytearray | memoryview | None, typ: type[M]) -> M:
    """Decode `data` as `typ`; unknown fields are ignored, anything else wrong is a SchemaError."""
    if not isinstance(data, bytes | bytearray | memoryview):
        # A record with a null value (a tombstone) or no value at all is bad input like any
        # other, never a crash of the consumer (msgspec would raise TypeError).
        what = "null value (tombstone)" if data is None else f"value of type {type(data).__name__}"
        raise SchemaError(what, expected=typ.__name__)
    dec = _decoders.get(typ)
    if dec is None:
        dec = _decoders[typ] = msgspec.msgpack.Decoder(typ)
    try:
        msg = dec.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise _explain(data, typ.__name__, typ.VERSION, exc) from None
    if msg.v != typ.VERSION:
        raise SchemaError(
            f"major version {msg.v} not supported (reader speaks v{typ.VERSION})",
            expected=typ.__name__,
        )
    return msg


def decode_any(data: bytes | bytearray | memoryview) -> Message:
    """Decode any registered message by its `schema` tag (used by tap and record)."""
    from rollstream.schemas import MESSAGE_TYPES

    if not isinstance(data, bytes | bytearray | memoryview):
        raise SchemaError("null value (tombstone)" if data is None else "not bytes")

    try:
        schema, _ = envelope(data)
    except SchemaError:
        raise
    typ = MESSAGE_TYPES.get(schema)
    if typ is None:
        raise SchemaError(f"unknown schema {schema!r}" if schema else "no `schema` field")
    return decode(data, typ)


def _explain(data: Any, name: str, version: int, exc: Exception) -> SchemaError:
    try:
        schema, v = envelope(data)
    except SchemaError as env_exc:
        return SchemaError(env_exc.reason, expected=name)
    if schema and schema != name:
        return SchemaError(f"wrong type: got {schema!r}", expected=name)
    if v not in (-1, version):
        return SchemaError(
            f"major version {v} not supported (reader speaks v{version})", expected=name
        )
    return SchemaError(f"invalid field: {exc}", expected=name)


def check_packed(field: str, buf: bytes, dtype: np.dtype) -> int:
    """Number of elements in packed array `buf`; ValueError when its byte length is not a
    multiple of the element size (a truncated or forged array). Raised inside a Struct's
    `__post_init__`, msgspec turns it into a ValidationError, so `decode` names it."""
    if len(buf) % dtype.itemsize:
        raise ValueError(
            f"`{field}` has {len(buf)} bytes, not a multiple of {dtype.itemsize} ({dtype.name})"
        )
    return len(buf) // dtype.itemsize


def check_finite(field: str, *values: float) -> None:
    """ValueError when any of `values` is NaN or infinite (a reward, advantage, weight)."""
    for x in values:
        if not math.isfinite(x):
            raise ValueError(f"`{field}` is not finite ({x})")


def pack_ids(values: Any) -> bytes:
    """Pack token ids as little-endian int32 bytes."""
    return np.ascontiguousarray(values, dtype=INT32).tobytes()


def pack_floats(values: Any) -> bytes:
    """Pack floats (logprobs) as little-endian float32 bytes."""
    return np.ascontiguousarray(values, dtype=FLOAT32).tobytes()


def ids(buf: bytes) -> np.ndarray:
    """Read-only int32 view of packed token ids (no copy)."""
    return np.frombuffer(buf, dtype=INT32)


def floats(buf: bytes) -> np.ndarray:
    """Read-only float32 view of packed floats (no copy)."""
    return np.frombuffer(buf, dtype=FLOAT32)


def to_builtins(msg: Message) -> Any:
    """Plain dict/list form, bytes kept as bytes (not base64)."""
    return msgspec.to_builtins(msg, builtin_types=(bytes,))
