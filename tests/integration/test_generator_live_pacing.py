"""A paced generator (`generator.ahead_batches`) on the real broker follows the knobs that set
how many kept groups the learner takes a version: `rollstream control replay
batch_groups=...` mid-run moves its target, so the learner is not left waiting on a generator
paced for the old size."""

from __future__ import annotations

import os
import subprocess
import sys
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
from polling import wait_until

from rollstream.schemas import ControlUpdate
from rollstream.services.runtime.bus import Producer
from rollstream.services.runtime.settings import KafkaSettings

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
        # refuses: the generator keeps pacing by the old size instead of crashing on it
        with closing(Producer(kafka, "not-the-cli")) as producer:
            bad = {"batch_groups": "four"}
            producer.send("control", ControlUpdate(stage="replay", params=bad, revision=1,
                          issued_by="script", produced_at=time.time()), key="replay")  # fmt: skip
            producer.flush()
        wait_until(lambda: "replay control revision 1 ignored" in gen.log(), 30, "the warning")
        assert settled(tap, ids, gen) == held and gen.proc.poll() is None

        env = {**os.environ, "ROLLSTREAM_BOOTSTRAP": kafka.bootstrap,
               "ROLLSTREAM_NAMESPACE": str(kafka.namespace)}  # fmt: skip
        subprocess.run(
            [sys.executable, "-m", "rollstream.services.cli", "control", "replay",
             "batch_groups=4"],
            env=env, check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        # the learner now takes 4 a version: one batch ahead is 8 groups, no new version needed
        wait_until(lambda: len(tap.of(ids)) > held, 60, "sampling to resume on the new size")
        again = wait_until(lambda: settled(tap, ids, gen), 90, "pacing to pause again", every=0)
        assert again == 8 * 2, again
        assert "pacing: 4 kept groups a version from v0 (was 2)" in gen.log()
    finally:
        rc = gen.stop()
    assert rc == 0, gen.log()[-3000:]
