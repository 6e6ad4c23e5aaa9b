"""`up`'s supervisor gives every stage process a metrics port of its own: `free_port` releases
the port it found, so two calls can return the same one; CI once saw the feed and the filter
get one port, and the feed die on "Address already in use" at each of its restarts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from rollstream.services.up import supervisor as sup


def test_every_process_gets_its_own_port_and_a_fresh_one_when_restarted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    handed = iter([5001, 5001, 5002, 5001, 5002, 5003, 5002, 5004])
    monkeypatch.setattr(sup, "free_port", lambda: next(handed))
    s = sup.Supervisor(tmp_path, tmp_path / "config.yaml", "127.0.0.1:9092")
    procs = [s.add(stage, 0) for stage in ("feed", "filter", "scorer")]
    assert [p.port for p in procs] == [5001, 5002, 5003]
    for p in procs:
        assert p.argv[p.argv.index("--metrics-port") + 1] == str(p.port)
    feed = procs[0]
    feed.argv = [sys.executable, "-c", "pass", "--metrics-port", str(feed.port)]
    feed.popen = subprocess.Popen([sys.executable, "-c", "pass"])  # it ran once and exited
    feed.popen.wait()
    s.restart(feed)
    feed.popen.wait()
    assert feed.port == 5004  # 5002 is the filter's
    assert feed.argv[-1] == "5004" and feed.restarts == 1
