"""Which Kafka a tool (`tap`, `record`, `playback`, `topics`, `control`, `status`) talks to.

`--bootstrap`, else the environment (ROLLSTREAM_BOOTSTRAP, ROLLSTREAM_KAFKA__BOOTSTRAP, the run
file named by ROLLSTREAM_CONFIG); with neither, the broker of the newest run under `./runs`
while it answers: `rollstream up` starts its embedded broker on a free port (and gives a run
on a Kafka named with --bootstrap a namespace of its own), both saved in the run's
config.yaml, so the default 127.0.0.1:9092 reaches nothing of it. Said on stderr when a
run's broker is used; a Kafka that does not answer (named, a run's, or the default) fails
with what to do, instead of the client's connection errors."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from rollstream.services.runtime.settings import KafkaSettings, kafka_from

ENV_KEYS = ("ROLLSTREAM_BOOTSTRAP", "ROLLSTREAM_KAFKA__BOOTSTRAP", "ROLLSTREAM_CONFIG")
NAMESPACE_KEYS = ("ROLLSTREAM_NAMESPACE", "ROLLSTREAM_KAFKA__NAMESPACE")


def latest_run(root: Path = Path("runs")) -> Path | None:
    """The run folder under `root` (one with a config.yaml) changed last."""
    runs = [p for p in root.glob("*") if (p / "config.yaml").exists()] if root.exists() else []
    return max(runs, key=lambda p: p.stat().st_mtime) if runs else None


def is_sync_run(run: Path) -> bool:
    """A `--mode sync` run folder: `up` writes run.json when a stream run starts, sync never
    does (its counts are in sync_summary.json)."""
    return (run / "config.yaml").exists() and not (run / "run.json").exists()


def stream_runs(root: Path = Path("runs")) -> list[Path]:
    """Run folders of `rollstream up` in stream mode (a run.json: a sync run has no broker),
    the most recently started first (by config.yaml, written at start: a folder's own time
    moves when a stopped run's report is written)."""
    if not root.exists():
        return []
    runs = [p for p in root.glob("*") if (p / "config.yaml").exists() and not is_sync_run(p)]
    return sorted(runs, key=lambda p: (p / "config.yaml").stat().st_mtime, reverse=True)


def saved_config(run: Path | None) -> dict[str, Any]:
    """The run's config.yaml (the config it resolved and ran with), or {}."""
    if run is None or not (run / "config.yaml").exists():
        return {}
    import yaml

    return dict(yaml.safe_load((run / "config.yaml").read_text()) or {})


def saved_kafka(run: Path | None) -> dict[str, Any]:
    """The `kafka` section of the run's config.yaml (bootstrap, namespace), or {}."""
    return dict(saved_config(run).get("kafka") or {})


def named_kafka(args: argparse.Namespace) -> bool:
    """Whether `--bootstrap` or the environment names a Kafka (it wins over a run's own)."""
    return bool(getattr(args, "bootstrap", None) or any(os.environ.get(k) for k in ENV_KEYS))


def answers(bootstrap: str, timeout_s: float = 2.0) -> bool:
    """Whether a Kafka broker answers at `bootstrap` within `timeout_s`."""
    from rollstream.services.runtime.broker import wait_for_kafka

    try:
        wait_for_kafka(bootstrap, timeout_s=timeout_s)
    except Exception:
        return False
    return True


NAMED_TIMEOUT_S = 10.0
"""How long a Kafka named by flag or environment has to answer a metadata request."""


def exit_unless_named_answers(kafka: KafkaSettings, timeout_s: float = NAMED_TIMEOUT_S) -> None:
    """Exit 2, saying so, when the Kafka named by `--bootstrap` or the environment does not
    answer (asked with its own client settings, as the tool will ask it), instead of the
    client retrying a dead address with a stream of connection errors."""
    from rollstream.services.runtime.admin import unreachable

    why = unreachable(kafka, timeout_s=timeout_s)
    if why is not None:
        print(
            f"error: no Kafka answers at {kafka.bootstrap} (named by --bootstrap, "
            f"ROLLSTREAM_BOOTSTRAP or the run file in ROLLSTREAM_CONFIG) within {timeout_s:g} s: "
            f"{why}",
            file=sys.stderr,
        )
        raise SystemExit(2)


def tool_kafka(args: argparse.Namespace, wait_s: float = NAMED_TIMEOUT_S) -> KafkaSettings:
    """See the module docstring. Exits 2, saying what to do, when nothing answers: the Kafka
    named, or (nothing named) a run's or the default."""
    return tool_target(args, wait_s)[0]


def tool_target(
    args: argparse.Namespace, wait_s: float = NAMED_TIMEOUT_S
) -> tuple[KafkaSettings, Path | None]:
    """`tool_kafka`, and the run folder whose broker it is (None when named otherwise); a
    named Kafka has `wait_s` to answer."""
    namespace = getattr(args, "namespace", None)
    if named_kafka(args):
        kafka = kafka_from(getattr(args, "bootstrap", None), namespace)
        exit_unless_named_answers(kafka, wait_s)
        return kafka, None
    named = any(os.environ.get(k) for k in NAMESPACE_KEYS)
    stopped = None
    for run in stream_runs()[:3]:  # the newest runs whose broker still answers
        saved = saved_kafka(run)
        if not saved.get("bootstrap"):
            continue
        if not answers(saved["bootstrap"]):
            stopped = stopped or run
            continue
        # a namespace named by flag or environment wins over the run's
        own = None if named else saved.get("namespace")
        kafka = kafka_from(saved["bootstrap"], namespace or own)
        print(
            f"(Kafka of the run {run}: {kafka.bootstrap}, namespace "
            f"{kafka.namespace or '(none)'}; --bootstrap to name another)",
            file=sys.stderr,
        )
        return kafka, run
    kafka = kafka_from(None, namespace)
    if not answers(kafka.bootstrap):
        gone = f" (the newest run, {stopped}, has stopped)" if stopped else ""
        print(
            f"error: no Kafka answers at {kafka.bootstrap}{gone}: start a run "
            "(`rollstream up`) or a broker (`rollstream broker`), or pass --bootstrap HOST:PORT",
            file=sys.stderr,
        )
        raise SystemExit(2)
    return kafka, None
