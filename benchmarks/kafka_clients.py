"""Which Kafka client should the bus use? Producer throughput of 8 KB messages (about one
1k-token rollout) on the embedded broker, for confluent-kafka, aiokafka and kafka-python
(with `crc32c` if installed). Each client sends the same keyed messages, acks=all, then flushes.

    python benchmarks/kafka_clients.py [--messages 20000] [--repeats 3]

Prints a table (median msgs/s over repeats) and writes benchmarks/results/kafka_clients.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
import uuid
from pathlib import Path

from rollstream.services.runtime.broker import EmbeddedBroker

SIZE = 8192


def confluent(bootstrap: str, topic: str, n: int) -> float:
    from confluent_kafka import Producer

    p = Producer(
        {
            "bootstrap.servers": bootstrap,
            "linger.ms": 5,
            "enable.idempotence": True,
            "queue.buffering.max.kbytes": 262144,
        }
    )
    value = b"x" * SIZE
    t0 = time.perf_counter()
    for i in range(n):
        while True:
            try:
                p.produce(topic, value, key=str(i % 64).encode())
                break
            except BufferError:
                p.poll(0.01)
        p.poll(0)
    p.flush()
    return n / (time.perf_counter() - t0)


def aiokafka_(bootstrap: str, topic: str, n: int) -> float:
    from aiokafka import AIOKafkaProducer

    async def go() -> float:
        p = AIOKafkaProducer(
            bootstrap_servers=bootstrap,
            linger_ms=5,
            acks="all",
            # Tansu answers aiokafka's InitProducerId with an error: no idempotence here.
            enable_idempotence=False,
            max_batch_size=1 << 20,
        )
        await p.start()
        value = b"x" * SIZE
        t0 = time.perf_counter()
        futs = [await p.send(topic, value, key=str(i % 64).encode()) for i in range(n)]
        await asyncio.gather(*futs)
        dt = time.perf_counter() - t0
        await p.stop()
        return n / dt

    return asyncio.run(go())


def kafka_python(bootstrap: str, topic: str, n: int) -> float:
    from kafka import KafkaProducer

    p = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, acks="all", batch_size=1 << 20)
    value = b"x" * SIZE
    t0 = time.perf_counter()
    for i in range(n):
        p.send(topic, value, key=str(i % 64).encode())
    p.flush()
    dt = time.perf_counter() - t0
    p.close()
    return n / dt


CLIENTS = {"confluent-kafka": confluent, "aiokafka": aiokafka_, "kafka-python": kafka_python}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=20000)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    results: dict[str, dict[str, object]] = {}
    with EmbeddedBroker() as broker:
        from confluent_kafka.admin import AdminClient, NewTopic

        admin = AdminClient({"bootstrap.servers": broker.bootstrap})
        for name, fn in CLIENTS.items():
            try:
                __import__(
                    {
                        "confluent-kafka": "confluent_kafka",
                        "aiokafka": "aiokafka",
                        "kafka-python": "kafka",
                    }[name]
                )
            except ImportError:
                results[name] = {"skipped": "not installed"}
                continue
            rates = []
            for _ in range(args.repeats):
                topic = f"bench-{uuid.uuid4().hex[:8]}"
                admin.create_topics([NewTopic(topic, 8, 1)])[topic].result()
                rates.append(fn(broker.bootstrap, topic, args.messages))
            results[name] = {
                "median_msgs_per_s": round(statistics.median(rates)),
                "runs": [round(r) for r in rates],
            }
            if name == "kafka-python":
                try:
                    import crc32c  # noqa: F401

                    results[name]["crc32c"] = True
                except ImportError:
                    results[name]["crc32c"] = False
    print(
        f"producer throughput, {SIZE} B messages, {args.messages} per run, median of {args.repeats}"
    )
    for name, r in results.items():
        print(f"  {name:16} {r.get('median_msgs_per_s', r.get('skipped'))!s:>10}  {r}")
    out = Path(__file__).parent / "results" / "kafka_clients.json"
    out.write_text(
        json.dumps({"message_bytes": SIZE, "messages": args.messages, "results": results}, indent=2)
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
