"""What every stage process shares: argument parsing, config, logging, metrics server, stop
signal, and followers of the compacted `control` and `weights` topics.

A stage's `main(argv)` is: `ctx = StageContext.from_argv(stage, argv)`, build, loop while
`not ctx.stopping`, close. SIGTERM / SIGINT set `stopping`; the loop finishes its batch,
commits, and exits.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from rollstream.schemas import ControlUpdate, WeightUpdate
from rollstream.services.runtime.bus import Consumer, Record
from rollstream.services.runtime.config import RunConfig, load_config
from rollstream.services.runtime.metrics import BusMetrics, MetricsServer, StageMetrics
from rollstream.services.runtime.settings import KafkaSettings

log = logging.getLogger("rollstream")

# Followers of the compacted control/weights topics are idle nearly always: their fetches wait
# up to 500 ms (librdkafka's default), not kafka.fetch_wait_max_ms. On the embedded broker 12
# idle consumers cost it 22 % of a core at 100 ms and 6.5 % at 500 ms.
FOLLOWER_FETCH_WAIT_MS = 500

# Every follower process reads the same compacted topic, so a bad record on it would be
# dead-lettered once per process (generator replicas, filter workers, ...). One stage, a
# singleton that follows the topic for its whole life, dead-letters its bad records; every
# other follower skips them and counts them (rollstream_<stage>_skipped_records_total).
DEAD_LETTERED_BY = {"control": "replay", "weights": "evaluator"}


def stage_parser(stage: str, description: str = "") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"rollstream run {stage}", description=description)
    p.add_argument(
        "--config",
        default=os.environ.get("ROLLSTREAM_CONFIG"),
        help="run YAML (env ROLLSTREAM_CONFIG)",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="PATH=VALUE",
        help="override a config field, e.g. --set generator.batch_prompts=32",
    )
    p.add_argument("--bootstrap", default=None, help="Kafka HOST:PORT (env ROLLSTREAM_BOOTSTRAP)")
    p.add_argument(
        "--namespace", default=None, help="topic/group prefix (env ROLLSTREAM_NAMESPACE)"
    )
    p.add_argument(
        "--metrics-port",
        type=int,
        default=int(os.environ.get("ROLLSTREAM_METRICS_PORT", "0") or 0),
        help="port for /metrics and /healthz (0: a free port; -1: none)",
    )
    p.add_argument(
        "--instance",
        default=os.environ.get("ROLLSTREAM_INSTANCE") or f"{socket.gethostname()}-{os.getpid()}",
        help="this process's id (static group membership, logs)",
    )
    p.add_argument(
        "--run-dir",
        default=os.environ.get("ROLLSTREAM_RUN_DIR"),
        help="run folder for checkpoints/weights (set by `rollstream up`)",
    )
    p.add_argument("--log-level", default=os.environ.get("ROLLSTREAM_LOG_LEVEL", "INFO"))
    return p


class StageContext:
    """Parsed settings and the process-wide pieces of one stage."""

    def __init__(self, stage: str, args: argparse.Namespace, cfg: RunConfig) -> None:
        self.stage = stage
        self.args = args
        self.cfg = cfg
        k = cfg.kafka
        upd: dict[str, Any] = {}
        if args.bootstrap:
            upd["bootstrap"] = args.bootstrap
        if args.namespace:
            upd["namespace"] = args.namespace
        self.kafka: KafkaSettings = k.model_copy(update=upd) if upd else k
        self.instance: str = args.instance
        self.metrics = StageMetrics(stage)
        self.bus_metrics = BusMetrics(self.metrics)
        self.info = self.metrics.gauge("up", "1 while the stage process runs", ["instance"])
        self.stopping = False
        self.healthy: Callable[[], bool] = lambda: not self.stopping
        self.server: MetricsServer | None = None

    @classmethod
    def from_argv(
        cls, stage: str, argv: list[str], parser: argparse.ArgumentParser | None = None
    ) -> StageContext:
        parser = parser or stage_parser(stage)
        args = parser.parse_args(argv)
        cfg = load_config(args.config, args.set)
        from rollstream.services.runtime.plugins import add_plugin_dirs

        add_plugin_dirs(cfg.plugins)
        logging.basicConfig(
            level=args.log_level.upper(),
            format=f"%(asctime)s {stage} %(levelname)s %(name)s: %(message)s",
            stream=sys.stderr,
        )
        libs = os.environ.get("ROLLSTREAM_LIB_LOG_LEVEL", "WARNING").upper()
        for noisy in ("aiokafka", "faust", "mode", "httpx", "urllib3"):
            logging.getLogger(noisy).setLevel(libs)
        return cls(stage, args, cfg)

    def start(self) -> StageContext:
        """Serve /metrics and /healthz; route SIGTERM/SIGINT to `stopping`."""
        if self.args.metrics_port >= 0:
            self.server = MetricsServer(
                self.metrics.registry, self.args.metrics_port, lambda: self.healthy()
            )
            log.info(
                "%s %s: metrics on :%d, kafka %s%s",
                self.stage,
                self.instance,
                self.server.port,
                self.kafka.bootstrap,
                f" namespace {self.kafka.namespace}" if self.kafka.namespace else "",
            )
        self.info.labels(self.instance).set(1)
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._on_signal)
            signal.signal(signal.SIGINT, self._on_signal)
        return self

    def _on_signal(self, signum: int, frame: object) -> None:
        if self.stopping:  # second signal: give up on a clean stop
            raise KeyboardInterrupt
        log.info("%s: signal %d, stopping after the current batch", self.stage, signum)
        self.stopping = True

    def close(self) -> None:
        self.info.labels(self.instance).set(0)
        if self.server is not None:
            self.server.close()


class Follower(threading.Thread):
    """Reads a compacted topic from the beginning in the background, without a consumer
    group, and keeps the newest message that `accept` takes; with `keep` > 0 also the last
    `keep` accepted records, for `take()`. Bad records are dead-lettered only by the stage
    named in DEAD_LETTERED_BY (the others skip and count them)."""

    def __init__(
        self,
        kafka: KafkaSettings,
        stage: str,
        topic: str,
        accept: Callable[[Any], bool],
        newer: Callable[[Any, Any], bool],
        keep: int = 0,
        fetch_wait_ms: int | None = None,
    ) -> None:
        super().__init__(name=f"follow-{topic}", daemon=True)
        ms = fetch_wait_ms or max(kafka.fetch_wait_max_ms, FOLLOWER_FETCH_WAIT_MS)
        wait = {"fetch.wait.max.ms": ms}
        self.consumer = Consumer(
            kafka,
            stage,
            [topic],
            group=None,
            from_beginning=True,
            extra=wait,
            dead_letters=DEAD_LETTERED_BY.get(topic, stage) == stage,
        )
        self.accept = accept
        self.newer = newer
        self.latest: Any = None
        self.seq = 0  # bumps on every change
        self._kept: deque[Record[Any]] | None = deque(maxlen=keep) if keep > 0 else None
        self._halt = threading.Event()
        self._lock = threading.Lock()
        self.caught_up = threading.Event()
        self._fetch_wait_s = ms / 1000
        self._sync_asked_at: float | None = None
        self._synced = threading.Event()

    def sync(self, timeout_s: float) -> bool:
        """Wait until everything on the topic when this was called has been read; False after
        `timeout_s`. "The end" is the one the last fetch reported, so it counts only once a
        fetch sent after the call can have answered (a fetch waits at most its fetch wait)."""
        self._sync_asked_at = time.monotonic()  # first: an earlier request answered now
        self._synced.clear()  # finds itself replaced and does not set the event
        return self._synced.wait(timeout_s)

    def run(self) -> None:
        while not self._halt.is_set():
            asked = self._sync_asked_at
            try:
                recs = self.consumer.poll(100, 0.2)
            except Exception as exc:  # keep following through broker hiccups
                log.warning("%s: %s", self.name, exc)
                time.sleep(0.5)
                continue
            for r in recs:
                if not self.accept(r.value):
                    continue
                with self._lock:
                    if self._kept is not None:
                        self._kept.append(r)
                    if self.latest is None or self.newer(r.value, self.latest):
                        self.latest = r.value
                        self.seq += 1
            answered = asked is not None and time.monotonic() - asked > self._fetch_wait_s + 0.1
            if (not self.caught_up.is_set() or answered) and self._at_end():
                self.caught_up.set()
                if answered and self._sync_asked_at == asked:  # not a newer request meanwhile
                    self._sync_asked_at = None
                    self._synced.set()
        self.consumer.close()

    def _at_end(self) -> bool:
        """Every partition read to the end its last fetch reported (after every poll: a busy
        topic may never give an empty one). An empty poll alone is not enough: the first can
        come back before the first fetch from offset 0 has."""
        try:
            return self.consumer.at_end()
        except Exception:  # a broker hiccup: not known to be caught up yet
            return False

    def take(self) -> list[Record[Any]]:
        """The accepted records since the last call, oldest first (needs `keep` > 0)."""
        with self._lock:
            out = list(self._kept or ())
            if self._kept is not None:
                self._kept.clear()
        return out

    def stop(self, wait_s: float = 2.0) -> None:
        """Halt and wait (up to `wait_s`; a poll lasts 0.2 s) until the consumer is closed: a
        process that exits while the thread is still inside the client's poll can abort
        ("terminate called without an active exception", seen on a torchrun learner)."""
        self._halt.set()
        if self.is_alive() and threading.current_thread() is not self:
            self.join(wait_s)


def follow_control(kafka: KafkaSettings, stage: str) -> Follower:
    f = Follower(
        kafka,
        stage,
        "control",
        lambda m: isinstance(m, ControlUpdate) and m.stage == stage and not m.applied,
        lambda a, b: a.revision >= b.revision,
    )
    f.start()
    return f


def follow_applied_knobs(kafka: KafkaSettings, stage: str, others: tuple[str, ...]) -> Follower:
    """Every answer of other stages on `control` (the live knobs they run, after a revision
    they applied: runtime/knobs.py), oldest first, for `take()`: for a stage whose work depends
    on them (the generator paces by replay's batch_groups and the learner's publish_every). A
    revision they refuse has no answer, so it never reaches the stage that follows them."""
    f = Follower(
        kafka,
        stage,
        "control",
        lambda m: isinstance(m, ControlUpdate) and m.stage in others and m.applied,
        lambda a, b: True,
        keep=64,
    )
    f.start()
    return f


def follow_weights(
    kafka: KafkaSettings,
    stage: str,
    policy: str,
    *,
    last: bool = False,
    fetch_wait_ms: int | None = None,
) -> Follower:
    """Newest WeightUpdate of `policy` (by version), or with `last` the last one published
    (so the caller can see, and refuse, a version older than the one it runs).
    `fetch_wait_ms`: how long a fetch that finds nothing waits (default: a follower's 500 ms).
    A broker that checks for new records during a fetch's wait now and then, not at once,
    hands a new version over later the longer the wait (the embedded broker: median 15 ms at
    100 ms, 79 ms at 500; benchmarks/fetch_wait.py), so a stage that acts on each version
    passes a shorter one."""
    f = Follower(
        kafka,
        stage,
        "weights",
        lambda m: isinstance(m, WeightUpdate) and m.policy == policy,
        (lambda a, b: True) if last else (lambda a, b: a.version > b.version),
        fetch_wait_ms=fetch_wait_ms,
    )
    f.start()
    return f
