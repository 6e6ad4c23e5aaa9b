"""The TensorBoard event files `rollstream up` writes are real event files: TensorBoard's
record framing with valid checksums and `Event` protobufs, read back here with the protobuf
definitions tensorboardX ships (an independent decoder), holding the accuracy series."""

from __future__ import annotations

from pathlib import Path

from tb_events import read_events

from rollstream.services.up.tbevents import EventWriter


def test_event_file_holds_the_accuracy_series(tmp_path: Path) -> None:
    w = EventWriter(tmp_path / "tensorboard")
    w.scalars({"accuracy/held_out": 0.37, "accuracy/sort": 0.35}, step=0, wall_time=100.0)
    w.scalars({"accuracy/held_out": 0.52, "reward/mean": 0.25}, step=40, wall_time=160.5)
    w.close()
    files = list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    assert len(files) == 1
    events = read_events(files[0])
    assert events[0].file_version == "brain.Event:2"
    series = [
        (e.step, e.wall_time, v.tag, round(v.simple_value, 4))
        for e in events[1:]
        for v in e.summary.value
    ]
    assert series == [
        (0, 100.0, "accuracy/held_out", 0.37),
        (0, 100.0, "accuracy/sort", 0.35),
        (40, 160.5, "accuracy/held_out", 0.52),
        (40, 160.5, "reward/mean", 0.25),
    ]
