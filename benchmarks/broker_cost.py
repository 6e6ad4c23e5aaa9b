"""What does the embedded broker's CPU depend on: partitions, idle consumers, producer linger?

One embedded broker per case. Each case creates its topics (P partitions), starts K consumers
(one group each, `fetch.wait.max.ms` as in the run), then produces RATE messages/s of 700 bytes
(about a Rollout) to the first topic with keys spread over the partitions, for --seconds; the
broker's CPU over that time comes from /proc. The cases mirror the choices of a `rollstream up`
run: the registry's 8 partitions against fewer, idle followers, and the producers' linger.

Prints a table and writes benchmarks/results/broker_cost.json.
Run: .venv/bin/python benchmarks/broker_cost.py [--seconds 12]
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from rollstream.services.runtime.broker import EmbeddedBroker

RESULTS = Path(__file__).resolve().parent / "results"
TICK = os.sysconf("SC_CLK_TCK")

# (partitions, consumers, messages/s, fetch wait ms, producer linger ms)
CASES = [
    (8, 1, 0, 100, 5),
    (8, 8, 0, 100, 5),
    (1, 8, 0, 100, 5),
    (8, 1, 1500, 100, 5),
    (4, 1, 1500, 100, 5),
    (2, 1, 1500, 100, 5),
    (1, 1, 1500, 100, 5),
    (8, 1, 1500, 300, 5),
    (8, 1, 1500, 100, 20),
    (1, 1, 1500, 100, 20),
]


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def case(p: int, k: int, rate: int, wait_ms: int, linger_ms: int, seconds: float) -> dict:
    with EmbeddedBroker() as broker:
        bs = broker.bootstrap
        admin = AdminClient({"bootstrap.servers": bs, "log_level": 0})  # alive for its futures
        futs = admin.create_topics([NewTopic(f"t{i}", p, 1) for i in range(k)])
        for f in futs.values():
            f.result()
        stop, got = threading.Event(), [0]

        def consume(i: int) -> None:
            c = Consumer(
                {
                    "bootstrap.servers": bs,
                    "group.id": f"g{i}",
                    "session.timeout.ms": 6000,
                    "fetch.wait.max.ms": wait_ms,
                    "auto.offset.reset": "earliest",
                    "log_level": 0,
                }
            )
            c.subscribe([f"t{i}"])
            while not stop.is_set():
                got[0] += len(c.consume(500, 0.5))
            c.close()

        threads = [threading.Thread(target=consume, args=(i,)) for i in range(k)]
        for t in threads:
            t.start()
        time.sleep(5)  # joins done (Tansu completes a first join after ~3 s at 6 s timeout)
        prod = Producer({"bootstrap.servers": bs, "linger.ms": linger_ms, "log_level": 0})
        value, n = b"x" * 700, 0
        c0, t0 = cpu_s(broker.proc.pid), time.monotonic()
        while (now := time.monotonic() - t0) < seconds:
            while n < int(now * rate):
                prod.produce("t0", value, key=str(n % 64).encode())
                n += 1
            prod.poll(0)
            time.sleep(0.01)
        prod.flush()
        share = (cpu_s(broker.proc.pid) - c0) / (time.monotonic() - t0)
        stop.set()
        for t in threads:
            t.join()
    return {
        "partitions": p,
        "consumers": k,
        "msgs_per_s": rate,
        "fetch_wait_ms": wait_ms,
        "linger_ms": linger_ms,
        "broker_core_share": round(share, 4),
        "produced": n,
        "consumed": got[0],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=12.0)
    args = ap.parse_args()
    rows: list[dict[str, Any]] = []
    print("partitions consumers msgs/s fetch_wait linger | broker CPU (share of one core)")
    for p, k, rate, wait_ms, linger_ms in CASES:
        r = case(p, k, rate, wait_ms, linger_ms, args.seconds)
        rows.append(r)
        print(
            f"{p:10d} {k:9d} {rate:6d} {wait_ms:8d}ms {linger_ms:4d}ms | "
            f"{100 * r['broker_core_share']:5.1f} %",
            flush=True,
        )
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "broker_cost.json"
    out.write_text(
        json.dumps({"seconds": args.seconds, "cpus": os.cpu_count(), "cases": rows}, indent=2)
    )
    print("wrote", out)


if __name__ == "__main__":
    main()
