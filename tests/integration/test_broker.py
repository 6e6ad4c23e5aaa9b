"""`rollstream broker` as a user runs it: starts, answers Kafka, stops cleanly, and says so
when the port is taken."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient

from rollstream.services.runtime.broker import free_port

pytestmark = pytest.mark.kafka

ROLLSTREAM = str(Path(sys.executable).with_name("rollstream"))


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def test_broker_serves_kafka_and_stops_cleanly_on_sigterm() -> None:
    port = free_port()
    proc = subprocess.Popen(
        [ROLLSTREAM, "broker", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert first.strip() == f"broker ready: bootstrap 127.0.0.1:{port}"
        md = AdminClient({"bootstrap.servers": f"127.0.0.1:{port}"}).list_topics(timeout=10)
        assert len(md.brokers) == 1
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:  # only on failure: stop what this test started
            proc.send_signal(signal.SIGTERM)
            proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert "broker stopped" in out
    assert port_is_free(port)


def test_busy_port_gives_a_clear_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        out = subprocess.run(
            [ROLLSTREAM, "broker", "--port", str(port)], capture_output=True, text=True, timeout=60
        )
    assert out.returncode != 0
    assert f"port {port} on 127.0.0.1 is busy" in out.stderr
    assert "Traceback" not in out.stderr
