"""Runs each stage replica as its own OS process (`rollstream run STAGE ...`), the same entry
point a cluster uses, with its own metrics port and log file, and stops them all cleanly.

Stop order (`stop_all`): SIGTERM to every process but the `after` ones (each finishes its
batch, commits offsets; the learner writes a final checkpoint), wait up to `grace_s`, SIGKILL
stragglers; then the same for the `after` ones (`up`: the evaluator, which evaluates the last
version once the learner is gone). `hurry` (a second Ctrl-C) SIGKILLs what is left at once.
Nothing is left running: every child is in its own process group, killed by group.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from rollstream.services.runtime.broker import free_port


@dataclass
class Proc:
    stage: str
    index: int
    port: int
    log: Path
    argv: list[str]
    env: dict[str, str]
    popen: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    started_at: float = field(default_factory=time.time)
    failures: list[float] = field(default_factory=list)
    """When this process exited non-zero (not counting the stop at the end of the run)."""
    last_error: list[str] = field(default_factory=list)
    """The last lines of its log at its latest failure (the traceback's tail, if any)."""
    exit_seen: bool = False

    @property
    def name(self) -> str:
        return f"{self.stage}-{self.index}"

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None


class Supervisor:
    def __init__(
        self, run_dir: Path, config_path: Path, bootstrap: str, namespace: str | None = None
    ) -> None:
        self.run_dir = run_dir
        self.config_path = config_path
        self.bootstrap = bootstrap
        self.namespace = namespace
        self.procs: list[Proc] = []
        self.hurry = False  # set (a second Ctrl-C) while stopping: SIGKILL what is left, now
        (run_dir / "logs").mkdir(parents=True, exist_ok=True)

    def _port(self, proc: Proc | None = None) -> int:
        """A free port no other process of this run has: `free_port` releases the port it
        found, so two calls can return the same one (feed and filter once got one port, and
        the feed died on "Address already in use" at each of its restarts)."""
        taken = {p.port for p in self.procs if p is not proc}
        port = free_port()
        while port in taken:
            port = free_port()
        return port

    def add(self, stage: str, index: int, extra_env: dict[str, str] | None = None) -> Proc:
        port = self._port()
        argv = [
            sys.executable,
            "-m",
            "rollstream.services.cli",
            "run",
            stage,
            "--config",
            str(self.config_path),
            "--bootstrap",
            self.bootstrap,
            "--metrics-port",
            str(port),
            "--instance",
            f"{stage}-{index}",
            "--run-dir",
            str(self.run_dir),
        ]
        if self.namespace:
            argv += ["--namespace", self.namespace]
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **(extra_env or {})}
        proc = Proc(stage, index, port, self.run_dir / "logs" / f"{stage}-{index}.log", argv, env)
        self.procs.append(proc)
        return proc

    def start(self, proc: Proc) -> None:
        if proc.popen is not None:  # a restart: a fresh port, in case another took the old one
            proc.port = self._port(proc)
            at = proc.argv.index("--metrics-port") + 1
            proc.argv[at] = str(proc.port)
        log = open(proc.log, "ab")  # noqa: SIM115 (kept open by the child)
        proc.popen = subprocess.Popen(
            proc.argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=proc.env,
            start_new_session=True,
        )
        proc.started_at = time.time()
        log.close()
        self.write_pids()

    def write_pids(self) -> None:
        """`<run>/procs.json`: name -> pid, port, restarts (for `status`, tests, operators)."""
        import json

        table = {
            p.name: {
                "pid": p.popen.pid if p.popen else None,
                "port": p.port,
                "restarts": p.restarts,
                "failures": len(p.failures),
                "last_error": p.last_error,
            }
            for p in self.procs
        }
        tmp = self.run_dir / "procs.json.tmp"
        tmp.write_text(json.dumps(table, indent=1))
        tmp.replace(self.run_dir / "procs.json")

    def start_all(self) -> None:
        for p in self.procs:
            self.start(p)

    def dead(self) -> list[Proc]:
        return [p for p in self.procs if p.popen is not None and p.popen.poll() is not None]

    def restart(self, proc: Proc) -> None:
        proc.restarts += 1
        proc.exit_seen = False
        self.start(proc)

    def note_failure(self, proc: Proc, now: float | None = None) -> bool:
        """Record a process's non-zero exit once (its time and the tail of its log); True the
        first time this exit is seen."""
        if proc.exit_seen:
            return False
        proc.exit_seen = True
        proc.failures.append(time.time() if now is None else now)
        proc.last_error = error_tail(proc.log)
        self.write_pids()
        return True

    def kill(self, proc: Proc, sig: int = signal.SIGKILL) -> None:
        if proc.alive() and proc.popen is not None:
            try:
                os.killpg(proc.popen.pid, sig)
            except ProcessLookupError:
                pass

    def stop_all(
        self, grace_s: float = 30.0, order: tuple[str, ...] = (), after: tuple[str, ...] = ()
    ) -> dict[str, int]:
        """SIGTERM in `order` (stages named first stop first), wait, then SIGKILL; the stages
        in `after` are stopped once the others have exited (each wave has `grace_s`). Once
        `hurry` is set, what has not exited is SIGKILLed at once."""
        first = [p for p in self.procs if p.stage not in after]
        self._stop(first, grace_s, order)
        self._stop([p for p in self.procs if p.stage in after], grace_s, order)
        return {p.name: (p.popen.returncode if p.popen else 0) for p in self.procs}

    def _stop(self, procs: list[Proc], grace_s: float, order: tuple[str, ...]) -> None:
        ranked = sorted(procs, key=lambda p: order.index(p.stage) if p.stage in order else -1)
        for p in ranked:
            self.kill(p, signal.SIGTERM)
        deadline = time.time() + grace_s
        for p in ranked:
            if p.popen is None:
                continue
            while p.popen.poll() is None:
                if self.hurry or time.time() >= deadline:
                    self.kill(p, signal.SIGKILL)
                    p.popen.wait()
                    break
                try:
                    p.popen.wait(min(0.2, max(0.01, deadline - time.time())))
                except subprocess.TimeoutExpired:
                    pass


def error_tail(log: Path, lines: int = 8, scan_bytes: int = 64_000) -> list[str]:
    """The lines that say why a process died: from the last traceback (or else the last
    lines) of its log, at most `lines` of them, ending with the exception line."""
    try:
        with open(log, "rb") as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - scan_bytes))
            text = f.read().decode("utf-8", errors="replace")
    except OSError:
        return []
    # drop blank lines and Python's ^^^^/~~~~ markers: they point at nothing once quoted
    tail = [x.rstrip() for x in text.splitlines() if x.strip().strip("^~")]
    starts = [i for i, x in enumerate(tail) if x.startswith("Traceback (most recent call last)")]
    if starts:
        tail = tail[starts[-1] :]
        # the frame nearest the error and the exception line are what a user needs
        return [tail[0], *tail[1:][-(lines - 1) :]] if len(tail) > lines else tail
    return tail[-lines:]
