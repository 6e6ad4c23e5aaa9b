"""Prometheus metrics and health for one process: one registry, one small HTTP server.

`/metrics` serves the Prometheus text format, `/healthz` answers 200 while the process's health
check passes and 503 otherwise. Names follow `rollstream_<stage>_<what>_<unit>`; counters end in
`_total`; durations are histograms in seconds. One process per stage keeps prometheus-client out
of its multiprocess mode.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

LATENCY_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class StageMetrics:
    """Creates metrics named `rollstream_<stage>_<name>` in one registry."""

    def __init__(self, stage: str, registry: CollectorRegistry | None = None) -> None:
        disable_created_metrics()  # no extra `_created` series
        self.stage = stage
        self.registry = registry if registry is not None else CollectorRegistry()
        self.prefix = f"rollstream_{stage}_"

    def counter(self, name: str, doc: str, labels: Sequence[str] = ()) -> Counter:
        assert name.endswith("_total"), name
        # prometheus_client appends _total itself; give it the stem.
        return Counter(self.prefix + name[: -len("_total")], doc, labels, registry=self.registry)

    def gauge(self, name: str, doc: str, labels: Sequence[str] = ()) -> Gauge:
        return Gauge(self.prefix + name, doc, labels, registry=self.registry)

    def histogram(
        self,
        name: str,
        doc: str,
        labels: Sequence[str] = (),
        buckets: Sequence[float] = LATENCY_BUCKETS,
    ) -> Histogram:
        return Histogram(self.prefix + name, doc, labels, buckets=buckets, registry=self.registry)


class BusMetrics:
    """What every consumer/producer counts: messages in and out, dead letters, lag."""

    def __init__(self, m: StageMetrics) -> None:
        self.messages_in = m.counter("messages_in_total", "Messages consumed", ["topic"])
        self.messages_out = m.counter("messages_out_total", "Messages produced", ["topic"])
        self.dead_letters = m.counter(
            "dead_letters_total", "Messages sent to a dead-letter topic", ["topic"]
        )
        self.skipped = m.counter(
            "skipped_records_total", "Bad records a read-only reader skipped", ["topic"]
        )
        self.commits_refused = m.counter(
            "commits_refused_total", "Offset commits the group refused (rejoined)", ["error"]
        )
        self.consumer_lag = m.gauge(
            "consumer_lag_messages", "Messages behind the end of the topic", ["topic"]
        )


def metric_names(registry: CollectorRegistry) -> set[str]:
    """Every sample name a registry exports (as Prometheus would scrape them)."""
    names: set[str] = set()
    for fam in registry.collect():
        for s in fam.samples:
            names.add(s.name)
        if fam.type == "histogram":
            names.update({fam.name + "_bucket", fam.name + "_sum", fam.name + "_count"})
        elif fam.type == "counter":
            names.add(fam.name + "_total")
        else:
            names.add(fam.name)
    return names


class MetricsServer:
    """Serves /metrics and /healthz on `port` (0 picks a free one) in a daemon thread."""

    def __init__(
        self,
        registry: CollectorRegistry,
        port: int,
        health: Callable[[], bool] = lambda: True,
        host: str = "0.0.0.0",
    ) -> None:
        reg, check = registry, health

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server API)
                if self.path.startswith("/metrics"):
                    body, code, ctype = generate_latest(reg), 200, CONTENT_TYPE_LATEST
                elif self.path.startswith("/healthz"):
                    ok = _safe(check)
                    body, code, ctype = (
                        (b"ok\n" if ok else b"unhealthy\n"),
                        200 if ok else 503,
                        "text/plain",
                    )
                else:
                    body, code, ctype = b"not found\n", 404, "text/plain"
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer((host, port), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="metrics", daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _safe(check: Callable[[], bool]) -> bool:
    try:
        return bool(check())
    except Exception:
        return False


STAGES_WITH_METRICS = ("feed", "generator", "scorer", "filter", "replay", "learner", "evaluator")


def catalog() -> dict[str, set[str]]:
    """Every metric name each stage exports, per stage, as Prometheus scrapes them.

    Each stage's `rollstream/services/<stage>/metrics.py` has `register(m: StageMetrics)` that
    creates all of its metrics; BusMetrics and the `up` gauge are common to all. The Helm
    dashboard test checks its queries against this."""
    import importlib

    out: dict[str, set[str]] = {}
    for stage in STAGES_WITH_METRICS:
        m = StageMetrics(stage)
        BusMetrics(m)
        m.gauge("up", "1 while the stage process runs", ["instance"])
        try:
            mod = importlib.import_module(f"rollstream.services.{stage}.metrics")
        except ModuleNotFoundError:
            mod = None
        if mod is not None:
            mod.register(m)
        out[stage] = metric_names(m.registry)
    return out


class Busy:
    """Wall seconds per phase of a stage's loop (generator, learner), kept two ways: what is new
    since the last `take` (for counters) and a window of about `window_s` in which older time
    counts half each time the window fills (for idle fractions)."""

    def __init__(self, window_s: float = 60.0) -> None:
        self.window_s = window_s
        self.new: dict[str, float] = {}
        self.recent: dict[str, float] = {}

    def add(self, phase: str, secs: float) -> None:
        self.new[phase] = self.new.get(phase, 0.0) + secs
        self.recent[phase] = self.recent.get(phase, 0.0) + secs
        if sum(self.recent.values()) > self.window_s:
            self.recent = {k: v / 2 for k, v in self.recent.items()}

    def take(self) -> dict[str, float]:
        out, self.new = self.new, {}
        return out

    def share(self, phase: str) -> float:
        """`phase`'s share of the recent window (0 before anything was added)."""
        total = sum(self.recent.values())
        return self.recent.get(phase, 0.0) / total if total > 0 else 0.0

    def idle_fraction(self, working: str) -> float:
        """The recent share of every phase but `working` (0 before anything was added)."""
        total = sum(self.recent.values())
        return 1.0 - self.recent.get(working, 0.0) / total if total > 0 else 0.0
