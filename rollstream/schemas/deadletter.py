"""Dead letters: what a consumer could not decode or validate, kept byte for byte."""

from __future__ import annotations

from rollstream.schemas._base import Message


class DeadLetter(Message, tag="DeadLetter", kw_only=True):  # type: ignore[call-arg]
    """any consumer -> `<topic>.dlq`. Key: the original key.

    `value` is the original bytes exactly as read; `error` says what was wrong; topic,
    partition and offset say where it came from, so it can be found and replayed."""

    topic: str
    partition: int
    offset: int
    key: bytes | None = None
    value: bytes
    error: str
    consumer: str = ""
    produced_at: float
