"""`rollstream status` on a live run reads each topic up to the end it had when the read
started (one cut), instead of chasing a topic that is still being written."""

from __future__ import annotations

import threading
import time

import pytest

from rollstream.schemas import synthetic as syn
from rollstream.services.runtime.bus import Producer
from rollstream.services.runtime.settings import KafkaSettings
from rollstream.services.up.ledger import compute, read_all

pytestmark = pytest.mark.kafka


def test_a_topic_still_being_written_is_read_to_the_cut_not_chased(kafka: KafkaSettings):
    prod = Producer(kafka, "test")
    written = 0
    stop = threading.Event()

    def write_one(flush: bool = True) -> None:
        nonlocal written
        r = syn.scored(f"g{written}", 0, [1, 2], [3], group_size=1).rollout
        prod.send("rollouts.raw", r, r.group_id)
        if flush:
            prod.flush()  # on the broker before it counts as written
        written += 1

    def writer() -> None:
        while not stop.is_set():
            write_one()
            time.sleep(0.002)

    # a long head, so that reading up to the cut takes a while and the writer adds records
    # behind the cut meanwhile, however fast the reader is
    for _ in range(20_000):
        write_one(flush=False)
    prod.flush()
    t = threading.Thread(target=writer, daemon=True)
    t.start()
    try:
        while written < 20_100:
            time.sleep(0.05)
        at_start = written
        got = read_all(kafka, "rollouts.raw", timeout_s=20)  # BusError if the cut is not reached
        at_end = written
        led = compute(kafka)  # the whole ledger, while the topic keeps growing
    finally:
        stop.set()
        t.join(10)
        prod.close()
    ids = {r.rollout_id for r in got}
    assert len(ids) == len(got), "each message once"
    # everything written before the read began, only messages that were written ...
    assert {f"g{i}/0" for i in range(at_start)} <= ids <= {f"g{i}/0" for i in range(at_end)}
    # ... and not those written while it read (the old reader chased the end for 30 s)
    assert len(ids) < at_end, (at_start, len(ids), at_end)
    # nothing downstream yet: all of it is pending, and a live ledger balances
    assert led.generated >= at_start and led.pending == led.generated and led.balanced


def test_the_ledgers_version_is_the_runs_policy_not_anothers_on_the_topic(kafka: KafkaSettings):
    """Another policy's versions on the same `weights` topic (two policies, one namespace)
    are not the run's: with its policy named, the ledger reports the run's newest."""
    from rollstream.schemas import Feedback, WeightUpdate

    prod = Producer(kafka, "test")
    now = time.time()
    prod.send("learner.feedback", Feedback(learner_id="l", credits_total=1, learner_version=4,
                                           step=5, produced_at=now), "l")  # fmt: skip
    for policy, version in (("policy", 5), ("other", 5), ("other", 6)):
        update = WeightUpdate(
            policy=policy,
            version=version,
            uri=f"/w/{policy}/{version}",
            sha256="0" * 64,
            size_bytes=1,
            step=version,
            produced_at=now,
        )
        prod.send("weights", update, policy)
    prod.flush()
    prod.close()
    assert compute(kafka, "policy").learner_version == 5
    assert compute(kafka).learner_version == 5  # any policy: bounded by the learner's + 1
    prod = Producer(kafka, "test")
    prod.send("learner.feedback", Feedback(learner_id="l", credits_total=2, learner_version=5,
                                           step=6, produced_at=now), "l")  # fmt: skip
    prod.flush()
    prod.close()
    assert compute(kafka, "policy").learner_version == 5  # "other" v6 is not the run's
    assert compute(kafka).learner_version == 6
