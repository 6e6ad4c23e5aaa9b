"""Small CLI commands over the bus: `topics create|list`, `control`."""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

from rollstream.services.tools.target import NAMED_TIMEOUT_S, tool_kafka, tool_target


def topics(args: argparse.Namespace) -> int:
    from rollstream.services.runtime.admin import create_topics, describe

    # a Job that creates the topics may start while its Kafka is still coming up
    kafka = tool_kafka(args, wait_s=30.0 if args.action == "create" else NAMED_TIMEOUT_S)
    if args.action == "create":
        res = create_topics(kafka, replication=args.replication)
        created = sum(1 for v in res.values() if v == "created")
        for name, state in res.items():
            print(f"{state:8} {name}")
        print(f"{created} created, {len(res) - created} already there ({kafka.bootstrap})")
        return 0
    from rich.console import Console
    from rich.table import Table

    infos = describe(kafka)
    table = Table()  # topic names whole (they are what a user types next); the rest folds
    table.add_column("topic", no_wrap=True, min_width=max((len(i.name) for i in infos), default=5))
    table.add_column("partitions", justify="right")
    table.add_column("messages", justify="right")
    table.add_column("end offsets", overflow="fold")
    table.add_column("group lag", overflow="fold")
    for info in infos:
        lags = ", ".join(f"{g}={lag}" for g, lag in sorted(info.group_lags.items())) or "-"
        ends = " ".join(str(e) for e in info.end_offsets)
        table.add_row(info.name, str(info.partitions), str(info.messages), ends, lags)
    Console().print(table)
    return 0


# Stages that follow `control`; each one's config module has `validate_control(params, base)`.
CONTROL_STAGES = ("feed", "generator", "scorer", "filter", "replay", "learner")


def run_section(stage: str, run: Path | None) -> Any:
    """The stage's section of the run's config (the file ROLLSTREAM_CONFIG names, else the
    run whose broker the tool found), which the stage checks a revision against; None when
    not known (then the defaults: a value the stage refuses can pass here)."""
    from rollstream.services.runtime.config import ConfigError, load_config, section, section_models

    path = os.environ.get("ROLLSTREAM_CONFIG") or (run / "config.yaml" if run else None)
    if not path:
        return None
    try:
        return section(load_config(path), stage, section_models()[stage])
    except ConfigError:
        return None


def control(args: argparse.Namespace) -> int:
    """Merge KEY=VALUE into the stage's current knobs (minus `--unset KEY`), check them against
    the stage's knob schema, and publish them on `control`. Exit 2, publishing nothing, on an
    unknown stage, an unknown knob or a bad value, so nothing refused stays in the state."""
    import importlib
    import sys

    import yaml
    from pydantic import ValidationError

    from rollstream.schemas import ControlUpdate
    from rollstream.services.runtime.bus import Producer
    from rollstream.services.runtime.config import format_errors

    if args.stage not in CONTROL_STAGES:
        print(
            f"rollstream control: stage {args.stage!r} has no live knobs;"
            f" stages: {', '.join(sorted(CONTROL_STAGES))}",
            file=sys.stderr,
        )
        return 2
    kafka, run = tool_target(args)
    params: dict[str, object] = {}
    for item in args.params:
        key, sep, value = item.partition("=")
        if not sep or not key:
            print(f"rollstream control: expected KEY=VALUE, got {item!r}", file=sys.stderr)
            return 2
        params[key.strip()] = yaml.safe_load(value)
    current, revision = latest_control(kafka, args.stage)
    unset = set(getattr(args, "unset", None) or [])
    merged = {k: v for k, v in {**current, **params}.items() if k not in unset}
    validator = importlib.import_module(f"rollstream.services.{args.stage}.config").validate_control
    try:  # against the run's values, which the stage checks a revision against
        validator(merged, run_section(args.stage, run))
    except ValueError as exc:  # a pydantic ValidationError too: one line a field
        why = format_errors(exc) if isinstance(exc, ValidationError) else str(exc)
        print(
            f"rollstream control: {args.stage}: refused, nothing published: {why}", file=sys.stderr
        )
        return 2
    producer = Producer(kafka, "control")
    update = ControlUpdate(
        stage=args.stage,
        params=merged,
        revision=revision + 1,
        issued_by="cli",
        produced_at=time.time(),
    )
    producer.send("control", update, key=args.stage)
    producer.flush()
    print(f"control {args.stage} revision {revision + 1}: {merged}")
    return 0


def latest_control(kafka, stage: str, timeout_s: float = 2.0) -> tuple[dict, int]:  # type: ignore[no-untyped-def]
    """The newest ControlUpdate params and revision for `stage` (empty, 0 if none)."""
    from rollstream.services.runtime.bus import Consumer

    c = Consumer(kafka, "control-cli", ["control"], group=None, dead_letters=False)
    params: dict = {}
    revision = 0
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            recs = c.poll(500, 0.3)
            for r in recs:
                ask = r.value.stage == stage and not r.value.applied  # not a stage's answer
                if ask and r.value.revision >= revision:
                    params, revision = dict(r.value.params), r.value.revision
            if not recs and c.lag().get("control", 0) == 0:
                break
    finally:
        c.close()
    return params, revision
