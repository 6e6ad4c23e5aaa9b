"""How many rollouts/s do the scorer and filter turn into groups, and how long does it take?

On the embedded broker (or `--bootstrap`), with synthetic Rollouts of the built-in `add` task
whose completions are right or wrong at random (groups of 8 keyed by group_id) and the built-in
`task` reward, scorer and filter run as separate worker processes (`rollstream run scorer|filter`):

- throughput, for each partition count of the stream topics and each number of workers per
  app: K rollouts are pre-published to `rollouts.raw`, the workers started, and the rate is
  taken from the first to the last group on `groups.kept`/`groups.dropped` (every group
  accounted for); per worker = total / workers of each app. The run also records the CPU each
  process used in that window, what each worker consumed, the longest pause between outputs
  (a rebalance shows up there) and repeated groups.
- latency: 1 worker of each app; rollouts published at a steady rate; for each Rollout, the
  time from its publish (`produced_at`) to its group's arrival on `groups.kept` (p50/p99).
- where the time goes: the pure cores alone in this process (Scorer, FilterStage, no broker),
  a trivial faust forwarder (`rollouts.raw` -> `rollouts.scored`, with and without a table
  write per message) and each app alone, 1 worker.

    python benchmarks/stream.py [--rollouts 20000] [--partitions 1 2 4] [--workers 1 2] [--quick]

Prints tables and writes benchmarks/results/stream.json. Reads and writes only topics of fresh
namespaces (`bench<hex>.`) on the broker it uses. Without `--bootstrap`, each run gets a fresh
embedded broker: it keeps every earlier run's messages in memory, and on one broker its CPU per
message grew run after run (0.12 to 0.23 ms per rollout over four equal runs, topics deleted or
not), which made the later configurations look slower.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from stream_workers import SOURCE, Workers, broker_for, cpu_all, fresh, publish, reader

from rollstream.schemas import (
    Group,
    Rollout,
    Sampling,
    ScoredRollout,
    decode,
    encode,
    pack_floats,
    pack_ids,
)
from rollstream.schemas.topics import qualified
from rollstream.services.runtime.settings import KafkaSettings

RESULTS = Path(__file__).parent / "results" / "stream.json"
N = 8
GROUP_TOPICS = ("groups.kept", "groups.dropped")


# ---- synthetic data ----------------------------------------------------------------------


def make_rollouts(k: int, seed: int, prefix: str = "g") -> list[Rollout]:
    """k // N groups of N `add` samples, each right or wrong with probability 1/2."""
    from rollstream.services.tasks.builtin import make_add

    rng = random.Random(seed)
    out = []
    for g in range(k // N):
        prompt, answer = make_add(rng, 3)
        gid = f"{prefix}{g}"
        for i in range(N):
            completion = answer if rng.random() < 0.5 else str(int(answer) + 1)
            out.append(
                Rollout(
                    rollout_id=f"{gid}/{i}",
                    group_id=gid,
                    task_id=f"t{g % 500}",
                    task="add",
                    sample_index=i,
                    group_size=N,
                    prompt=prompt,
                    completion=completion,
                    prompt_ids=pack_ids(list(range(len(prompt)))),
                    completion_ids=pack_ids(list(range(len(completion) + 1))),
                    logprobs=pack_floats([-0.1] * (len(completion) + 1)),
                    finish_reason="stop",
                    policy_version=1,
                    sampling=Sampling(n=N, temperature=1.0, max_tokens=16),
                    answer=answer,
                    produced_at=time.time(),
                )
            )
    return out


def scored(r: Rollout) -> ScoredRollout:
    reward = 1.0 if r.completion == r.answer else 0.0
    return ScoredRollout(
        rollout=r, reward=reward, rewards={"task": reward}, correct=reward > 0.5,
        produced_at=time.time(),
    )  # fmt: skip


# ---- pure cores, no broker ---------------------------------------------------------------


def bench_cores(k: int) -> dict[str, float]:
    """Rollouts/s of the scorer's and the filter's per-message work in this process."""
    from rollstream.services.filter.app import FilterStage
    from rollstream.services.filter.config import FilterConfig
    from rollstream.services.filter.core import FilterCore
    from rollstream.services.filter.metrics import register as filter_metrics
    from rollstream.services.filter.tables import PendingTable, TableView
    from rollstream.services.runtime.metrics import StageMetrics
    from rollstream.services.scorer.app import Scorer
    from rollstream.services.scorer.combine import Combiner
    from rollstream.services.scorer.config import ScorerConfig
    from rollstream.services.scorer.metrics import register as scorer_metrics

    rollouts = make_rollouts(k, seed=1)
    raw = [encode(r) for r in rollouts]
    t0 = time.perf_counter()
    for b in raw:
        encode(scored(decode(b, Rollout)))
    codec = k / (time.perf_counter() - t0)

    scorer = Scorer(Combiner.from_config(ScorerConfig()), scorer_metrics(StageMetrics("scorer")))

    async def score_all() -> tuple[float, list[bytes]]:
        out = []
        t0 = time.perf_counter()
        for b in raw:
            msg, error = await scorer.score(b)
            assert msg is not None, error
            out.append(encode(msg))
        dt = time.perf_counter() - t0
        await scorer.combiner.close()
        return dt, out

    dt, outs = asyncio.run(score_all())
    result = {"codec_only": codec, "scorer": k / dt}

    def run_filter(pending: Any, done: Any) -> float:
        core = FilterCore(FilterConfig(), pending=pending, done=done, track_pass_rates=False)
        stage = FilterStage(core, filter_metrics(StageMetrics("filter")))
        t0 = time.perf_counter()
        for b in outs:
            outcome, error = stage.add(b, time.time())
            if outcome is not None:
                if outcome.group is not None:
                    encode(outcome.group)
                for drop in outcome.drops:
                    encode(drop)
                stage.count(outcome)
        return k / (time.perf_counter() - t0)

    result["filter"] = run_filter(None, None)
    result["filter_table_views"] = run_filter(  # msgpack of each sample into the pending table
        PendingTable({}, lambda: 0), TableView({}, float, lambda: 0)
    )
    result["scorer_plus_filter"] = 1 / (1 / result["scorer"] + 1 / result["filter_table_views"])
    return result


# ---- the trivial forwarder --------------------------------------------------------------


def forward_worker(kind: str, bootstrap: str, namespace: str, partitions: int) -> int:
    """A faust app that copies rollouts.raw to rollouts.scored (with `table`: and writes each
    message to a changelogged table first): faust's own cost per message."""
    import logging

    from rollstream.services.runtime.faust.app import make_app, run_worker

    logging.basicConfig(level=logging.WARNING)  # as the stages do: no debug records built
    for noisy in ("aiokafka", "faust", "mode"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    kafka = KafkaSettings(bootstrap=bootstrap, namespace=namespace, session_timeout_ms=6000)
    app = make_app("bench-forward", kafka)
    source = app.topic(qualified("rollouts.raw", namespace))
    sink = app.topic(qualified("rollouts.scored", namespace))
    table = None
    if kind == "forward_table":
        table = app.Table("last", partitions=partitions, key_type=bytes, value_type=bytes)

    @app.agent(source, name="forward", concurrency=1)
    async def forward(stream: Any) -> None:
        async for event in stream.events():
            m = event.message
            if table is not None:
                table[m.key] = m.value
            await sink.send(key=m.key, value=m.value)

    return run_worker(app, "WARNING")


# ---- runs on the broker ------------------------------------------------------------------


def run_stream(
    bootstrap: str, kind: str, partitions: int, workers: int, k: int, logdir: Path, others: dict
) -> dict[str, Any]:
    """One throughput run (see module docstring). `kind`: pipeline, scorer, filter, forward,
    forward_table. `others`: name -> pid of processes whose CPU counts too (broker)."""
    kafka = fresh(bootstrap, partitions)
    rollouts = make_rollouts(k, seed=partitions * 10 + workers)
    if kind == "filter":
        values = [(r.group_id, encode(scored(r))) for r in rollouts]
        publish(kafka, values, "rollouts.scored")
    else:
        publish(kafka, [(r.group_id, encode(r)) for r in rollouts], "rollouts.raw")
    roles = {"pipeline": ["scorer", "filter"]}.get(kind, [kind])
    outputs = GROUP_TOPICS if kind in ("pipeline", "filter") else ("rollouts.scored",)
    tally = Tally(groups=outputs == GROUP_TOPICS)
    want = k // N if tally.groups else k  # groups, or messages
    # in a pipeline the scorer may be done before the filter's first group: its CPU counts
    # between its own first and last output on rollouts.scored
    scorer_out = qualified("rollouts.scored", kafka.namespace) if kind == "pipeline" else None
    consumer = reader(kafka, outputs + (("rollouts.scored",) if scorer_out else ()))
    procs = Workers(kafka, logdir)
    tally.start = time.time()
    for role in roles:
        for _ in range(workers):
            extra = ["--partitions", str(partitions)] if role.startswith("forward") else []
            procs.start(role, extra)
    deadline = tally.start + 120 + k / 100
    try:
        error = tally.watch(consumer, procs, others, want, scorer_out, deadline)
        consumed = procs.consumed()
    finally:
        consumer.close()
        procs.stop()
    row = {"kind": kind, "partitions": partitions, "workers": workers, "rollouts": k}
    return {
        **row,
        **tally.summary(want, workers, error, scorer_out is not None),
        "consumed": consumed,
    }


@dataclass
class Tally:
    """What one throughput run saw on its output topics: distinct groups (by key, `groups`) or
    messages, the first and last output's time, the longest pause between outputs, and the CPU
    of every process at the first and the last output."""

    groups: bool
    start: float = 0.0  # when the workers were started
    seen: dict[bytes, int] = field(default_factory=dict)  # key -> times seen
    count: int = 0
    first: float = 0.0
    last: float = 0.0
    gap: float = 0.0
    cpu0: dict[str, float] = field(default_factory=dict)
    cpu1: dict[str, float] = field(default_factory=dict)
    scored_n: int = 0  # a pipeline's scorer outputs, scorer CPU at its first and last
    scored_cpu0: float = 0.0
    scored_cpu1: float = 0.0

    def done(self) -> int:
        return len(self.seen) if self.groups else self.count

    def watch(
        self, consumer: Any, procs: Workers, others: dict[str, int], want: int,
        scorer_out: str | None, deadline: float,
    ) -> str | None:  # fmt: skip
        """Read outputs until `want` are accounted for; why it stopped before, if it did."""
        while self.done() < want:
            now = time.time()
            if now > deadline or (self.last and now - self.last > 60):
                return "no output for 60 s" if now <= deadline else "deadline passed"
            error = procs.check()
            if error:
                return error
            msgs = [m for m in consumer.consume(1000, 0.05) if m.error() is None]
            if scorer_out:
                n_scored = sum(1 for m in msgs if m.topic() == scorer_out)
                if n_scored:
                    scorer_cpu = sum(v for n, v in procs.cpu().items() if n.startswith("scorer"))
                    self.scored_cpu0 = self.scored_cpu0 if self.scored_n else scorer_cpu
                    self.scored_n, self.scored_cpu1 = self.scored_n + n_scored, scorer_cpu
                    msgs = [m for m in msgs if m.topic() != scorer_out]
            if not msgs:
                continue
            now = time.time()
            if not self.first:
                self.first, self.cpu0 = now, cpu_all(procs, others)
            self.gap = max(self.gap, now - (self.last or now))
            self.last, self.cpu1 = now, cpu_all(procs, others)  # CPU up to the last output
            self.count += len(msgs)
            for m in msgs:
                self.seen[m.key()] = self.seen.get(m.key(), 0) + 1
        return None

    def summary(self, want: int, workers: int, error: str | None, pipeline: bool) -> dict:
        """The run's figures: rate, pauses, CPU per process, per rollout and per core."""
        done = self.done()
        window = max(self.last - self.first, 1e-9)
        per_msg = N if self.groups else 1
        rate = (done - 1) * per_msg / window if done > 1 else 0.0
        cpu = {n: round(self.cpu1.get(n, 0.0) - self.cpu0.get(n, 0.0), 2) for n in self.cpu1}
        machine = cpu.pop("machine", 0.0)
        ours = sum(cpu.values())
        ms = cpu_per_rollout(cpu, (done - 1) * per_msg)
        if pipeline and self.scored_n > 1:
            ms["scorer"] = round(
                (self.scored_cpu1 - self.scored_cpu0) * 1000 / (self.scored_n - 1), 3
            )
        return {
            "complete": done >= want,
            "error": error,
            "outputs": done,
            "repeated": sum(v - 1 for v in self.seen.values()) if self.groups else None,
            "rollouts_per_s": round(rate),
            "per_worker": round(rate / workers),
            "startup_s": round(self.first - self.start, 2) if self.first else None,
            "window_s": round(window, 2),
            "max_gap_s": round(self.gap, 2),
            "cpu_s": cpu,  # CPU seconds of each process between first and last output
            # per role; a pipeline's scorer between its own first and last output
            "cpu_ms_per_rollout": ms,
            # per-worker capacity: rollouts per CPU-second of that role = what one worker does
            # on one dedicated core (load-independent, unlike rollouts_per_s)
            "capacity_per_core": {role: round(1000 / v) for role, v in ms.items() if v > 0},
            "cpu_cores_busy": round(ours / window, 2),  # this run's processes
            "other_cores_busy": round(max(0.0, machine - ours) / window, 2),  # everything else
        }


def cpu_per_rollout(cpu: dict[str, float], rollouts: int) -> dict[str, float]:
    """CPU milliseconds per rollout of each role (worker processes of one app summed): what
    one rollout costs whatever the machine's load; 1000 / ms = rollouts/s one core sustains."""
    by_role: dict[str, float] = {}
    for name, seconds in cpu.items():
        role = name.rstrip("0123456789")
        by_role[role] = by_role.get(role, 0.0) + seconds
    return {role: round(s * 1000 / max(rollouts, 1), 3) for role, s in by_role.items()}


def run_latency(
    bootstrap: str, partitions: int, rate: float, seconds: float, logdir: Path
) -> dict[str, Any]:
    """1 scorer + 1 filter; rollouts at `rate`/s; publish -> group on groups.kept."""
    from rollstream.services.runtime.bus import Producer

    kafka = fresh(bootstrap, partitions)
    procs = Workers(kafka, logdir)
    procs.start("scorer")
    procs.start("filter")
    consumer = reader(kafka, GROUP_TOPICS)
    seen: set[str] = set()
    rollout_lat: list[float] = []
    group_lat: list[float] = []  # from the group's last sample's publish
    stop = threading.Event()

    def collect() -> None:
        while not stop.is_set():
            for m in consumer.consume(500, 0.02):
                if m.error() is not None:
                    continue
                now = time.time()
                seen.add(m.key().decode())
                if m.topic().endswith("groups.kept") and not m.key().startswith(b"warm"):
                    g = decode(m.value(), Group)
                    times = [s.rollout.produced_at for s in g.samples]
                    rollout_lat.extend(now - t for t in times)
                    group_lat.append(now - max(times))

    thread = threading.Thread(target=collect, daemon=True)
    thread.start()
    p = Producer(kafka, "bench")
    try:
        warm_up(p, procs, seen, logdir)
        todo = make_rollouts(int(rate * seconds), seed=8)
        sent = publish_paced(p, todo, rate)
        end = time.time() + 60
        while len(seen) < 4 + len(todo) // N and time.time() < end:
            time.sleep(0.1)
    finally:
        stop.set()
        thread.join()
        consumer.close()
        procs.stop()
    return {
        "partitions": partitions,
        "rate_per_s": rate,
        "published": len(todo),
        "publish_s": round(sent, 2),
        "groups_accounted": len(seen) - 4,
        "groups_expected": len(todo) // N,
        "kept_groups": len(group_lat),
        "rollout_p50_ms": percentile_ms(rollout_lat, 50),
        "rollout_p99_ms": percentile_ms(rollout_lat, 99),
        "rollout_max_ms": percentile_ms(rollout_lat, 100),
        "group_p50_ms": percentile_ms(group_lat, 50),  # from the group's last sample
        "group_p99_ms": percentile_ms(group_lat, 99),
    }


def warm_up(p: Any, procs: Workers, seen: set[str], logdir: Path) -> None:
    """4 groups through scorer and filter (up to 180 s), then 2 s more: the workers have
    joined and warmed up before the measured rollouts go out."""
    for r in make_rollouts(4 * N, seed=7, prefix="warm"):
        p.send_raw("rollouts.raw", encode(r), r.group_id)
    p.flush()
    deadline = time.time() + 180
    while len(seen) < 4 and time.time() < deadline:
        if procs.check():
            raise RuntimeError(procs.check())
        time.sleep(0.1)
    if len(seen) < 4:
        raise RuntimeError(f"warm-up groups did not come out; logs in {logdir}")
    time.sleep(2.0)


def publish_paced(p: Any, rollouts: list[Rollout], rate: float) -> float:
    """Send `rollouts` at `rate`/s, each stamped as it goes; the seconds it took."""
    t0 = time.time()
    for i, r in enumerate(rollouts):
        delay = t0 + i / rate - time.time()
        if delay > 0:
            time.sleep(delay)
        r.produced_at = time.time()
        p.send_raw("rollouts.raw", encode(r), r.group_id)
    p.flush()
    return time.time() - t0


def percentile_ms(xs: list[float], q: float) -> float | None:
    return round(float(np.percentile(xs, q)) * 1000, 1) if xs else None


# ---- main --------------------------------------------------------------------------------


def report(results: dict[str, Any]) -> None:
    c = results.get("cores")
    if c:
        print(f"\npure cores in one process, no broker ({c['rollouts']} rollouts), rollouts/s:")
        for name, value in c["rates"].items():
            print(f"  {name:22} {value:>9,.0f}")
    head = (
        f"{'run':14} {'parts':>5} {'workers':>7} {'wall/s':>10} {'/worker':>8} "
        f"{'startup s':>9} {'max gap s':>9} {'cores':>5} {'others':>6}  CPU ms per rollout"
        "  [capacity = rollouts per CPU-second of one worker = /s on one dedicated core]"
    )
    for title, rows in (("single stage / baselines", results["baselines"]),
                        ("scorer + filter pipeline", results["pipeline"])):  # fmt: skip
        if not rows:
            continue
        print(
            f"\n{title} (target >= {results['target_per_worker']:,}/s per worker; wall/s is "
            f"end-to-end on this machine, shared with everything else on it)\n{head}"
        )
        for r in rows:
            flag = "" if r["complete"] else f"  INCOMPLETE {r['outputs']}: {r['error']}"
            cpu = " ".join(f"{n}={v:.3f}" for n, v in r["cpu_ms_per_rollout"].items())
            cap = r.get("capacity_per_core", {})
            cpu += "  [" + " ".join(f"{n}={cap[n]:,}/s" for n in cap if n in SOURCE) + "]"
            print(
                f"{r['kind']:14} {r['partitions']:>5} {r['workers']:>7} {r['rollouts_per_s']:>10,}"
                f" {r['per_worker']:>8,} {r['startup_s']!s:>9} {r['max_gap_s']:>9}"
                f" {r['cpu_cores_busy']:>5} {r['other_cores_busy']:>6}  {cpu}{flag}"
            )
    lat = results.get("latency")
    if lat and "error" in lat:
        print(f"\nlatency run failed: {lat['error']}")
    elif lat:
        print(
            f"\nlatency, {lat['rate_per_s']:.0f} rollouts/s for {lat['published']} rollouts, "
            f"{lat['partitions']} partitions, 1 worker each: publish -> group on groups.kept\n"
            f"  per rollout p50 {lat['rollout_p50_ms']} ms, p99 {lat['rollout_p99_ms']} ms, "
            f"max {lat['rollout_max_ms']} ms; from a group's last sample p50 "
            f"{lat['group_p50_ms']} ms, p99 {lat['group_p99_ms']} ms "
            f"({lat['groups_accounted']}/{lat['groups_expected']} groups accounted)"
        )


def save(path: Path, results: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rollouts", type=int, default=20000, help="rollouts per throughput run")
    ap.add_argument("--partitions", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--latency-rate", type=float, default=500.0)
    ap.add_argument("--latency-seconds", type=float, default=20.0)
    ap.add_argument("--skip", nargs="*", default=[], choices=["cores", "baselines", "latency"])
    ap.add_argument("--quick", action="store_true", help="a small smoke run (~1-2 minutes)")
    ap.add_argument("--bootstrap", default=None, help="use this Kafka, not the embedded broker")
    ap.add_argument("--out", type=Path, default=RESULTS)
    forward = ["forward", "forward_table"]
    ap.add_argument("--forward-worker", choices=forward, help=argparse.SUPPRESS)
    ap.add_argument("--namespace", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.forward_worker:
        parts = int(args.partitions[0])
        sys.exit(forward_worker(args.forward_worker, args.bootstrap, args.namespace, parts))
    if args.quick:
        args.rollouts = min(args.rollouts, 4000)
        args.partitions, args.workers = args.partitions[:1], args.workers[:1]
        args.latency_rate, args.latency_seconds = 200.0, 5.0
    args.rollouts -= args.rollouts % N
    results: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },  # fmt: skip
        "target_per_worker": 5000,
        "group_size": N,
        "baselines": [],
        "pipeline": [],
    }
    if "cores" not in args.skip:
        k = min(args.rollouts, 20000)
        rates = {name: round(v) for name, v in bench_cores(k).items()}
        results["cores"] = {"rollouts": k, "rates": rates}
    logdir = Path(tempfile.mkdtemp(prefix="rollstream-bench-stream-"))
    t_all = time.time()
    results["loadavg_before"] = [round(x, 2) for x in os.getloadavg()]
    if "baselines" not in args.skip:
        for kind in ["forward", "forward_table", "scorer", "filter"]:
            parts = args.partitions[0]
            with broker_for(args.bootstrap, logdir, kind) as (bootstrap, others):
                row = run_stream(bootstrap, kind, parts, 1, args.rollouts, logdir, others)
            results["baselines"].append(row)
            save(args.out, results)
            print(f"  {kind}: {row['rollouts_per_s']:,}/s", flush=True)
    for parts in args.partitions:
        for workers in args.workers:
            with broker_for(args.bootstrap, logdir, f"p{parts}w{workers}") as (bootstrap, others):
                row = run_stream(
                    bootstrap, "pipeline", parts, workers, args.rollouts, logdir, others
                )
            results["pipeline"].append(row)
            save(args.out, results)
            print(f"  pipeline p={parts} w={workers}: {row['rollouts_per_s']:,}/s", flush=True)
    if "latency" not in args.skip:
        with broker_for(args.bootstrap, logdir, "latency") as (bootstrap, _):
            try:
                results["latency"] = run_latency(
                    bootstrap, max(args.partitions), args.latency_rate, args.latency_seconds, logdir
                )
            except RuntimeError as exc:
                results["latency"] = {"error": str(exc)}
    results["wall_s"] = round(time.time() - t_all, 1)
    results["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    results["logs"] = str(logdir)
    report(results)
    save(args.out, results)
    print(f"\nwrote {args.out} (worker logs in {logdir})")


if __name__ == "__main__":
    main()
