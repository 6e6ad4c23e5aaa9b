"""A paced generator (`generator.ahead_batches`) on the real broker follows the knobs that set
how many kept groups the learner takes a version, as the stage that owns them runs them:
`rollstream control replay batch_groups=...` mid-run moves its target once replay has applied
it, so the learner is not left waiting on a generator paced for the old size, and a revision
replay refuses never moves it."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from contextlib import closing
from pathlib import Path

import pytest
from generator_harness import (  # the fixtures kafka, models and tap too
    GeneratorProcess,
    RolloutTap,
    model_versions,  # noqa: F401
    module_kafka,  # noqa: F401
    rollout_tap,  # noqa: F401
    send_prompts,
)
from polling import read_for, wait_until

from rollstream.schemas import ControlUpdate
from rollstream.services.replay.config import ReplayConfig
from rollstream.services.replay.service import Replay
from rollstream.services.runtime.bus import Consumer, Producer
from rollstream.services.runtime.settings import KafkaSettings
from rollstream.services.runtime.stage import follow_control
from rollstream.services.tools.commands import latest_control

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def settled(tap: RolloutTap, ids: set[str], gen: GeneratorProcess) -> int | None:
    """The rollout count, once it stays put for 2 s while the generator is paused by pacing."""
    before = gen.metric("paused_seconds_total", reason="pacing")
    count = len(tap.of(ids))
    time.sleep(2.0)
    grew = gen.metric("paused_seconds_total", reason="pacing") > before
    return count if grew and count > 0 and len(tap.of(ids)) == count else None


def test_a_live_change_of_replays_batch_size_moves_the_generators_pacing(
    kafka: KafkaSettings, models: dict[str, Path], tap: RolloutTap, tmp_path: Path
) -> None:
    # replay runs (nothing reaches it here): the generator paces by what it answers it applied
    replay = Replay(ReplayConfig(batch_groups=2), kafka)
    follower = follow_control(kafka, "replay")
    stop = threading.Event()
    worker = threading.Thread(target=replay.run, args=(stop.is_set, follower), daemon=True)
    worker.start()
    # one learner batch ahead of 2 kept groups; nothing scores or filters here, so every group
    # sampled is in flight at the assumed keep rate (0.5): it pauses after 4 groups
    gen = GeneratorProcess(
        kafka,
        models["v0"],
        "transformers",
        tmp_path / "generator.log",
        "generator.threads=1",
        "generator.batch_prompts=1",
        "generator.ahead_batches=1",
        "generator.version_wait_s=600",  # no pause runs out during the test
        "replay.batch_groups=2",
    )
    try:
        gen.wait_ready(180)
        ids = send_prompts(kafka, [f"{i}+{i}=" for i in range(40)], n=2, tag="pace")
        held = wait_until(lambda: settled(tap, ids, gen), 90, "pacing to pause", every=0)
        assert held == 4 * 2, held  # 4 groups of 2

        # a revision not from `rollstream control` (which checks knobs first) that replay
        # refuses whole for its beta: replay keeps batches of 2, and so does the pacing
        with closing(Producer(kafka, "not-the-cli")) as producer:
            bad = {"batch_groups": 4, "beta": 5.0}
            producer.send("control", ControlUpdate(stage="replay", params=bad, revision=1,
                          issued_by="script", produced_at=time.time()), key="replay")  # fmt: skip
            producer.flush()
        refused = replay.m.control.labels("refused")
        wait_until(lambda: refused._value.get() == 1, 30, "replay to refuse revision 1")
        assert settled(tap, ids, gen) == held and gen.proc.poll() is None
        assert replay.buffer.cfg.batch_groups == 2

        env = {**os.environ, "ROLLSTREAM_BOOTSTRAP": kafka.bootstrap,
               "ROLLSTREAM_NAMESPACE": str(kafka.namespace)}  # fmt: skip
        subprocess.run(
            [sys.executable, "-m", "rollstream.services.cli", "control", "replay",
             "batch_groups=4", "--unset", "beta"],
            env=env, check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        # replay applies it and takes 4 a version: one batch ahead is 8 groups, no new version
        wait_until(lambda: len(tap.of(ids)) > held, 60, "sampling to resume on the new size")
        again = wait_until(lambda: settled(tap, ids, gen), 90, "pacing to pause again", every=0)
        assert again == 8 * 2, again
        assert replay.buffer.cfg.batch_groups == 4
        assert "pacing: 4 kept groups a version from v0 (was 2)" in gen.log()
    finally:
        rc = gen.stop()
        stop.set()
        worker.join(10)
        follower.stop()
        replay.close()
    assert rc == 0, gen.log()[-3000:]

    # on `control`: replay's answers (the run's config, then revision 2; none for the refused
    # one), apart from the requests, which the command still merges its next revision from
    with closing(Consumer(kafka, "test", ["control"], group=None)) as consumer:
        records = read_for(consumer, 3.0)
    answers = [(r.key, r.value.revision, r.value.params["batch_groups"]) for r in records
               if r.value.applied]  # fmt: skip
    assert answers == [(b"replay.applied", 0, 2), (b"replay.applied", 2, 4)]
    assert latest_control(kafka, "replay", timeout_s=5.0) == ({"batch_groups": 4}, 2)
