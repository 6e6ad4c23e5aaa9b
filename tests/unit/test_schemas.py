"""The wire contract, for every message type: round trip, golden bytes, unknown fields,
versions, malformed input, third-party readers and writers, zero-copy token arrays."""

from __future__ import annotations

import importlib.util
import struct
from pathlib import Path
from types import ModuleType
from typing import Any

import msgpack
import msgspec
import numpy as np
import pytest

from rollstream.schemas import (
    MESSAGE_TYPES,
    PromptTask,
    Rollout,
    SchemaError,
    ScoredRollout,
    decode,
    decode_any,
    encode,
    floats,
    ids,
    pack_floats,
    pack_ids,
)

GOLDEN = Path(__file__).parents[1] / "golden"
NAMES = sorted(MESSAGE_TYPES)


def _golden_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_golden", GOLDEN / "make_golden.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


make_golden = _golden_module()
EXAMPLES = make_golden.examples()


def _plain(name: str) -> dict[str, Any]:
    return msgpack.unpackb(encode(EXAMPLES[name]), raw=False)


def test_every_message_type_has_a_golden_example() -> None:
    assert set(EXAMPLES) == set(MESSAGE_TYPES)
    assert {p.stem for p in GOLDEN.glob("*.msgpack")} == set(MESSAGE_TYPES)


@pytest.mark.parametrize("name", NAMES)
def test_round_trip(name: str) -> None:
    msg = EXAMPLES[name]
    assert decode(encode(msg), MESSAGE_TYPES[name]) == msg
    assert decode_any(encode(msg)) == msg


@pytest.mark.parametrize("name", NAMES)
def test_encoding_matches_golden_bytes(name: str) -> None:
    """A failure here means the wire format changed: if intended, bump the schema and rerun
    tests/golden/make_golden.py; if not, the change breaks every reader already deployed."""
    assert encode(EXAMPLES[name]) == make_golden.golden_path(name).read_bytes()


@pytest.mark.parametrize("name", NAMES)
def test_golden_bytes_still_decode(name: str) -> None:
    raw = make_golden.golden_path(name).read_bytes()
    assert decode(raw, MESSAGE_TYPES[name]) == EXAMPLES[name]


@pytest.mark.parametrize("name", NAMES)
def test_reference_msgpack_reads_a_plain_map_with_the_documented_fields(name: str) -> None:
    d = _plain(name)
    assert type(d) is dict
    fields = {f.encode_name for f in msgspec.structs.fields(MESSAGE_TYPES[name])}
    assert set(d) == fields | {"schema"}
    assert d["schema"] == name
    assert d["v"] == 1


def test_reference_msgpack_sees_token_ids_as_packed_little_endian_bytes() -> None:
    d = _plain("Rollout")
    assert d["completion_ids"] == b"\x1a\x00\x00\x00\x02\x00\x00\x00"  # 26, 2
    assert d["logprobs"] == struct.pack("<2f", -0.25, -1.5)
    assert d["sampling"] == {"n": 2, "temperature": 1.0, "top_p": 1.0, "max_tokens": 16, "seed": 7}


@pytest.mark.parametrize("name", NAMES)
def test_a_map_written_by_another_msgpack_library_decodes(name: str) -> None:
    raw = msgpack.packb(_plain(name), use_bin_type=True)
    assert decode(raw, MESSAGE_TYPES[name]) == EXAMPLES[name]


@pytest.mark.parametrize("name", NAMES)
def test_unknown_fields_are_ignored(name: str) -> None:
    d = _plain(name)
    d["added_in_v1_7"] = {"nested": [1, 2, 3]}
    d["zz_flag"] = True
    assert decode(msgpack.packb(d), MESSAGE_TYPES[name]) == EXAMPLES[name]


def test_unknown_fields_inside_nested_messages_are_ignored() -> None:
    d = _plain("ScoredRollout")
    d["rollout"]["new_field"] = "x"
    d["rollout"]["sampling"]["min_p"] = 0.05
    assert decode(msgpack.packb(d), ScoredRollout) == EXAMPLES["ScoredRollout"]


@pytest.mark.parametrize("name", NAMES)
def test_another_major_version_is_rejected_naming_the_version(name: str) -> None:
    d = _plain(name)
    d["v"] = 2
    with pytest.raises(SchemaError, match="major version 2 not supported") as exc:
        decode(msgpack.packb(d), MESSAGE_TYPES[name])
    assert name in str(exc.value)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("raw", [b"", b"\xc1", b"\x93\x01\x02", b"not msgpack at all"])
def test_malformed_bytes_are_rejected(name: str, raw: bytes) -> None:
    with pytest.raises(SchemaError) as exc:
        decode(raw, MESSAGE_TYPES[name])
    assert name in str(exc.value)


@pytest.mark.parametrize("name", NAMES)
def test_truncated_message_is_rejected(name: str) -> None:
    with pytest.raises(SchemaError, match="malformed"):
        decode(encode(EXAMPLES[name])[:-3], MESSAGE_TYPES[name])


@pytest.mark.parametrize("name", NAMES)
def test_another_message_type_is_rejected_naming_it(name: str) -> None:
    other = "PromptTask" if name != "PromptTask" else "Rollout"
    with pytest.raises(SchemaError, match=f"wrong type: got '{other}'"):
        decode(encode(EXAMPLES[other]), MESSAGE_TYPES[name])


def test_a_field_that_fails_validation_is_rejected_naming_it() -> None:
    d = _plain("PromptTask")
    d["n"] = 0  # n >= 1
    with pytest.raises(SchemaError, match=r"invalid field.*\$\.n"):
        decode(msgpack.packb(d), PromptTask)
    d["n"] = 2
    del d["prompt"]
    with pytest.raises(SchemaError, match="missing required field `prompt`"):
        decode(msgpack.packb(d), PromptTask)


def test_decode_any_rejects_maps_without_a_known_schema() -> None:
    with pytest.raises(SchemaError, match="unknown schema 'Nope'"):
        decode_any(msgpack.packb({"schema": "Nope", "v": 1}))
    with pytest.raises(SchemaError, match="no `schema` field"):
        decode_any(msgpack.packb({"v": 1}))


def test_token_ids_and_logprobs_decode_to_numpy_views_without_copying() -> None:
    r = decode(encode(EXAMPLES["Rollout"]), Rollout)
    toks, lps = r.completion_tokens(), r.token_logprobs()
    assert toks.tolist() == [26, 2]
    assert lps.tolist() == [-0.25, -1.5]
    assert toks.dtype == np.dtype("<i4") and lps.dtype == np.dtype("<f4")
    assert toks.base is r.completion_ids and lps.base is r.logprobs  # views of the bytes
    assert np.shares_memory(toks, np.frombuffer(r.completion_ids, dtype=np.uint8))
    assert not toks.flags.writeable
    assert r.prompt_tokens().tolist() == [1, 23, 16, 24, 34]


def test_pack_ids_and_floats_are_little_endian_whatever_the_input_byte_order() -> None:
    assert pack_ids([1, 256, -1]) == b"\x01\x00\x00\x00\x00\x01\x00\x00\xff\xff\xff\xff"
    big_endian = np.array([1, 256], dtype=">i4")
    assert pack_ids(big_endian) == b"\x01\x00\x00\x00\x00\x01\x00\x00"
    assert pack_floats(np.array([1.0, -0.5], dtype=">f8")) == struct.pack("<2f", 1.0, -0.5)
    assert ids(b"\x00\x01\x00\x00").tolist() == [256]
    assert floats(struct.pack("<f", -2.5)).tolist() == [-2.5]
    assert ids(pack_ids(range(5))).tolist() == [0, 1, 2, 3, 4]


def test_headers_repeat_the_envelope() -> None:
    assert EXAMPLES["Group"].headers() == [("schema", b"Group"), ("v", b"1")]
