"""The scorer and filter apps on the real embedded broker: synthetic Rollouts with known
rewards go in; exactly the expected groups, drops (with reasons), advantages, prompt stats and
dead letters come out; two filter workers, one killed (or crashing itself between writing a
group's state and sending it) and restarted mid-stream, lose no group and emit none twice."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import msgspec
import pytest

from rollstream.schemas import Rollout, ScoredRollout, encode, synthetic
from rollstream.services.runtime.bus import Consumer, Producer
from rollstream.services.runtime.reader import Reader

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def rollout(
    gid: str, i: int, completion: str, *, task_id: str = "tA", n: int = 4, finish: str = "stop"
) -> Rollout:
    """Sample `i` of group `gid` answering "add 2+3=" (answer "5"), at policy version 2."""
    sample = synthetic.scored(
        gid,
        i,
        [1],
        [1, 2],
        group_size=n,
        logprobs=0.0,
        task_id=task_id,
        task="add",
        text=("add 2+3=", completion),
        finish_reason=finish,  # type: ignore[arg-type]
        policy_version=2,
    ).rollout
    return msgspec.structs.replace(sample, answer="5", produced_at=time.time())


def start(
    stage: str, kafka, tmp_path: Path, name: str, log: str | None = None, **env: str
) -> subprocess.Popen:
    """`rollstream run STAGE --instance NAME` on the test broker, output in LOG (or NAME).log.

    A killed worker is restarted with its own instance id, as a supervisor or a StatefulSet
    does. The workers join as dynamic members (static membership needs a session timeout of
    10 s or more, see KafkaSettings.static_membership): the dead worker's partitions move to
    the live one when its 6 s session expires, and back at the next rebalance."""
    environ = dict(
        os.environ,
        ROLLSTREAM_BOOTSTRAP=kafka.bootstrap,
        ROLLSTREAM_NAMESPACE=kafka.namespace,
        ROLLSTREAM_KAFKA__SESSION_TIMEOUT_MS="6000",
        **env,
    )
    cmd = [
        sys.executable,
        "-m",
        "rollstream.services.cli",
        "run",
        stage,
        "--metrics-port",
        "-1",
        "--instance",
        name,
    ]
    with open(tmp_path / f"{log or name}.log", "w") as out:  # the child keeps its own copy
        return subprocess.Popen(cmd, env=environ, stderr=out, stdout=out)


@pytest.fixture
def processes():
    started: list[subprocess.Popen] = []
    yield started
    for p in started:
        if p.poll() is None:
            p.terminate()
    for p in started:
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def collect(consumer: Consumer, done, timeout_s: float = 120.0) -> dict[str, list]:
    got: dict[str, list] = {t: [] for t in consumer.topics}
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not done(got):
        for r in consumer.poll(500, 0.5):
            got[r.topic].append(r.value)
    return got


def test_rollouts_in_groups_drops_stats_and_dead_letters_out(kafka, tmp_path, processes):
    processes.append(start("scorer", kafka, tmp_path, "scorer"))
    processes.append(
        start("filter", kafka, tmp_path, "filter", ROLLSTREAM_FILTER__GROUP_TIMEOUT_S="4")
    )
    p = Producer(kafka, "test")
    for i in range(4):  # g0: rewards 0 1 0 1 -> kept
        p.send("rollouts.raw", rollout("g0", i, "5" if i % 2 else "4"), key="g0")
    for i in range(4):  # g1: all correct -> dropped
        p.send("rollouts.raw", rollout("g1", i, "5"), key="g1")
    for i in range(4):  # g2: sample 0 truncated; rest 1 0 0 -> kept with 3
        done = "length" if i == 0 else "stop"
        p.send(
            "rollouts.raw",
            rollout("g2", i, "5" if i < 2 else "3", task_id="tB", finish=done),
            key="g2",
        )
    for i in range(2):  # g3: only 2 of 4 ever arrive -> timeout drop
        p.send("rollouts.raw", rollout("g3", i, "5", task_id="tC"), key="g3")
    p.send_raw("rollouts.raw", b"\x01not a rollout", key="bad1")
    p.send_raw("rollouts.scored", b"\x01not scored", key="bad2")
    p.flush()
    topics = [
        "groups.kept",
        "groups.dropped",
        "prompt.stats",
        "rollouts.raw.dlq",
        "rollouts.scored.dlq",
    ]
    consumer = Consumer(kafka, "test", topics, group=None)
    try:
        got = collect(
            consumer,
            lambda g: (
                len(g["groups.kept"]) >= 2
                and len(g["groups.dropped"]) >= 3
                and len(g["prompt.stats"]) >= 4
                and g["rollouts.raw.dlq"]
                and g["rollouts.scored.dlq"]
            ),
        )
    finally:
        consumer.close()
    kept = {g.group_id: g for g in got["groups.kept"]}
    assert set(kept) == {"g0", "g2"}
    assert kept["g0"].advantages == pytest.approx([-0.8660, 0.8660, -0.8660, 0.8660], abs=1e-3)
    assert [s.rollout.rollout_id for s in kept["g2"].samples] == ["g2/1", "g2/2", "g2/3"]
    assert kept["g2"].advantages == pytest.approx([2 / 3**0.5, -1 / 3**0.5, -1 / 3**0.5], abs=1e-4)
    drops = sorted(
        (d.group_id, d.filter, d.reason, d.scope, tuple(d.rollout_ids))
        for d in got["groups.dropped"]
    )
    assert drops == [
        (
            "g1",
            "zero_variance",
            "zero_variance_all_correct",
            "group",
            ("g1/0", "g1/1", "g1/2", "g1/3"),
        ),
        ("g2", "truncated", "truncated", "samples", ("g2/0",)),
        ("g3", "assembly", "incomplete_timeout", "group", ("g3/0", "g3/1")),
    ]
    by_task = {}
    for s in got["prompt.stats"]:
        by_task[s.task_id] = s
    first, last = by_task["tA"].recent  # g0 (0.5) and g1 (1.0) in either order
    assert sorted([first, last]) == [0.5, 1.0] and by_task["tA"].groups == 2
    assert by_task["tA"].pass_rate == pytest.approx(0.3 * last + 0.7 * first)  # EWMA, alpha 0.3
    assert by_task["tB"].pass_rate == 0.5 and by_task["tC"].pass_rate == 1.0
    assert [d.value for d in got["rollouts.raw.dlq"]] == [b"\x01not a rollout"]
    assert [d.value for d in got["rollouts.scored.dlq"]] == [b"\x01not scored"]


def scored(gid: str, i: int) -> ScoredRollout:
    reward = float(i % 2)
    return ScoredRollout(
        rollout=rollout(gid, i, "x", task_id="t" + gid),
        reward=reward,
        rewards={"task": reward},
        correct=reward > 0.5,
        produced_at=time.time(),
    )


def test_a_filter_worker_reads_what_it_fetched_while_seeking_back_after_a_rebalance(
    kafka, tmp_path, processes
):
    """At the end of a rebalance's table recovery faust seeks back to the committed offsets
    and then resumes its stream queues, which clears them; the fetcher, running since the
    recovery began, could fill them in between, and those records were never read again
    (faust-streaming issue #596; in CI a filter lost whole groups after a kill). Worker A's
    seek takes 3 s longer and its agent is busy 1.5 s on each partition's first event, so
    without a fix the records fetched in that window are lost when B joins."""
    n = 60
    slow = {"ROLLSTREAM_FAILPOINTS": "faust.slow_seek,filter.slow_reconcile"}
    processes.append(start("filter", kafka, tmp_path, "A", **slow))
    p = Producer(kafka, "test")
    consumer = Consumer(kafka, "test", ["groups.kept"], group=None)
    out: list = []

    def send(g: int) -> None:
        for i in range(4):
            p.send("rollouts.scored", scored(f"g{g}", i), key=f"g{g}")
        p.flush()

    try:
        send(0)
        out += collect(consumer, lambda got: bool(got["groups.kept"]), 90)["groups.kept"]
        assert out, "worker A never started"
        processes.append(start("filter", kafka, tmp_path, "B"))  # A rebalances
        for g in range(1, n):  # one group every 0.25 s, through A's rebalance
            send(g)
            out += [r.value for r in consumer.poll(500, 0.25)]
        left = n - len(out)
        out += collect(consumer, lambda got: len(got["groups.kept"]) >= left)["groups.kept"]
    finally:
        consumer.close()
    kept = Counter(v.group_id for v in out)
    assert sorted(kept, key=lambda gid: int(gid[1:])) == [f"g{g}" for g in range(n)]
    assert sorted(g for g, times in kept.items() if times > 1) == []  # names any twice


def every_group_and_then_some(consumer: Consumer, n: int, got: list) -> list:
    """Records polled until `got` and they name `n` groups (at most 120 s), then 5 s more:
    anything emitted twice shows up by then."""
    more: list = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len({r.value.group_id for r in got + more}) < n:
        more += consumer.poll(500, 0.5)
    end = time.monotonic() + 5
    while time.monotonic() < end:
        more += consumer.poll(500, 0.5)
    return more


@pytest.mark.parametrize("crash", ["sigkill", "failpoint"])
def test_two_filter_workers_one_killed_and_restarted_lose_and_repeat_nothing(
    kafka, tmp_path, processes, crash
):
    """sigkill: worker A is killed once groups come out. failpoint: A kills itself after
    writing a finished group's state and before sending its outputs (the crash that loses a
    group unless the restarted worker sends it)."""
    n = 200
    armed = {"ROLLSTREAM_FAILPOINTS": "filter.before_outputs=5"} if crash == "failpoint" else {}
    processes.append(start("filter", kafka, tmp_path, "A", **armed))
    processes.append(start("filter", kafka, tmp_path, "B"))
    p = Producer(kafka, "test")
    consumer = Consumer(kafka, "test", ["groups.kept", "groups.dropped"], group=None)
    got: list = []
    try:
        for g in range(n):  # first half of every group: all groups pending
            for i in (0, 1):
                p.send("rollouts.scored", scored(f"g{g}", i), key=f"g{g}")
        for g in range(n // 2):  # complete half of them
            for i in (2, 3):
                p.send("rollouts.scored", scored(f"g{g}", i), key=f"g{g}")
        p.flush()
        deadline = time.monotonic() + 90
        while not got and time.monotonic() < deadline:
            got += consumer.poll(500, 0.5)
        assert got, "no group came out before the kill"
        if crash == "sigkill":
            processes[0].send_signal(signal.SIGKILL)  # worker A dies mid-stream
        assert processes[0].wait(60) in (-signal.SIGKILL, 9)
        processes.append(start("filter", kafka, tmp_path, "A", log="A-restarted"))
        for g in range(n // 2, n):
            for i in (2, 3):
                p.send("rollouts.scored", scored(f"g{g}", i), key=f"g{g}")
        p.flush()
        got += every_group_and_then_some(consumer, n, got)
    finally:
        consumer.close()
    kept = Counter(r.value.group_id for r in got if r.topic == "groups.kept")
    assert [r.value for r in got if r.topic == "groups.dropped"] == []
    assert set(kept) == {f"g{g}" for g in range(n)}
    assert sorted(g for g, times in kept.items() if times > 1) == []
    assert all(len(r.value.samples) == 4 for r in got if r.topic == "groups.kept")
    if crash == "failpoint":  # the group whose outputs A never sent came out once
        log = (tmp_path / "A.log").read_text()
        assert "failpoint filter.before_outputs: exiting before g" in log
        lost = log.split("exiting before ")[1].split()[0]
        assert kept[lost] == 1


def committed_to_end(kafka, topic: str, group: str, timeout_s: float = 60.0) -> None:
    """Wait until consumer group `group` has committed every partition of `topic` to its end."""
    with Reader(kafka, "test", group=group) as reader:
        parts = [(topic, p) for p in reader.partitions(topic)]
        ends = reader.ends(parts)
        deadline = time.monotonic() + timeout_s
        while reader.committed(parts) != ends:
            assert time.monotonic() < deadline, f"{group} never committed {topic} to {ends}"
            time.sleep(0.5)


def test_a_filter_worker_killed_with_a_groups_outputs_sent_and_its_state_lost_emits_it_once(
    kafka, tmp_path, processes
):
    """The crash the kill test above hits only by chance: worker A has committed the first
    half of every group; it finishes a group and dies while that group's state writes (its
    last samples, its `done` entry) are still queued, after its outputs reached the broker.
    The restarted worker reads those samples again (they are past the commit) and must find
    the outputs instead of emitting the group a second time."""
    n = 40
    # from the first sample of the second halves on, A's table writes never leave
    lost = {"ROLLSTREAM_FAILPOINTS": f"filter.outputs_without_state={2 * n + 8 + 1}"}
    processes.append(start("filter", kafka, tmp_path, "A", **lost))
    p = Producer(kafka, "test")
    consumer = Consumer(kafka, "test", ["groups.kept", "groups.dropped"], group=None)
    got: list = []
    try:
        for g in range(n):
            for i in (0, 1):
                p.send("rollouts.scored", scored(f"g{g}", i), key=f"g{g}")
        for part in range(8):  # each partition ends with a group that stays open
            filler = scored(f"open{part}", 0)
            p.send_raw("rollouts.scored", encode(filler), f"open{part}", filler.headers(), part)
        p.flush()
        committed_to_end(kafka, "rollouts.scored", "rollstream-filter")
        for g in range(n):
            for i in (2, 3):
                p.send("rollouts.scored", scored(f"g{g}", i), key=f"g{g}")
        p.flush()
        assert processes[0].wait(90) in (-signal.SIGKILL, 9)
        log = (tmp_path / "A.log").read_text()
        assert "failpoint filter.outputs_without_state: exiting after g" in log
        processes.append(start("filter", kafka, tmp_path, "A", log="A-restarted"))
        got += every_group_and_then_some(consumer, n, got)
    finally:
        consumer.close()
    kept = Counter(r.value.group_id for r in got if r.topic == "groups.kept")
    assert set(kept) == {f"g{g}" for g in range(n)}
    assert sorted(g for g, times in kept.items() if times > 1) == []


def test_two_scorer_workers_one_killed_and_restarted_lose_nothing(kafka, tmp_path, processes):
    n = 3000  # rollouts per phase; the kill lands while worker A is still scoring
    processes.append(start("scorer", kafka, tmp_path, "A"))
    processes.append(start("scorer", kafka, tmp_path, "B"))
    p = Producer(kafka, "test")
    consumer = Consumer(kafka, "test", ["rollouts.scored"], group=None)
    got: list = []
    try:
        for i in range(n):
            p.send("rollouts.raw", rollout(f"g{i // 4}", i % 4, "5"), key=f"g{i // 4}")
        p.flush()
        deadline = time.monotonic() + 90
        while not got and time.monotonic() < deadline:
            got += consumer.poll(500, 0.5)
        assert got, "nothing was scored before the kill"
        processes[0].send_signal(signal.SIGKILL)  # worker A dies mid-stream
        processes[0].wait()
        processes.append(start("scorer", kafka, tmp_path, "A", log="A-restarted"))
        for i in range(n, 2 * n):
            p.send("rollouts.raw", rollout(f"g{i // 4}", i % 4, "4"), key=f"g{i // 4}")
        p.flush()
        deadline = time.monotonic() + 120
        while (
            time.monotonic() < deadline and len({r.value.rollout.rollout_id for r in got}) < 2 * n
        ):
            got += consumer.poll(1000, 0.5)
    finally:
        consumer.close()
    ids = {r.value.rollout.rollout_id for r in got}
    assert ids == {f"g{i // 4}/{i % 4}" for i in range(2 * n)}  # repeats allowed, no loss
    assert all(r.value.reward == (1.0 if r.value.rollout.completion == "5" else 0.0) for r in got)


@pytest.mark.parametrize("broker_gone", [False, True])
def test_a_worker_stops_on_sigterm_even_when_the_broker_is_gone(
    broker_gone: bool, tmp_path, processes
) -> None:
    """faust's stop waits for the broker (last commit, leaving the group); with the broker
    gone a worker ignored SIGTERM for minutes. Now it stops cleanly when it can, and exits 1
    with the reason once ROLLSTREAM_STOP_TIMEOUT_S has passed when it cannot."""
    from rollstream.services.runtime.admin import create_topics
    from rollstream.services.runtime.broker import EmbeddedBroker
    from rollstream.services.runtime.settings import KafkaSettings

    broker = EmbeddedBroker(log_path=tmp_path / "own-broker.log").start()
    try:
        kafka = KafkaSettings(bootstrap=broker.bootstrap, namespace="stop", session_timeout_ms=6000)
        create_topics(kafka)
        processes.append(start("scorer", kafka, tmp_path, "A", ROLLSTREAM_STOP_TIMEOUT_S="4"))
        p = Producer(kafka, "test")
        p.send("rollouts.raw", rollout("g0", 0, "5"), key="g0")
        p.flush()
        consumer = Consumer(kafka, "test", ["rollouts.scored"], group=None)
        try:  # the worker is consuming and has sent
            assert collect(consumer, lambda got: got["rollouts.scored"], 90)["rollouts.scored"]
        finally:
            consumer.close()
        p.close()
        if broker_gone:
            broker.stop()
        t0 = time.monotonic()
        processes[0].send_signal(signal.SIGTERM)
        rc = processes[0].wait(60)
        took = time.monotonic() - t0
    finally:
        broker.stop()
    log = (tmp_path / "A.log").read_text(errors="replace")
    if broker_gone:
        assert rc == 1 and "not stopped 4 s after SIGTERM" in log, log[-2000:]
        assert took < 30
    else:
        assert rc == 0 and "not stopped" not in log, log[-2000:]
