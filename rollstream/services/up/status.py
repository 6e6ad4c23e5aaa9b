"""`rollstream status [RUN]`: the ledger, consumer lags and versions — live from the topics
while a run's Kafka answers, else from the ledger the run saved when it stopped."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rollstream.services.runtime.settings import kafka_from


def latest_run(root: Path = Path("runs")) -> Path | None:
    runs = [p for p in root.glob("*") if (p / "config.yaml").exists()] if root.exists() else []
    return max(runs, key=lambda p: p.stat().st_mtime) if runs else None


def main(args: argparse.Namespace) -> int:
    from rollstream.services.up.ledger import compute, render

    run = Path(args.run) if args.run else latest_run()
    kafka = kafka_from(args.bootstrap, args.namespace)
    if run is not None and not args.bootstrap and (run / "config.yaml").exists():
        import yaml

        saved = yaml.safe_load((run / "config.yaml").read_text()).get("kafka", {})
        kafka = kafka_from(
            args.bootstrap or saved.get("bootstrap"), args.namespace or saved.get("namespace")
        )
    try:
        from rollstream.services.runtime.broker import wait_for_kafka

        wait_for_kafka(kafka.bootstrap, timeout_s=3.0)
        live = True
    except Exception:
        live = False
    if live:
        from rollstream.services.runtime.admin import describe

        led = compute(kafka)
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
