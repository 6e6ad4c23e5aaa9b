"""The poison records themselves: every one is refused by the reader of its topic (so the
live suite's DLQ counts are exact), and every kind of issue 16 is there."""

from __future__ import annotations

import pytest
from poison import CONSUMED, bad_records, kinds

from rollstream.schemas import SchemaError, decode
from rollstream.schemas.topics import lookup


@pytest.mark.parametrize("topic", CONSUMED)
def test_every_poison_record_is_refused_by_its_reader(topic: str) -> None:
    typ = lookup(topic).message
    for value in bad_records(topic, 300, oversized=1):
        with pytest.raises(SchemaError):
            decode(value, typ)  # type: ignore[arg-type]


def test_the_kinds_cover_the_issue() -> None:
    have = {k for t in CONSUMED for k, _ in kinds(t)}
    assert have >= {
        "null",
        "truncated",
        "wrong_type",
        "missing_fields",
        "wrong_field_type",
        "future_version",
        "random_bytes",
        "inconsistent_arrays",
        "nan",
        "inf",
    }
