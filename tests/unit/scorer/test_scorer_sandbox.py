"""Code-execution reward in the sandbox: correct code passes; code that opens a socket, loops
forever, forks without end or allocates 10 GB gets a failing score within the time limit, and
nothing of it is left on the machine afterwards.

Both isolation modes are tested: "namespace" (unshare; skipped where it cannot run) and the
"audit" fallback. Time limits are 2 s so the suite stays quick.
"""

from __future__ import annotations

import asyncio
import functools
import os
import shutil
import socket
import tempfile
import threading
from pathlib import Path

import pytest
from scorer_builders import rollout

from rollstream.services.scorer.combine import Combiner, Component
from rollstream.services.scorer.rewards.code import CodeExec, extract_code
from rollstream.services.scorer.sandbox import Limits, Sandbox, SandboxUnavailable

FAIL = -1.0  # failure_value in these tests, so a killed run is told apart from failed tests
SANDBOX_UID = 64123  # an otherwise unused uid: any process left with it is a leak


@functools.cache
def _namespace_works() -> bool:
    if shutil.which("unshare") is None:
        return False
    try:
        asyncio.run(Sandbox(isolation="namespace").prepare())
    except SandboxUnavailable:
        return False
    return True


@pytest.fixture(params=["namespace", "audit"])
def mode(request) -> str:
    """Both isolation modes; namespace mode is skipped where namespaces cannot be made."""
    if request.param == "namespace" and not _namespace_works():
        pytest.skip("no user/network namespaces here")
    return request.param


def _processes_of(uid: int) -> list[str]:
    """Live (not zombie) processes of `uid`, as "pid state"."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if entry.stat().st_uid != uid:
                    continue
                state = (entry / "stat").read_text().rpartition(")")[2].split()[0]
            except OSError:
                continue
            if state not in ("Z", "X"):
                found.append(f"{entry.name} {state}")
    return found


def _sandbox_dirs() -> set[str]:
    return {p for p in os.listdir(tempfile.gettempdir()) if p.startswith("rollstream-sandbox-")}


def score(isolation: str, completion: str, tests: list[str], **params) -> tuple[float, list[str]]:
    """Score through the combiner (timeout well above the sandbox's), so a sandbox that failed
    to stop the code would show up as a combiner timeout."""
    reward = CodeExec(
        isolation=isolation,
        time_s=2.0,
        failure_value=FAIL,
        uid=SANDBOX_UID,
        memory_mb=256,
        **params,
    )
    combiner = Combiner([Component("code", reward, timeout_s=20, fallback=99.0, run="async")])

    async def go():
        try:
            return await combiner.score(rollout(completion, reference={"tests": tests}))
        finally:
            await combiner.close()

    result = asyncio.run(go())
    return result.components["code"], result.timed_out


@pytest.fixture
def unharmed():
    """The machine is as before: no process of the sandbox uid, no sandbox directory left."""
    before = _sandbox_dirs()
    yield
    if os.geteuid() == 0:
        assert _processes_of(SANDBOX_UID) == []
    assert _sandbox_dirs() <= before
    assert os.system("true") == 0  # can still start a process


SOLUTION = "```python\ndef add(a, b):\n    return a + b\n```"


def test_correct_code_passes_and_partial_code_scores_the_fraction(mode, unharmed) -> None:
    tests = ["assert add(1, 2) == 3", "assert add(-1, 1) == 0"]
    assert score(mode, SOLUTION, tests) == (1.0, [])
    half = "```python\ndef add(a, b):\n    return 3\n```"
    assert score(mode, half, tests) == (0.5, [])
    assert score(mode, half, tests, mode="all") == (0.0, [])


def test_code_that_opens_a_socket_cannot_reach_the_network(mode, unharmed) -> None:
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    accepted: list[socket.socket] = []
    done = threading.Event()
    server.settimeout(0.05)

    def accept() -> None:
        while not done.is_set():
            try:
                accepted.append(server.accept()[0])
            except OSError:
                pass

    acceptor = threading.Thread(target=accept)
    acceptor.start()
    code = (
        "import socket\n"
        f"socket.create_connection(('127.0.0.1', {port}), timeout=1).sendall(b'hi')\n"
        "def add(a, b):\n    return a + b\n"
    )
    try:
        assert score(mode, code, ["assert add(1, 2) == 3"]) == (0.0, [])
    finally:
        done.set()
        acceptor.join()
        server.close()
    assert accepted == []


def test_code_that_loops_forever_is_killed_at_the_time_limit(mode, unharmed) -> None:
    value, timed_out = score(mode, "while True:\n    pass\n", ["assert True"])
    assert (value, timed_out) == (FAIL, [])


def test_a_fork_bomb_fails_and_leaves_no_process(mode, unharmed) -> None:
    code = "import os\nwhile True:\n    os.fork()\n"
    assert score(mode, code, ["assert True"]) == (0.0, [])


def test_allocating_10_gb_fails(mode, unharmed) -> None:
    code = "blob = bytearray(10 * 1024 ** 3)\ndef add(a, b):\n    return a + b\n"
    assert score(mode, code, ["assert add(1, 2) == 3"]) == (0.0, [])


def test_early_exit_and_forged_verdicts_do_not_pass(mode, unharmed) -> None:
    tests = ["assert add(1, 2) == 3"]
    assert score(mode, "import os\nos._exit(0)\n", tests) == (FAIL, [])
    forged = "import os\nos.write(3, b'ok 1 1\\n')\nos.write(1, b'ok 1 1\\n')\nadd = None\n"
    assert score(mode, forged, tests) == (0.0, [])
    assert score(mode, "import sys\nsys.exit(0)\n", tests) == (0.0, [])


def test_flooding_output_or_writing_outside_the_workdir_fails(mode, unharmed, tmp_path) -> None:
    flood = "import os\nfor fd in (1, 2, 3):\n    os.write(fd, b'x' * 200_000)\n"
    assert score(mode, flood, ["assert True"], max_output_kb=16) == (FAIL, [])
    target = tmp_path / "escaped.txt"
    os.chmod(tmp_path, 0o777)
    code = f"open({str(target)!r}, 'w').write('x')\n"
    assert score(mode, code, ["assert True"]) == (0.0, [])
    assert not target.exists()
    inside = "open('note.txt', 'w').write('x')\ndef read():\n    return open('note.txt').read()\n"
    assert score(mode, inside, ["assert read() == 'x'"]) == (1.0, [])


# Finds the harness's frame, reads its nonce and verdict fd, writes a full-marks verdict
# (issue 16: the reward could be forged this way).
FRAME_FORGERY = """
import sys, os
f = sys._getframe()
while f is not None and "nonce" not in f.f_locals:
    f = f.f_back
v = f.f_locals
os.write(v["verdict_fd"], f"{v['nonce']} 1 1\\n".encode())
os._exit(0)
"""
TRACE_FORGERY = """
import sys, os
def tracer(frame, event, arg):
    v = frame.f_back.f_locals if frame.f_back else {}
    if "nonce" in v:
        os.write(v["verdict_fd"], f"{v['nonce']} 1 1\\n".encode())
        os._exit(0)
    return None
sys.setprofile(tracer)
"""


@pytest.mark.parametrize("forgery", [FRAME_FORGERY, TRACE_FORGERY])
def test_the_verdict_cannot_be_forged_by_reading_the_harness(mode, unharmed, forgery) -> None:
    tests = ["assert add(1, 2) == 3"]
    assert score(mode, forgery, tests)[0] in (0.0, FAIL)


def test_sqlite_ctypes_and_fifos_cannot_write_outside_the_workdir(mode, unharmed, tmp_path) -> None:
    os.chmod(tmp_path, 0o777)
    db, fifo, node = tmp_path / "x.db", tmp_path / "fifo", tmp_path / "node"
    attempts = [
        f"import sqlite3\nsqlite3.connect({str(db)!r}).execute('create table t (x)')\n",
        f"import os\nos.mkfifo({str(fifo)!r})\n",
        f"import posix\nposix.mkfifo({str(fifo)!r})\n",
        f"import os\nos.mknod({str(node)!r})\n",
        "import ctypes\nlibc = ctypes.CDLL(None)\n"
        f"fd = libc.open({str(node).encode()!r}, 0o101, 0o644)\nlibc.write(fd, b'x', 1)\n",
    ]
    for code in attempts:
        assert score(mode, code, ["assert True"]) == (0.0, []), code
    assert sorted(os.listdir(tmp_path)) == []
    inside = "import sqlite3\ndb = sqlite3.connect('in.db')\ndb.execute('create table t (x)')\n"
    assert score(mode, inside, ["assert db is not None"]) == (1.0, [])


def test_missing_tests_are_an_error() -> None:
    with pytest.raises(ValueError, match="reference\\['tests'\\]"):
        asyncio.run(CodeExec().score(rollout(SOLUTION)))


def test_extract_code_prefers_the_last_python_block() -> None:
    text = "```text\nnot code\n```\n```python\nx = 1\n```\nand\n```py\nx = 2\n```"
    assert extract_code(text, "last_block") == "x = 2\n"
    assert extract_code(text, "first_block") == "x = 1\n"
    assert extract_code("```\ny = 3\n```", "last_block") == "y = 3\n"
    assert extract_code("z = 4", "last_block") == "z = 4"


def test_sandbox_limits_are_the_documented_defaults() -> None:
    assert Limits().time_s == 2.0 and Limits().memory_mb == 512
