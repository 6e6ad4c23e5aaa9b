"""`rollstream control` against hostile or mistaken input, on the real broker (issue 16 D6):
nothing that a stage would refuse is published, so nothing refused stays in the state; an
unknown stage or knob exits non-zero; a knob can be removed; a garbage record on the compacted
`control` topic does not break the command."""

from __future__ import annotations

import pytest
from confluent_kafka import Producer as RawProducer

from rollstream.schemas.topics import qualified
from rollstream.services.cli import main
from rollstream.services.runtime.settings import KafkaSettings
from rollstream.services.tools.commands import latest_control

pytestmark = pytest.mark.kafka


def control(kafka: KafkaSettings, *argv: str) -> int:
    ns = ["--bootstrap", kafka.bootstrap, "--namespace", kafka.namespace or ""]
    return main(["control", *argv, *ns])


def state(kafka: KafkaSettings, stage: str) -> tuple[dict, int]:
    return latest_control(kafka, stage, timeout_s=5.0)


def test_refused_knobs_are_never_published_and_keys_can_be_removed(
    kafka: KafkaSettings, capsys: pytest.CaptureFixture[str]
) -> None:
    assert control(kafka, "generator", "temperature=0.7", "max_tokens=32") == 0
    assert state(kafka, "generator") == ({"temperature": 0.7, "max_tokens": 32}, 1)

    assert control(kafka, "generator", "temperature=-3") == 2  # out of range
    assert control(kafka, "generator", "temprature=0.5") == 2  # a typo: unknown knob
    assert control(kafka, "generatr", "temperature=0.5") == 2  # unknown stage
    assert control(kafka, "scorer", "weights={task: 5000}") == 2
    assert control(kafka, "filter", "group_timeout_s=oops") == 2
    err = capsys.readouterr().err
    assert "temprature" in err and "generatr" in err and "nothing published" in err
    assert state(kafka, "generator") == ({"temperature": 0.7, "max_tokens": 32}, 1)
    assert state(kafka, "generatr") == ({}, 0)

    # a later valid change does not carry a refused value along
    assert control(kafka, "generator", "top_p=0.9") == 0
    assert state(kafka, "generator") == ({"temperature": 0.7, "max_tokens": 32, "top_p": 0.9}, 2)
    assert control(kafka, "generator", "--unset", "temperature") == 0
    assert state(kafka, "generator") == ({"max_tokens": 32, "top_p": 0.9}, 3)


def test_a_garbage_record_on_control_does_not_break_the_command(kafka: KafkaSettings) -> None:
    p = RawProducer({"bootstrap.servers": kafka.bootstrap})
    p.produce(qualified("control", kafka.namespace), b"\xc1\xc1", key=b"replay")
    p.produce(qualified("control", kafka.namespace), None, key=b"replay")
    assert p.flush(30) == 0
    assert control(kafka, "replay", "beta=0.5") == 0
    assert state(kafka, "replay") == ({"beta": 0.5}, 1)
