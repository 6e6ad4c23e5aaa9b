"""What tap prints and what record writes, without a broker: JSON forms of bytes fields,
--stats arithmetic, and the recording file format."""

from __future__ import annotations

import io
import json
import struct
from pathlib import Path

import msgpack
import pytest

from rollstream.services.runtime.bus import Record
from rollstream.services.tools.record import (
    RecordingError,
    iter_recording,
    read_header,
    write_recording,
)
from rollstream.services.tools.tap import key_text, plain, select
from rollstream.services.tools.tapstats import TapStats


def test_plain_shows_token_ids_as_ints_logprobs_rounded_and_other_bytes_as_base64() -> None:
    msg = {
        "rollout": {
            "completion_ids": struct.pack("<3i", 5, 70000, -1),
            "logprobs": struct.pack("<2f", -0.123456, float("-inf")),
        },
        "value": b"\x00\xffraw",
        "reward": float("nan"),
        "rewards": {"a": 1.5},
    }
    assert plain(msg) == {
        "rollout": {"completion_ids": [5, 70000, -1], "logprobs": [-0.1235, "-inf"]},
        "value": "AP9yYXc=",
        "reward": "nan",
        "rewards": {"a": 1.5},
    }
    json.dumps(plain(msg), allow_nan=False)  # strict JSON: jq can read every line


def test_keys_show_as_text_or_base64() -> None:
    assert key_text(b"group-7") == "group-7"
    assert key_text(b"\xff\xfe") == "//4="
    assert key_text(None) is None


def test_select_takes_dotted_paths_and_shows_missing_fields_as_null() -> None:
    d = {"reward": 1.0, "rollout": {"task": "add", "sampling": {"seed": 3}}}
    assert select(d, ["reward", "task", "rollout.sampling.seed", "nope"]) == {
        "reward": 1.0,
        "task": "add",
        "rollout.sampling.seed": 3,
        "nope": None,
    }


def test_stats_summarise_numbers_text_sizes_and_rate() -> None:
    stats = TapStats()
    for i, (reward, task) in enumerate([(1.0, "add"), (0.0, "add"), (0.5, "mul")]):
        msg = {
            "reward": reward,
            "task": task,
            "correct": reward > 0.5,
            "completion_ids": b"\x00" * 4 * (i + 1),
        }
        stats.add(msg, size=100 * (i + 1), timestamp_ms=1_000 + 500 * i)
    stats.add_error()
    d = stats.as_dict()
    assert (d["count"], d["errors"]) == (3, 1)
    assert d["rate_msgs_per_s"] == 2.0  # 2 gaps over 1.0 s
    assert d["size_bytes"] == {
        "min": 100,
        "median": 200,
        "max": 300,
        "max_fraction_of_1MiB_limit": round(300 / 1048576, 4),
    }
    assert d["numeric"]["reward"] == {"mean": 0.5, "min": 0.0, "max": 1.0, "count": 3}
    assert d["numeric"]["len(completion_ids)"] == {"mean": 2.0, "min": 1.0, "max": 3.0, "count": 3}
    assert d["strings"]["task"] == {"distinct": 2, "top": [["add", 2], ["mul", 1]]}
    assert d["strings"]["correct"]["top"] == [["False", 2], ["True", 1]]


def _records() -> list[Record[bytes]]:
    return [
        Record("rollouts.scored", 3, 0, b"g1", b"\x81\xa1a\x01", 1000, [("schema", b"X")]),
        Record("rollouts.scored", 3, 1, None, b"garbage \xc1", 1001, [("h", None)]),
    ]


def test_a_recording_reads_back_record_for_record(tmp_path: Path) -> None:
    path = tmp_path / "r.rsr"
    with open(path, "wb") as f:
        assert write_recording(f, "rollouts.scored", 8, iter(_records())) == 2
    head = read_header(path)
    assert (head["format"], head["version"], head["topic"], head["partitions"]) == (
        "rollstream-recording",
        1,
        "rollouts.scored",
        8,
    )
    assert list(iter_recording(path)) == _records()


def test_a_recording_is_a_plain_msgpack_stream(tmp_path: Path) -> None:
    buf = io.BytesIO()
    write_recording(buf, "prompts", 8, iter(_records()))
    objs = list(msgpack.Unpacker(io.BytesIO(buf.getvalue()), raw=False))
    assert objs[0]["format"] == "rollstream-recording"
    assert objs[1] == {
        "topic": "rollouts.scored",
        "partition": 3,
        "offset": 0,
        "key": b"g1",
        "value": b"\x81\xa1a\x01",
        "headers": [["schema", b"X"]],
        "timestamp_ms": 1000,
    }


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "is empty"),
        (b"\xc1\xc1", "is not a rollstream recording"),
        (msgpack.packb([1, 2, 3]), "is not a rollstream recording"),
        (msgpack.packb({"format": "rollstream-recording", "version": 2}), "version 2"),
    ],
)
def test_files_that_are_not_recordings_are_refused(
    tmp_path: Path, content: bytes, reason: str
) -> None:
    path = tmp_path / "x.bin"
    path.write_bytes(content)
    with pytest.raises(RecordingError, match=reason):
        list(iter_recording(path))
