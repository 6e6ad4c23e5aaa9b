"""Stages reach Kafka through the bus: outside runtime/bus.py (producer, consumer), reader.py,
runtime/admin.py (its admin-client half) and the faust layer, no module imports confluent_kafka."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

ALLOWED = {
    "rollstream/services/runtime/bus.py",
    "rollstream/services/runtime/reader.py",
    "rollstream/services/runtime/admin.py",
    "rollstream/services/runtime/faust/sender.py",  # the faust layer: faust's own producer replaced
    "rollstream/services/filter/app.py",  # the faust layer: the filter app's internal topics
}


def kafka_imports(path: Path) -> list[int]:
    """Line numbers of the `confluent_kafka` imports in the module at `path`."""
    lines = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names = [node.module or ""]
        else:
            continue
        if any(n == "confluent_kafka" or n.startswith("confluent_kafka.") for n in names):
            lines.append(node.lineno)
    return lines


def test_only_the_bus_admin_and_faust_layer_import_confluent_kafka() -> None:
    found = {
        str(p.relative_to(ROOT)): kafka_imports(p)
        for p in sorted((ROOT / "rollstream" / "services").rglob("*.py"))
    }
    outside = {p: lines for p, lines in found.items() if lines and p not in ALLOWED}
    assert outside == {}, "use runtime/bus.py (Producer, Consumer, Reader) or runtime/admin.py"
    assert {p for p, lines in found.items() if lines} == ALLOWED  # the list is kept up to date


def test_kafka_linger_ms_reaches_every_producer_and_a_bad_value_names_the_field() -> None:
    import pydantic
    import pytest

    from rollstream.services.runtime.bus import producer_config
    from rollstream.services.runtime.settings import KafkaSettings

    assert producer_config(KafkaSettings(), "scorer")["linger.ms"] == 5
    assert producer_config(KafkaSettings(linger_ms=40), "scorer")["linger.ms"] == 40
    extra = {"linger.ms": 0}  # one producer's own setting still wins
    assert producer_config(KafkaSettings(linger_ms=40), "x", extra=extra)["linger.ms"] == 0
    with pytest.raises(pydantic.ValidationError, match="linger_ms"):
        KafkaSettings(linger_ms=-1)
