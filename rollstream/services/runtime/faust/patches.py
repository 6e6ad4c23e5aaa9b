"""Every change rollstream makes to faust-streaming and aiokafka, behind one version guard.

The two stream processors (scorer, filter) run on faust, and six of faust's behaviours are
patched (app.py) while a few more private attributes are read (sender.py, the
filter's app). A minor faust release can rename any of them; instead of breaking silently
mid-run, `apply()` checks at start that the installed versions are the tested ones and that
every attribute relied on is there, and raises `FaustPatchError` naming what is missing.

`PATCHES` says, one line each, why a patch exists (figures: benchmarks/RESULTS.md);
`RELIED_ON` lists the private attributes read but not replaced. Instance attributes
(`Consumer._read_offset`, `_commit_every`, `_n_acked`, `_committed_offset`, aiokafka's
`_fetch_max_wait_ms`, `_client`) cannot be checked on a class; the integration and fault tests
run the patched loops against the real broker.
"""

from __future__ import annotations

import importlib
from importlib import metadata
from typing import NamedTuple

TESTED = {"faust-streaming": ((0, 15), (0, 16)), "aiokafka": ((0, 13), (0, 15))}
"""package -> [lowest, first untested) (major, minor); pyproject.toml pins the same bounds."""


class Patch(NamedTuple):
    module: str
    owner: str | None  # a class in `module`, or None for a module attribute
    attr: str
    why: str


PATCHES = (
    Patch(
        "faust.transport.producer",
        "ProducerBuffer",
        "flush",
        "drain_buffer_on_flush: faust's flush returns when one message takes > 0.1 s, so a"
        " commit could pass changelog writes still buffered (state lost on a crash)",
    ),
    Patch(
        "faust.transport.drivers.aiokafka",
        "AIOKafkaConsumerThread",
        "_create_worker_consumer",
        "wait_at_most_in_fetches: faust fixes fetches' max wait at 1500 ms; on the embedded"
        " broker one hop's p50 is 22 ms at 100 ms",
    ),
    Patch(
        "faust.transport.consumer",
        "Consumer",
        "_drain_messages",
        "deliver_fetches_in_one_task: faust spends four tasks and an asyncio.wait per"
        " message (~0.05 CPU ms, as much as the rest of a stage's work on it)",
    ),
    Patch(
        "faust.transport.drivers.aiokafka",
        "AIOKafkaConsumerThread",
        "seek_to_committed",
        "rewind_uncommitted_partitions: a partition with no committed offset kept its"
        " fetch position across two quick rebalances, and records there were never read",
    ),
    Patch(
        "faust.transport.drivers.aiokafka",
        "AIOKafkaConsumerThread",
        "_highwaters",
        "read_changelogs_to_fetched_end: a broker reporting a short ListOffsets end (Tansu)"
        " made table recovery stop early and forget the newest state",
    ),
    Patch(
        "faust.tables.recovery",
        "Recovery",
        "on_recovery_completed",
        "stop_fetching_until_streams_resume: records fetched between the seek back to the"
        " committed offsets and the queues' resume were cleared and never read (lost groups)",
    ),
    Patch(
        "faust.tables.recovery",
        "Recovery",
        "_resume_streams",
        "stop_fetching_until_streams_resume (the same, for a stage without tables)",
    ),
    Patch(
        "faust.tables.base",
        "Collection",
        "send_changelog",
        "Sender.redirect_changelog: table changelogs go out through librdkafka with the"
        " stage's outputs (one flush before each commit covers both)",
    ),
)

RELIED_ON = (
    Patch("faust.transport.producer", "ProducerBuffer", "flush_atmost", "drain_buffer_on_flush"),
    Patch("faust.transport.consumer", "Consumer", "getmany", "deliver_fetches_in_one_task"),
    Patch("faust.transport.consumer", "Consumer", "_add_gap", "deliver_fetches_in_one_task"),
    Patch("faust.transport.consumer", "Consumer", "commit", "deliver_fetches_in_one_task"),
    Patch("faust.transport.consumer", None, "CONSUMER_FETCHING", "deliver_fetches_in_one_task"),
    Patch(
        "faust.transport.drivers.aiokafka",
        "AIOKafkaConsumerThread",
        "_ensure_consumer",
        "rewind_uncommitted_partitions, read_changelogs_to_fetched_end",
    ),
    Patch(
        "faust.transport.drivers.aiokafka",
        "AIOKafkaConsumerThread",
        "call_thread",
        "rewind_uncommitted_partitions",
    ),
    Patch("aiokafka.protocol.fetch", None, "FetchRequest", "fetched_ends"),
    Patch(
        "faust.transport.consumer", "Consumer", "stop_flow", "stop_fetching_until_streams_resume"
    ),
    Patch("faust", None, "current_event", "filter tables: the current event's partition"),
)


class FaustPatchError(RuntimeError):
    """The installed faust / aiokafka is not one these patches were written for."""


def _minor(version: str) -> tuple[int, int]:
    parts = [int("".join(c for c in p if c.isdigit()) or 0) for p in version.split(".")[:2]]
    return (parts + [0, 0])[0], (parts + [0, 0])[1]


def check() -> None:
    """Raise FaustPatchError unless the installed versions are in TESTED and every attribute
    of PATCHES and RELIED_ON exists."""
    problems = []
    for package, (low, high) in TESTED.items():
        try:
            found = metadata.version(package)
        except metadata.PackageNotFoundError:
            problems.append(f"{package} is not installed")
            continue
        if not low <= _minor(found) < high:
            problems.append(
                f"{package} {found} is outside the tested range"
                f" >={low[0]}.{low[1]},<{high[0]}.{high[1]}"
            )
    for p in (*PATCHES, *RELIED_ON):
        try:
            target = importlib.import_module(p.module)
            if p.owner is not None:
                target = getattr(target, p.owner)
            getattr(target, p.attr)
        except (ImportError, AttributeError):
            where = f"{p.module}.{p.owner}.{p.attr}" if p.owner else f"{p.module}.{p.attr}"
            problems.append(f"{where} is gone (needed by {p.why.split(':')[0]})")
    if problems:
        raise FaustPatchError(
            "rollstream's faust patches do not fit the installed packages: "
            + "; ".join(problems)
            + " (rollstream/services/runtime/faust/patches.py;"
            + " install the versions pyproject.toml pins)"
        )


def apply() -> None:
    """Check, then apply every patch of app.py (each once per process)."""
    from rollstream.services.runtime.faust import app as fa

    check()
    fa.read_changelogs_to_fetched_end()
    fa.drain_buffer_on_flush()
    fa.deliver_fetches_in_one_task()
    fa.rewind_uncommitted_partitions()
    fa.stop_fetching_until_streams_resume()
    fa.wait_at_most_in_fetches()
