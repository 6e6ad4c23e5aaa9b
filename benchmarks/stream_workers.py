"""Worker processes and broker plumbing of benchmarks/stream.py: the scorer/filter workers of
one run (`rollstream run scorer|filter`, or stream.py's trivial forwarder) with their logs, CPU
and consumed counts; a fresh embedded broker per run; a fresh namespace's topics; a group-less
reader of output topics; a timed publish of input messages.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rollstream.schemas.topics import qualified
from rollstream.services.runtime.settings import KafkaSettings

STREAM_TOPICS = ("rollouts.raw", "rollouts.scored", "groups.kept", "groups.dropped", "prompt.stats")
SOURCE = {"scorer": "rollouts.raw", "filter": "rollouts.scored"}
TICK = os.sysconf("SC_CLK_TCK")
FORWARDER = Path(__file__).with_name("stream.py")  # its --forward-worker mode


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a live process (0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK


class Workers:
    """Worker subprocesses of one run, their logs, CPU and metrics."""

    def __init__(self, kafka: KafkaSettings, logdir: Path) -> None:
        self.kafka = kafka
        self.logdir = logdir
        self.procs: list[tuple[str, str, subprocess.Popen[bytes], Path]] = []

    def start(self, role: str, extra: list[str] | None = None) -> None:
        name = f"{role}{sum(1 for r, *_ in self.procs if r == role)}"
        k = self.kafka
        if role in SOURCE:
            cmd = [sys.executable, "-m", "rollstream.services.cli", "run", role]
            cmd += ["--metrics-port", "0", "--set", "kafka.session_timeout_ms=6000"]
            cmd += ["--instance", f"{k.namespace}-{name}"]
        else:  # the trivial forwarder of stream.py
            cmd = [sys.executable, str(FORWARDER), "--forward-worker", role]
        cmd += ["--bootstrap", k.bootstrap, "--namespace", str(k.namespace), *(extra or [])]
        log = self.logdir / f"{k.namespace}-{name}.log"
        with open(log, "w") as f:  # the child keeps its own descriptor
            self.procs.append((role, name, subprocess.Popen(cmd, stdout=f, stderr=f), log))

    def cpu(self) -> dict[str, float]:
        return {name: cpu_s(p.pid) for _, name, p, _ in self.procs}

    def consumed(self) -> dict[str, int]:
        """Messages each scorer/filter worker read from its source (its /metrics)."""
        out = {}
        for role, name, _, log in self.procs:
            port = re.search(r"metrics on :(\d+)", log.read_text(errors="replace"))
            if role not in SOURCE or port is None:
                continue
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port[1]}/metrics", timeout=3) as r:
                    text = r.read().decode()
            except OSError:
                continue
            line = f'rollstream_{role}_messages_in_total{{topic="{SOURCE[role]}"}} '
            out[name] = sum(int(float(x.split()[-1])) for x in text.splitlines() if line in x)
        return out

    def check(self) -> str | None:
        """Why a worker has exited (its last error line), or None while all run."""
        for _, name, p, log in self.procs:
            if p.poll() is not None:
                lines = log.read_text(errors="replace").splitlines()
                why = [x for x in lines if "Error" in x or "reason=" in x] or lines[-1:] or [""]
                return f"worker {name} exited with {p.returncode}: {why[-1].strip()[:400]}"
        return None

    def stop(self) -> None:
        for *_, p, _ in self.procs:
            if p.poll() is None:
                p.terminate()
        for *_, p, _ in self.procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


@contextlib.contextmanager
def broker_for(bootstrap: str | None, logdir: Path, name: str) -> Iterator[tuple[str, dict]]:
    """(bootstrap, processes whose CPU counts too) for one run: `bootstrap` if given, else a
    fresh embedded broker, stopped afterwards (see module docstring)."""
    if bootstrap:
        yield bootstrap, {}
        return
    from rollstream.services.runtime.broker import EmbeddedBroker

    broker = EmbeddedBroker(log_path=logdir / f"broker-{name}.log").start()
    try:
        yield broker.bootstrap, ({"broker": broker.proc.pid} if broker.proc else {})
    finally:
        broker.stop()


def fresh(bootstrap: str, partitions: int) -> KafkaSettings:
    from rollstream.services.runtime.admin import create_topics

    kafka = KafkaSettings(
        bootstrap=bootstrap, namespace="bench" + uuid.uuid4().hex[:8], session_timeout_ms=6000
    )
    create_topics(kafka, partitions=dict.fromkeys(STREAM_TOPICS, partitions))
    return kafka


def reader(kafka: KafkaSettings, topics: tuple[str, ...]) -> Any:
    """A group-less confluent consumer of every partition of `topics` from the beginning."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    cfg = {"group.id": "bench-nogroup", "enable.auto.commit": False, "fetch.wait.max.ms": 10}
    c = Consumer({**kafka.client_config("bench"), **cfg})
    md = c.list_topics(timeout=10)
    tps = []
    for t in topics:
        real = qualified(t, kafka.namespace)
        tps += [TopicPartition(real, p, OFFSET_BEGINNING) for p in md.topics[real].partitions]
    c.assign(tps)
    return c


def publish(kafka: KafkaSettings, values: list[tuple[str, bytes]], topic: str) -> float:
    from rollstream.services.runtime.bus import Producer

    p = Producer(kafka, "bench")
    t0 = time.perf_counter()
    for key, value in values:
        p.send_raw(topic, value, key)
    p.flush()
    p.close()
    return time.perf_counter() - t0


def cpu_all(procs: Workers, others: dict[str, int]) -> dict[str, float]:
    out = procs.cpu()
    out.update({name: cpu_s(pid) for name, pid in others.items()})
    out["bench"] = time.process_time()
    out["machine"] = machine_cpu_s()
    return out


def machine_cpu_s() -> float:
    """CPU seconds every process on the machine has used (user+nice+system+irq+softirq)."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    return sum(int(fields[i]) for i in (0, 1, 2, 5, 6)) / TICK
