"""The faust / aiokafka patches (rollstream/services/runtime/faust/patches.py) fit the installed
packages, and refuse to start, naming what is wrong, when they do not."""

from __future__ import annotations

import importlib
import tomllib
from pathlib import Path

import pytest

from rollstream.services.runtime.faust import patches as fp

ROOT = Path(__file__).resolve().parents[2]


def test_every_patched_and_relied_on_attribute_exists_in_the_installed_faust() -> None:
    for p in (*fp.PATCHES, *fp.RELIED_ON):
        target = importlib.import_module(p.module)
        if p.owner is not None:
            target = getattr(target, p.owner)
        assert hasattr(target, p.attr), f"{p.module}.{p.owner}.{p.attr} is gone ({p.why})"
    fp.check()  # and the versions are the tested ones


def test_a_vanished_attribute_stops_the_start_with_its_name(monkeypatch) -> None:
    from faust.transport.consumer import Consumer

    monkeypatch.delattr(Consumer, "_drain_messages")
    with pytest.raises(fp.FaustPatchError, match=r"Consumer\._drain_messages is gone"):
        fp.apply()


def test_an_untested_faust_version_stops_the_start_with_the_range(monkeypatch) -> None:
    real = fp.metadata.version
    monkeypatch.setattr(
        fp.metadata, "version", lambda name: "0.17.1" if name == "faust-streaming" else real(name)
    )
    with pytest.raises(fp.FaustPatchError, match=r"faust-streaming 0\.17\.1 .*>=0\.15,<0\.16"):
        fp.check()


def test_pyproject_pins_the_tested_ranges() -> None:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    for package, (_, high) in fp.TESTED.items():
        spec = next(d for d in deps if d.startswith(package))
        assert f"<{high[0]}.{high[1]}" in spec, spec


def test_apply_patches_once_and_marks_each() -> None:
    from faust.tables.recovery import Recovery
    from faust.transport.consumer import Consumer
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
    from faust.transport.producer import ProducerBuffer

    fp.apply()
    drain, completed = Consumer._drain_messages, Recovery.on_recovery_completed
    fp.apply()
    assert Consumer._drain_messages is drain
    assert Recovery.on_recovery_completed is completed
    for owner, mark in (
        (Consumer, "_rollstream_batch_delivery"),
        (ProducerBuffer, "_rollstream_drains"),
        (AIOKafkaConsumerThread, "_rollstream_rewinds"),
        (AIOKafkaConsumerThread, "_rollstream_fetched_ends"),
        (AIOKafkaConsumerThread, "_rollstream_fetch_wait"),
        (Recovery, "_rollstream_stops_flow"),
    ):
        assert getattr(owner, mark, False), mark
