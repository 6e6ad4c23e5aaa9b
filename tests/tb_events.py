"""Reads TensorBoard event files back for tests, with the `Event` protobuf that tensorboardX
ships (a decoder independent of rollstream/services/up/tbevents.py, which writes them), checking
every record's CRC. Imported by bare name (`from tb_events import read_events`), like tiny_llama."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

from tensorboardX.proto.event_pb2 import Event

from rollstream.services.up.tbevents import _masked


def read_events(path: Path) -> list[Any]:
    data, events, i = path.read_bytes(), [], 0
    while i < len(data):
        header = data[i : i + 8]
        (n,) = struct.unpack("<Q", header)
        assert struct.unpack("<I", data[i + 8 : i + 12])[0] == _masked(header), "length CRC"
        body = data[i + 12 : i + 12 + n]
        assert struct.unpack("<I", data[i + 12 + n : i + 16 + n])[0] == _masked(body), "data CRC"
        events.append(Event.FromString(body))
        i += 16 + n
    return events
