"""TensorBoard event files without TensorFlow, tensorboard or torch: `tensorboard --logdir
runs/` shows a run's series (written by `rollstream up` into `runs/<name>/tensorboard/`).

The format is TensorBoard's: a file `events.out.tfevents.<time>.<host>` of TFRecords (length,
masked CRC-32C of the length, an `Event` protobuf, masked CRC-32C of it). Only what scalars
need is encoded here: Event{wall_time=1, step=2, file_version=3, summary=5}, Summary{value=1},
Summary.Value{tag=1, simple_value=2}. `tests/unit/up/test_tbevents.py` reads files back with
the protobuf definitions tensorboardX ships, an independent decoder.
"""

from __future__ import annotations

import socket
import struct
import time
from pathlib import Path

_POLY = 0x82F63B78  # CRC-32C (Castagnoli), reflected
_TABLE = []
for _i in range(256):
    _c = _i
    for _ in range(8):
        _c = (_c >> 1) ^ _POLY if _c & 1 else _c >> 1
    _TABLE.append(_c)


def crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for b in data:
        crc = _TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _masked(data: bytes) -> int:
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _varint(n: int) -> bytes:
    out = bytearray()
    n &= (1 << 64) - 1
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _field(number: int, wire: int) -> bytes:
    return _varint((number << 3) | wire)


def _bytes_field(number: int, data: bytes) -> bytes:
    return _field(number, 2) + _varint(len(data)) + data


def _event(wall_time: float, step: int, body: bytes) -> bytes:
    return _field(1, 1) + struct.pack("<d", wall_time) + _field(2, 0) + _varint(step) + body


def _scalar(tag: str, value: float) -> bytes:
    v = _bytes_field(1, tag.encode()) + _field(2, 5) + struct.pack("<f", value)
    return _bytes_field(1, v)  # Summary.value


class EventWriter:
    """Appends scalar events to one event file in `logdir` (created), flushed on each call."""

    def __init__(self, logdir: Path) -> None:
        logdir.mkdir(parents=True, exist_ok=True)
        now = time.time()
        self.path = logdir / f"events.out.tfevents.{int(now)}.{socket.gethostname()}"
        self._f = open(self.path, "ab")  # noqa: SIM115 (closed by close())
        self._write(_event(now, 0, _bytes_field(3, b"brain.Event:2")))

    def _write(self, event: bytes) -> None:
        header = struct.pack("<Q", len(event))
        self._f.write(header + struct.pack("<I", _masked(header)))
        self._f.write(event + struct.pack("<I", _masked(event)))

    def scalars(self, values: dict[str, float], step: int, wall_time: float | None = None) -> None:
        """One event holding every (tag, value) pair, at `step`."""
        if not values:
            return
        summary = b"".join(_scalar(tag, float(v)) for tag, v in sorted(values.items()))
        self._write(_event(wall_time or time.time(), step, _bytes_field(5, summary)))
        self._f.flush()

    def close(self) -> None:
        self._f.close()


class WandbSink:
    """The same scalars to Weights & Biases, only when `wandb` is installed and configured
    (WANDB_PROJECT set); otherwise `open` returns None and nothing is sent anywhere."""

    def __init__(self, run: object) -> None:
        self.run = run

    @classmethod
    def open(cls, name: str, run_dir: Path, config: dict[str, object]) -> WandbSink | None:
        import importlib.util
        import os

        if not os.environ.get("WANDB_PROJECT") or importlib.util.find_spec("wandb") is None:
            return None
        import wandb

        try:
            run = wandb.init(name=name, dir=str(run_dir), config=config)
        except Exception as exc:  # a bad key or no network: the run goes on without it
            print(f"Weights & Biases: not logging ({type(exc).__name__}: {exc})", flush=True)
            return None
        return cls(run)

    def scalars(self, values: dict[str, float], step: int, wall_time: float | None = None) -> None:
        # W&B's own step must only grow; an eval arrives after later learner steps were
        # logged, so the learner step travels as a value instead
        self.run.log({**values, "learner_step": step})  # type: ignore[attr-defined]

    def close(self) -> None:
        self.run.finish()  # type: ignore[attr-defined]
