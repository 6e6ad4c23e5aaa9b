"""Can the feed keep a fast generator in prompts? The real feed stage (`rollstream run feed`,
its own process, the built-in tasks) against a stand-in generator in this process that does
what the generator's loop does with prompts: poll a batch of `--batch` prompts (`fill`, up to
`--fill-s`, 0.2 s as `generator.poll_timeout_s`), "generate" for `--gen-ms`, commit (the generator
commits after each batch's rollouts are acknowledged), again (`--paused`: not at all for that
share of every `--period` seconds, as pacing holds a generator back); and, as the filter does once a
group is finished, it writes one `prompt.stats` record a prompt, which the feed follows for its
curriculum (`--no-stats`: none). The stand-in's demand is
batch / gen-ms prompts a second; a GPU generator with the small model took ~140-230 prompts a
second late in a run and waited for prompts 23-37 % of its time there (benchmarks/RESULTS.md,
twenty-second session).

    python benchmarks/feed_supply.py                          # demands of 80-800 prompts/s
    python benchmarks/feed_supply.py --gen-ms 20 --seconds 20 --set feed.poll_s=0.1

For each demand: prompts consumed a second, the share of the stand-in's time spent waiting
for prompts, and the feed's CPU a second (its process, from /proc). Writes
benchmarks/results/feed_supply[-TAG].json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import threading
import time
import uuid
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from rollstream.schemas import PromptStats
from rollstream.services.runtime.admin import create_topics
from rollstream.services.runtime.broker import EmbeddedBroker
from rollstream.services.runtime.bus import Consumer, Producer
from rollstream.services.runtime.settings import KafkaSettings

RESULTS = Path(__file__).resolve().parent / "results"
TICK = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def stats_of(task_id: str, task: str) -> PromptStats:
    rate = random.random()
    return PromptStats(
        task_id=task_id,
        task=task,
        pass_rate=rate,
        last_pass_rate=rate,
        groups=1,
        recent=[rate],
        produced_at=time.time(),
    )


class Load:
    """Other traffic on the broker, as a run's stages make it: `per_s` records of 1 KB a
    second onto rollouts.raw, read back by a consumer group (the scorer's hop)."""

    def __init__(self, kafka: KafkaSettings, per_s: int) -> None:
        self.kafka, self.per_s = kafka, per_s
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=f, daemon=True) for f in (self._w, self._r)]
        for t in self.threads if per_s else []:
            t.start()

    def _w(self) -> None:
        out = Producer(self.kafka, "load")
        blob, t = b"x" * 1024, time.monotonic()
        while not self.stop.is_set():
            for _ in range(self.per_s // 20):
                out.send_raw("rollouts.raw", blob, None, [])
            t += 0.05
            time.sleep(max(0.0, t - time.monotonic()))
        out.close()

    def _r(self) -> None:
        c = Consumer(self.kafka, "load", ["rollouts.raw"], group="load", dead_letters=False)
        while not self.stop.is_set():
            c.poll(500, 0.1)
            c.commit()
        c.close()

    def close(self) -> None:
        self.stop.set()
        for t in self.threads if self.per_s else []:
            t.join(10)


def one(
    bootstrap: str,
    batch: int,
    gen_ms: float,
    seconds: float,
    sets: list[str],
    stats: bool,
    load: int,
    paused: float = 0.0,
    period: float = 2.0,
    fill_s: float = 0.2,
) -> dict:
    kafka = KafkaSettings(bootstrap=bootstrap, namespace="f" + uuid.uuid4().hex[:8])
    kafka = kafka.model_copy(update={"session_timeout_ms": 6000})
    create_topics(kafka)
    cmd = [sys.executable, "-m", "rollstream.services.cli", "run", "feed", "--bootstrap"]
    cmd += [bootstrap, "--namespace", str(kafka.namespace), "--metrics-port", "-1"]
    cmd += [a for s in sets for a in ("--set", s)]
    feed = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    gen = Consumer(kafka, "generator", ["prompts"], group="generator")
    filt = Producer(kafka, "filter")
    other = Load(kafka, load)
    try:
        while not gen.poll(batch, 0.5, fill=True):  # the group joined, the feed sending
            if feed.poll() is not None:
                raise SystemExit(f"the feed exited: {feed.stderr.read() if feed.stderr else ''}")
        gen.commit()
        time.sleep(2.0)  # the feed's rate estimate settles
        cpu0, t0 = cpu_s(feed.pid), time.monotonic()
        consumed, waited = 0, 0.0
        while time.monotonic() - t0 < seconds:
            phase = (time.monotonic() - t0) % period
            if phase < paused * period:  # held back, as pacing holds a generator
                time.sleep(paused * period - phase)
                continue
            w = time.monotonic()
            recs = gen.poll(batch, fill_s, fill=True)
            waited += time.monotonic() - w
            consumed += len(recs)
            time.sleep(gen_ms / 1000)
            gen.commit()
            for rec in recs if stats else []:
                task = rec.value
                filt.send("prompt.stats", stats_of(task.task_id, task.task), key=task.task_id)
        wall = time.monotonic() - t0
        feed_cpu = cpu_s(feed.pid) - cpu0
    finally:
        other.close()
        gen.close()
        filt.close()
        feed.terminate()
        feed.wait(30)
    demand = batch / (gen_ms / 1000)
    return {
        "batch": batch,
        "gen_ms": gen_ms,
        "demand_per_s": demand,
        "consumed_per_s": consumed / wall,
        "waiting": waited / wall,
        "feed_cpu": feed_cpu / wall,
        "feed_cpu_ms_per_prompt": 1000 * feed_cpu / max(1, consumed),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--gen-ms", type=float, nargs="+", default=[200, 100, 50, 20])
    ap.add_argument("--seconds", type=float, default=15.0)
    ap.add_argument("--set", action="append", default=[], help="feed settings, as up --set")
    ap.add_argument("--bootstrap", help="a running broker (default: start the embedded one)")
    ap.add_argument("--load", type=int, default=0, help="other records a second (1 KB)")
    ap.add_argument(
        "--paused", type=float, default=0.0, help="share of each --period the stand-in waits"
    )
    ap.add_argument("--period", type=float, default=2.0)
    ap.add_argument(
        "--fill-s", type=float, default=0.2, help="longest wait to fill a batch (poll_timeout_s)"
    )
    ap.add_argument("--no-stats", action="store_true", help="write no prompt.stats")
    ap.add_argument("--tag", default="")
    args = ap.parse_args()
    rows: list[dict[str, Any]] = []
    with nullcontext(None) if args.bootstrap else EmbeddedBroker() as b:
        bootstrap = args.bootstrap or b.bootstrap  # type: ignore[union-attr]
        print("demand/s  consumed/s  waiting  feed CPU (ms a prompt)")
        for gen_ms in args.gen_ms:
            stats = not args.no_stats
            r = one(
                bootstrap,
                args.batch,
                gen_ms,
                args.seconds,
                args.set,
                stats,
                args.load,
                args.paused,
                args.period,
                args.fill_s,
            )
            rows.append(r)
            print(
                f"{r['demand_per_s']:8.0f}  {r['consumed_per_s']:10.0f}  {r['waiting']:6.0%}"
                f"  {r['feed_cpu']:.2f} ({r['feed_cpu_ms_per_prompt']:.2f})"
            )
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"feed_supply{'-' + args.tag if args.tag else ''}.json"
    out.write_text(json.dumps({"argv": sys.argv[1:], "sets": args.set, "rows": rows}, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
