"""How late does a consumer whose fetch is waiting see a new record, by `fetch.wait.max.ms`?
Kafka answers a waiting fetch as soon as a record arrives; the embedded broker (Tansu) looks
for new records during the wait now and then, so there the wait sets the latency of every
idle hop: the generator's weights follower is one that pacing waits on
(`generator.weights_wait_ms`, benchmarks/RESULTS.md, eleventh session).

One confluent-kafka consumer per wait (its own group, one partition) on one embedded broker; a
producer sends `--records` records at random intervals (0.3-0.9 s, so each finds the consumer
idle and its fetch waiting), each carrying its send time; the latency is receipt minus send.

    python benchmarks/fetch_wait.py [--waits 10 50 100 250 500 1000] [--records 20]
    python benchmarks/fetch_wait.py --bootstrap HOST:PORT     # another broker (a real Kafka)

Prints a table (median and largest latency per wait) and writes
benchmarks/results/fetch_wait.json.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import struct
import threading
import time
import uuid
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from rollstream.services.runtime.broker import EmbeddedBroker


def one_wait(bootstrap: str, wait_ms: int, records: int, seed: int) -> list[float]:
    """Delivery latencies (s) of `records` records sent at random moments to a consumer whose
    fetches wait `wait_ms`."""
    from confluent_kafka import Consumer, Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    topic = f"fetch-wait-{wait_ms}-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(30)
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": topic,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "fetch.wait.max.ms": wait_ms,
            "session.timeout.ms": 6000,
        }
    )
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0})
    consumer.subscribe([topic])
    deadline = time.monotonic() + 30
    while not consumer.assignment() and time.monotonic() < deadline:
        consumer.poll(0.1)
    rng = random.Random(seed)

    def send() -> None:
        for _ in range(records):
            time.sleep(rng.uniform(0.3, 0.9))
            producer.produce(topic, struct.pack("!d", time.time()))
            producer.flush(10)

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    latencies: list[float] = []
    deadline = time.monotonic() + records * 0.9 + 30
    while len(latencies) < records and time.monotonic() < deadline:
        msg = consumer.poll(0.05)
        value = msg.value() if msg is not None and not msg.error() else None
        if value:
            latencies.append(time.time() - struct.unpack("!d", value)[0])
    consumer.close()
    sender.join(5)
    if len(latencies) < records:
        raise RuntimeError(f"wait {wait_ms} ms: {len(latencies)}/{records} records arrived")
    return latencies


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--waits", type=int, nargs="+", default=[10, 50, 100, 250, 500, 1000])
    ap.add_argument("--records", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--bootstrap", help="a running broker (default: start the embedded one)")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results/fetch_wait.json")
    args = ap.parse_args()
    broker = nullcontext(None) if args.bootstrap else EmbeddedBroker()
    rows: list[dict[str, Any]] = []
    with broker as b:
        bootstrap = args.bootstrap or b.bootstrap  # type: ignore[union-attr]
        for wait in args.waits:
            lat = one_wait(bootstrap, wait, args.records, args.seed)
            rows.append(
                {
                    "fetch_wait_ms": wait,
                    "records": len(lat),
                    "median_ms": round(statistics.median(lat) * 1000, 1),
                    "max_ms": round(max(lat) * 1000, 1),
                }
            )
            print(f"  wait {wait} ms: median {rows[-1]['median_ms']} ms, max {rows[-1]['max_ms']}")
    print("\n| fetch wait | median latency | largest |\n|---|---|---|")
    for r in rows:
        print(f"| {r['fetch_wait_ms']} ms | {r['median_ms']} ms | {r['max_ms']} ms |")
    broker_name = args.bootstrap or "embedded (Tansu)"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"broker": broker_name, "rows": rows}, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
