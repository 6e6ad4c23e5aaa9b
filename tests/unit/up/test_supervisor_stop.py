"""Stopping `up`'s stage processes: a stage that does not exit on SIGTERM is killed when its
grace runs out, or at once after a second Ctrl-C (`Supervisor.hurry`); `after` stages are
stopped only once the others have exited (the evaluator, which evaluates the last version)."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

from rollstream.services.up.supervisor import Proc, Supervisor

STUBBORN = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"
OBEDIENT = "import time; time.sleep(60)"  # SIGTERM's default: exit at once


def _proc(sup: Supervisor, stage: str, code: str) -> Proc:
    p = Proc(stage=stage, index=0, port=0, log=sup.run_dir / f"{stage}.log", argv=[], env={})
    p.popen = subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
    sup.procs.append(p)
    return p


def test_a_second_ctrl_c_kills_a_stage_that_ignores_sigterm_at_once(tmp_path: Path) -> None:
    sup = Supervisor(tmp_path, tmp_path / "config.yaml", "127.0.0.1:1")
    stubborn = _proc(sup, "learner", STUBBORN)
    time.sleep(0.5)  # its SIGTERM handler is set
    threading.Timer(1.0, lambda: setattr(sup, "hurry", True)).start()
    t0 = time.monotonic()
    codes = sup.stop_all(grace_s=60.0)
    assert time.monotonic() - t0 < 10, "it waited out the grace"
    assert codes == {"learner-0": -9} and not stubborn.alive()


def test_the_after_stages_stop_once_the_others_have_exited(tmp_path: Path) -> None:
    sup = Supervisor(tmp_path, tmp_path / "config.yaml", "127.0.0.1:1")
    first = _proc(sup, "learner", STUBBORN)
    last = _proc(sup, "evaluator", OBEDIENT)
    time.sleep(0.5)
    seen: list[bool] = []
    threading.Timer(1.0, lambda: seen.append(last.alive())).start()  # during the first wave
    codes = sup.stop_all(grace_s=2.0, after=("evaluator",))
    assert seen == [True], "the evaluator was stopped before the learner had exited"
    assert codes == {"learner-0": -9, "evaluator-0": -15}
    assert not first.alive() and not last.alive()


def test_the_first_ctrl_c_never_hurries_a_stop_even_one_a_failing_stage_began() -> None:
    """A stage that failed too often stops the run (`stopping`); the user's first Ctrl-C
    then must not SIGKILL a learner that is writing its last checkpoint: only a second one
    hurries the stop."""
    from types import SimpleNamespace

    from rollstream.services.up.loop import Loop

    loop = Loop.__new__(Loop)  # the signal handler's state alone
    loop.signals, loop.stopping = 0, True
    loop.sup = SimpleNamespace(hurry=False)  # type: ignore[assignment]
    loop._on_signal(2, None)
    assert loop.stopping and not loop.sup.hurry
    loop._on_signal(2, None)
    assert loop.sup.hurry
