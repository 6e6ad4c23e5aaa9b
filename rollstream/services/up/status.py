"""`rollstream status [RUN]`: the ledger, consumer lags and versions — live from the topics
while a run's Kafka answers, else from the ledger the run saved when it stopped."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rollstream.services.runtime.settings import kafka_from
from rollstream.services.tools.target import (
    answers,
    exit_unless_named_answers,
    is_sync_run,
    latest_run,
    named_kafka,
    saved_config,
)


def main(args: argparse.Namespace) -> int:
    from rollstream.services.up.ledger import compute, render

    run = Path(args.run) if args.run else latest_run()
    if args.run and not (run / "config.yaml").exists():  # a typo: not some other ledger
        what = "no such folder" if not run.exists() else "not a run folder (no config.yaml)"
        print(f"error: {run}: {what}", file=sys.stderr)
        return 2
    if run is not None and not args.bootstrap and is_sync_run(run):
        return _sync_status(run)
    conf = saved_config(run)
    # a broker named by flag or environment wins over the run's own, as for the other tools
    named = named_kafka(args)
    saved = {} if named else dict(conf.get("kafka") or {})
    kafka = kafka_from(
        args.bootstrap or saved.get("bootstrap"), args.namespace or saved.get("namespace")
    )
    if named:  # not some run's saved ledger in place of the Kafka asked for
        exit_unless_named_answers(kafka)
    if named or answers(kafka.bootstrap, timeout_s=3.0):  # named: it answered, as the run asks
        from rollstream.services.runtime.admin import describe

        led = compute(kafka, (conf.get("model") or {}).get("policy"))
        print(f"live ledger ({kafka.bootstrap}; one cut of the topics, taken now)")
        print(render(led))
        if led.pending:
            print(f"live: pending {led.pending} (in a topic or a buffer while the run goes on)")
        for info in describe(kafka):
            if info.group_lags:
                lags = ", ".join(f"{g}={lag}" for g, lag in sorted(info.group_lags.items()))
                print(f"  {info.name}: {info.messages} messages; lag {lags}")
        return 0 if led.balanced else 1
    if run is None or not (run / "ledger.json").exists():
        print(
            f"no Kafka answers at {kafka.bootstrap} and no saved ledger "
            f"{'in ' + str(run) if run else '(no runs/ folder)'}"
        )
        return 2
    data = json.loads((run / "ledger.json").read_text())
    print(f"saved ledger of {run} (written when the run stopped)")
    print(data["text"])
    return 0 if data["ledger"]["balanced"] else 1


def _sync_status(run: Path) -> int:
    """A `--mode sync` run has no topics: its counts are in sync_summary.json."""
    if not (run / "sync_summary.json").exists():
        print(
            f"sync run {run} (one process, no Kafka): no sync_summary.json yet (written every "
            "up.sync_save_every_s and at the end); its evaluations so far are in eval.jsonl"
        )
        return 2
    sync = json.loads((run / "sync_summary.json").read_text())
    state = "finished" if sync.get("finished", True) else "written while it ran"
    print(f"sync run {run} (one process, no Kafka; sync_summary.json {state})")
    counts = {k: sync.get(k) for k in ("generated", "trained", "dropped", "pending")}
    tail = f"step {sync['steps']}, version {sync['version']}"
    if counts["pending"] is None:  # a summary from before pending was counted
        print(f"counts {counts}; {tail}")
        return 0
    balanced = counts["generated"] == counts["trained"] + counts["dropped"] + counts["pending"]
    print(
        f"ledger {'BALANCED' if balanced else 'UNBALANCED'}: generated {counts['generated']} = "
        f"trained {counts['trained']} + dropped {counts['dropped']} + pending "
        f"{counts['pending']} (in replay's buffer); {tail}"
        + (f"; {sync['reuses']} groups trained again" if sync.get("reuses") else "")
    )
    return 0 if balanced else 1
