"""Runs INSIDE the sandbox child process; the service never imports it.

sandbox.py passes this file's source to `python -I -B -c`. It reads one JSON object from stdin:
{"code": str, "tests": [str], "nonce": str, "block": [category, ...]}, then
1. keeps a private copy of stdout for its verdict and points fds 1 and 2 at /dev/null, so
   whatever the code prints is discarded;
2. installs an audit hook that refuses the blocked categories: "files" (creating, writing,
   removing or renaming anything outside the working directory), "network" (sockets),
   "process" (fork, exec, subprocess, ctypes), "signals" (kill). With kernel isolation
   (namespaces, another uid) only "files" may be needed; without it all four are;
3. runs the code with `__name__ == "solution"` (so `if __name__ == "__main__":` blocks do not
   run), then each test in the same namespace, counting the tests that raise nothing;
4. writes "<nonce> <passed> <total>" on the private stdout and exits at once.

A solution that exits early or prints a forged verdict does not know the nonce, so the parent
scores it as a failure. To keep the nonce secret from code running in this same process, the
"introspection" category (always blocked) refuses what could reach the harness's frames or
memory: sys._getframe, sys._current_frames, settrace/setprofile, the gc module's object walks,
the frame attributes of tracebacks/generators/coroutines, reading /proc, and ctypes (importing
it included). The "files" category also refuses sqlite3 databases and FIFOs / device nodes
outside the working directory (os.mkfifo / os.mknod have no audit event, so this harness
replaces them in `os` and `posix`). What stays possible is in RELIABILITY.md.
"""

import json
import os
import sys

_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
# audit event -> positions of its path arguments that must stay inside the working directory
_PATH_EVENTS = {
    "os.remove": (0,),
    "os.rmdir": (0,),
    "os.rename": (0, 1),
    "os.link": (0, 1),
    "os.symlink": (1,),
    "os.chmod": (0,),
    "os.chown": (0,),
    "os.truncate": (0,),
    "os.mkdir": (0,),
    "os.utime": (0,),
    "shutil.rmtree": (0,),
}
_NETWORK = ("socket.",)
_PROCESS = ("os.fork", "os.forkpty", "os.exec", "os.posix_spawn", "os.spawn", "os.system")
_PROCESS += ("subprocess.", "pty.", "ctypes.dl", "os.startfile")
_SIGNALS = ("os.kill", "os.killpg", "signal.pthread_kill")
_INTROSPECTION = (
    "sys._getframe",
    "sys._current_frames",
    "sys.settrace",
    "sys.setprofile",
    "gc.get_objects",
    "gc.get_referrers",
    "gc.get_referents",
    "ctypes.",
)
_FRAME_ATTRS = {"tb_frame", "gi_frame", "cr_frame", "ag_frame", "f_back"}
_NO_IMPORT = {"ctypes", "_ctypes"}


def _make_hook(block, root):
    prefixes = ()
    if "network" in block:
        prefixes += _NETWORK
    if "process" in block:
        prefixes += _PROCESS
    if "signals" in block:
        prefixes += _SIGNALS
    if "introspection" in block:
        prefixes += _INTROSPECTION
    introspection = "introspection" in block
    files = "files" in block
    realpath = os.path.realpath
    inside = root.rstrip(os.sep) + os.sep

    def outside(path):
        if isinstance(path, int) or path is None:
            return False
        if isinstance(path, bytes):
            path = os.fsdecode(path)
        full = realpath(path)
        return not (full + os.sep).startswith(inside) and full != os.devnull

    def hook(event, args):
        if prefixes and event.startswith(prefixes):
            raise PermissionError(f"{event} is not allowed in the sandbox")
        if introspection:
            if event == "object.__getattr__" and args[1] in _FRAME_ATTRS:
                raise PermissionError(f"{args[1]} is not allowed in the sandbox")
            if event == "import" and args[0].partition(".")[0] in _NO_IMPORT:
                raise PermissionError(f"importing {args[0]} is not allowed in the sandbox")
            if event == "open" and isinstance(args[0], str | bytes):
                path = os.fsdecode(args[0])
                if realpath(path).startswith("/proc/"):
                    raise PermissionError("/proc is not readable in the sandbox")
        if not files:
            return
        if event == "sqlite3.connect":
            db = os.fsdecode(args[0]) if isinstance(args[0], str | bytes) else ""
            if db.startswith("file:") or (db not in ("", ":memory:") and outside(db)):
                raise PermissionError("sqlite3 outside the sandbox directory is not allowed")
        elif event == "open":
            flags = args[2] if len(args) > 2 and isinstance(args[2], int) else 0
            mode = args[1] if len(args) > 1 and isinstance(args[1], str) else ""
            writes = flags & _WRITE_FLAGS or any(c in mode for c in "wax+")
            if writes and outside(args[0]):
                raise PermissionError("writing outside the sandbox directory is not allowed")
        elif event in _PATH_EVENTS:
            if any(i < len(args) and outside(args[i]) for i in _PATH_EVENTS[event]):
                raise PermissionError(f"{event} outside the sandbox directory is not allowed")

    return hook


def _guard_nodes(root):
    """os.mkfifo / os.mknod raise no audit event: replace them (in `os` and `posix`) with
    versions that refuse a path outside the working directory."""
    import posix

    inside = root.rstrip(os.sep) + os.sep

    def guarded(original):
        def call(path, *args, **kwargs):
            if isinstance(path, int) or kwargs.get("dir_fd") is not None:
                raise PermissionError("dir_fd is not allowed in the sandbox")
            full = os.path.realpath(os.path.dirname(os.path.abspath(os.fsdecode(path))))
            if not (full + os.sep).startswith(inside):
                raise PermissionError("creating nodes outside the sandbox is not allowed")
            return original(path, *args, **kwargs)

        return call

    for name in ("mkfifo", "mknod"):
        original = getattr(posix, name, None)
        if original is not None:
            setattr(posix, name, guarded(original))
            setattr(os, name, getattr(posix, name))


def _main():
    payload = json.loads(sys.stdin.buffer.read())
    nonce = payload.pop("nonce")
    verdict_fd = os.dup(1)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    if payload.get("block"):
        if "files" in payload["block"]:
            _guard_nodes(os.getcwd())
        sys.addaudithook(_make_hook(set(payload["block"]), os.getcwd()))
    tests = payload["tests"]
    passed = 0
    namespace = {"__name__": "solution", "__builtins__": __builtins__}
    try:
        exec(compile(payload["code"], "<solution>", "exec"), namespace)
        code_ok = True
    except BaseException:  # anything the solution raises, SystemExit included
        code_ok = False
    if code_ok:
        for test in tests:
            try:
                exec(compile(test, "<test>", "exec"), namespace)
                passed += 1
            except BaseException:
                pass
    os.write(verdict_fd, f"{nonce} {passed} {len(tests)}\n".encode())
    os._exit(0)


if __name__ == "__main__":
    _main()
