"""Run untrusted Python code against its tests in a throw-away, locked-down child process.

How each limit is enforced (`Sandbox.isolation` tells which mode was found to work):

- time: the parent kills the child's whole process group after `time_s` (wall clock);
  RLIMIT_CPU backs it up.
- memory: RLIMIT_AS (`memory_mb`), so a 10 GB allocation fails with MemoryError.
- processes: RLIMIT_NPROC (`max_procs`), so a fork bomb stops after a few forks.
- output: the verdict is read from a pipe capped at `max_output_bytes`; the code's own
  stdout/stderr go to /dev/null; RLIMIT_FSIZE caps any file it writes.
- files: a fresh temporary working directory per run (HOME and TMPDIR point there), removed
  afterwards; writes outside it (open, sqlite3, FIFOs and device nodes) are refused by an
  audit hook in the child (always on).
- the verdict: the child proves its verdict with a nonce; frame and memory introspection
  (sys._getframe, settrace/setprofile, gc walks, /proc, ctypes) is refused in every mode so
  the solution cannot read it (sandbox_harness.py; the limits are in RELIABILITY.md).
- privileges: when the service runs as root, the child runs as `uid` (default 65534, nobody),
  so it cannot read root's files or exceed RLIMIT_NPROC (root is exempt from it).
- network, mode "namespace": the child runs under `unshare --user --net --pid --fork
  --kill-child`: a new network namespace with no interfaces (connect fails with "network
  unreachable"), a new PID namespace (it sees and can signal only its own processes, and all of
  them die when the sandboxed interpreter, PID 1 there, exits), and a user namespace (so
  RLIMIT_NPROC counts only the processes of this run and setuid binaries gain nothing).
- network, mode "audit" (fallback when namespaces cannot be created, e.g. user namespaces
  disabled): a Python audit hook in the child refuses socket creation, fork/exec/subprocess,
  ctypes and kill. This is weaker: C extensions can bypass audit hooks.

`isolation="auto"` probes namespace mode once (running a trivial program through the same
chain) and falls back to audit mode; "namespace" refuses to fall back. Needs `prlimit` and
(for namespace mode) `unshare` from util-linux. Reads and writes only its temporary
directories; spawns only the child chain.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import secrets
import shutil
import signal
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

Isolation = Literal["auto", "namespace", "audit"]
Status = Literal["ok", "timeout", "output_limit", "crashed"]

_HARNESS = Path(__file__).with_name("sandbox_harness.py")
_PYTHON_CANDIDATES = ("/usr/bin/python3", "/usr/local/bin/python3", "/bin/python3")


class SandboxUnavailable(RuntimeError):
    """No isolation mode that was asked for works on this machine."""


@dataclass(frozen=True)
class Limits:
    """Per-run limits (see module docstring for how each is enforced)."""

    time_s: float = 2.0
    memory_mb: int = 512
    max_procs: int = 16
    max_output_bytes: int = 64 * 1024
    max_file_mb: int = 16
    max_open_files: int = 64


@dataclass(frozen=True)
class SandboxResult:
    """Outcome of one run: `passed` of `total` tests when status is "ok"."""

    status: Status
    passed: int = 0
    total: int = 0
    detail: str = ""


class Sandbox:
    """Runs `code` then its `tests` (Python statements, usually asserts) in a child process.

    At most `max_concurrency` children run at once; further calls wait their turn (the wait
    does not count against `time_s`)."""

    def __init__(
        self,
        limits: Limits | None = None,
        *,
        isolation: Isolation = "auto",
        python: str | None = None,
        uid: int = 65534,
        max_concurrency: int = 4,
    ) -> None:
        self.limits = limits or Limits()
        self.requested = isolation
        self.isolation: Literal["namespace", "audit"] | None = None
        self.python = python
        self.uid = uid
        self.max_concurrency = max_concurrency
        self._as_root = os.geteuid() == 0
        self._semaphore: asyncio.Semaphore | None = None
        self._probe_lock: asyncio.Lock | None = None
        self._harness = _HARNESS.read_text()

    async def run(self, code: str, tests: list[str]) -> SandboxResult:
        """Run `code` then each test; count the tests that raise nothing."""
        await self.prepare()
        assert self._semaphore is not None and self.isolation is not None
        async with self._semaphore:
            return await self._run_once(code, tests, self.isolation, self.python or "")

    async def prepare(self) -> None:
        """Find a working isolation mode and interpreter (once); raise SandboxUnavailable."""
        if self._semaphore is None:
            self._semaphore = asyncio.Semaphore(self.max_concurrency)
            self._probe_lock = asyncio.Lock()
        if self.isolation is not None:
            return
        assert self._probe_lock is not None
        async with self._probe_lock:
            if self.isolation is None:
                await self._probe()

    async def _probe(self) -> None:
        modes: list[Literal["namespace", "audit"]] = (
            ["namespace", "audit"] if self.requested == "auto" else [self.requested]
        )
        pythons = [self.python] if self.python else _python_candidates()
        tried = []
        for mode in modes:
            if mode == "namespace" and shutil.which("unshare") is None:
                tried.append("namespace: no `unshare` on PATH")
                continue
            for python in pythons:
                result = await self._run_once("x = 1", ["assert x == 1"], mode, python)
                if result.status == "ok" and result.passed == 1:
                    self.isolation, self.python = mode, python
                    return
                tried.append(f"{mode} with {python}: {result.status} {result.detail}".strip())
        raise SandboxUnavailable("no sandbox mode works here: " + "; ".join(tried))

    def _command(self, mode: str, python: str) -> list[str]:
        lim = self.limits
        prlimit = [
            shutil.which("prlimit") or "prlimit",
            f"--as={lim.memory_mb * 1024 * 1024}",
            f"--nproc={lim.max_procs}",
            f"--cpu={math.ceil(lim.time_s) + 1}",
            f"--fsize={lim.max_file_mb * 1024 * 1024}",
            f"--nofile={lim.max_open_files}",
            "--core=0",
            "--",
        ]
        child = [python, "-I", "-B", "-c", self._harness]
        if mode == "namespace":
            unshare = ["unshare", "--user", "--net", "--pid", "--fork", "--kill-child", "--"]
            return unshare + prlimit + child
        return prlimit + child

    @staticmethod
    def _blocked(mode: str) -> list[str]:
        if mode == "audit":
            return ["files", "network", "process", "signals", "introspection"]
        # the kernel handles network, processes and signals; files and introspection (the
        # verdict's nonce, ctypes) are this process's own business in every mode
        return ["files", "introspection"]

    async def _run_once(self, code: str, tests: list[str], mode: str, python: str) -> SandboxResult:
        nonce = secrets.token_hex(16)
        payload = json.dumps(
            {"code": code, "tests": tests, "nonce": nonce, "block": self._blocked(mode)}
        ).encode()
        workdir = tempfile.mkdtemp(prefix="rollstream-sandbox-")
        extra: dict[str, Any] = {}
        if self._as_root:
            os.chown(workdir, self.uid, self.uid)
            extra = {"user": self.uid, "group": self.uid, "extra_groups": []}
        env = {"PATH": "/usr/bin:/bin", "HOME": workdir, "TMPDIR": workdir, "LANG": "C.UTF-8"}
        try:
            proc = await asyncio.create_subprocess_exec(
                *self._command(mode, python),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                cwd=workdir,
                env=env,
                start_new_session=True,
                **extra,
            )
        except OSError as exc:
            shutil.rmtree(workdir, ignore_errors=True)
            return SandboxResult("crashed", total=len(tests), detail=f"cannot start: {exc}")
        try:
            async with asyncio.timeout(self.limits.time_s):
                out, err, over = await self._communicate(proc, payload)
        except TimeoutError:
            return SandboxResult("timeout", total=len(tests), detail=f"> {self.limits.time_s}s")
        finally:
            if proc.returncode is None:  # never signal a reaped pid: it may be reused
                children = _descendants(proc.pid)
                _kill_group(proc.pid)
                await proc.wait()
                await _until_dead(children)
            await _drain(proc)
            shutil.rmtree(workdir, ignore_errors=True)
        if over:
            return SandboxResult("output_limit", total=len(tests), detail="verdict pipe flooded")
        for line in out.decode(errors="replace").splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[0] == nonce:
                return SandboxResult("ok", passed=int(parts[1]), total=int(parts[2]))
        detail = f"exit {proc.returncode}: {err.decode(errors='replace')[-300:].strip()}"
        return SandboxResult("crashed", total=len(tests), detail=detail)

    async def _communicate(
        self, proc: asyncio.subprocess.Process, payload: bytes
    ) -> tuple[bytes, bytes, bool]:
        """Feed the payload, read the verdict (capped) and stderr; True when stdout overflowed."""
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        stdin = proc.stdin

        async def feed() -> None:
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                stdin.write(payload)
                await stdin.drain()
                stdin.close()

        feeder = asyncio.ensure_future(feed())
        errors = asyncio.ensure_future(_read_capped(proc.stderr, 4096))
        try:
            out, over = await _read_capped(proc.stdout, self.limits.max_output_bytes)
            if over:
                return out, b"", True
            await proc.wait()
            err, _ = await errors
            return out, err, False
        finally:
            feeder.cancel()
            errors.cancel()


async def _drain(proc: asyncio.subprocess.Process) -> None:
    """Read a finished process's pipes to EOF, so their transports close in this event loop.
    Left open (a flood returns before EOF), the garbage collector closes them after the loop
    is gone: "Event loop is closed" from BaseSubprocessTransport.__del__, which failed the
    flood test about one run in ten. The stdin pipe is closed too (a child killed before it
    read its payload leaves it open), and the loop turns once so the pipes' close callbacks
    run."""
    if proc.stdin is not None:
        with contextlib.suppress(Exception):
            proc.stdin.close()
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(stream.read(), 1.0)
    await asyncio.sleep(0)


async def _read_capped(stream: asyncio.StreamReader, cap: int) -> tuple[bytes, bool]:
    """Read until EOF or until more than `cap` bytes came (then report the overflow)."""
    buf = bytearray()
    while chunk := await stream.read(65536):
        buf += chunk
        if len(buf) > cap:
            return bytes(buf[:cap]), True
    return bytes(buf), False


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def _descendants(pid: int) -> list[int]:
    """Every live descendant of `pid` (Linux /proc children lists; empty where absent)."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        for task in Path(f"/proc/{current}/task").glob("*/children"):
            with contextlib.suppress(OSError):
                kids = [int(k) for k in task.read_text().split()]
                found += kids
                todo += kids
    return found


async def _until_dead(pids: list[int], limit_s: float = 2.0) -> None:
    """Wait (briefly) until the killed processes have exited, so that when a run returns none
    of its processes is still using the machine. Zombies count as exited."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit_s
    alive = list(pids)
    while alive and loop.time() < deadline:
        alive = [pid for pid in alive if _running(pid)]
        if alive:
            await asyncio.sleep(0.01)


def _running(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


def _python_candidates() -> list[str]:
    """Interpreters to try, this one first; another uid may not be able to run this one."""
    found = [sys.executable]
    found += [p for p in _PYTHON_CANDIDATES if os.path.exists(p) and p not in found]
    return found
