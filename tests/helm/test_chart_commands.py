"""Every `rollstream` command the chart runs or tells the user to run parses with the real
argument parsers: `build_parser()` for the subcommand, and for `run <stage>` the parser that
stage's `main()` builds (stage_parser() plus its own flags, such as the generator's --model)."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import shlex
from collections.abc import Callable
from typing import Any

import pytest
from helmchart import ROOT, STAGES, VALUE_SETS, Rendered, container_env, expand

from rollstream.services.cli import build_parser
from rollstream.services.runtime.stage import StageContext, stage_parser


def _entrypoint() -> list[str]:
    import json

    for line in (ROOT / "Dockerfile").read_text().splitlines():
        if line.startswith("ENTRYPOINT"):
            return json.loads(line.split(None, 1)[1])
    raise AssertionError("Dockerfile has no ENTRYPOINT")


class _Captured(Exception):
    pass


def stage_argparser(stage: str, monkeypatch: pytest.MonkeyPatch) -> argparse.ArgumentParser:
    """The parser `rollstream run <stage>` uses: main() builds it and hands it to
    StageContext.from_argv (the contract in runtime/stage.py), where we catch it."""
    mod = importlib.import_module(f"rollstream.services.{stage}.main")
    seen: dict[str, argparse.ArgumentParser] = {}

    def capture(cls: Any, name: str, argv: list[str], parser: Any = None) -> None:
        seen["parser"] = parser or stage_parser(name)
        raise _Captured

    with monkeypatch.context() as m:
        m.setattr(StageContext, "from_argv", classmethod(capture))
        with pytest.raises(_Captured):
            mod.main([])
    return seen["parser"]


def parse_error(parser: argparse.ArgumentParser, argv: list[str]) -> str | None:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            parser.parse_args(argv)
        except SystemExit as exc:
            return err.getvalue().strip() or f"exit {exc.code}"
    return None


def check_command(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """argv without the program name; fails the test with argparse's message."""
    top = build_parser()
    msg = parse_error(top, argv)
    assert msg is None, f"rollstream {shlex.join(argv)}: {msg}"
    args = top.parse_args(argv)
    if args.cmd == "run":
        msg = parse_error(stage_argparser(args.stage, monkeypatch), args.args)
        assert msg is None, f"rollstream {shlex.join(argv)}: {msg}"


def _containers(r: Rendered) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for d in r.docs:
        spec = d.get("spec", {}).get("template", {}).get("spec", {})
        for c in spec.get("initContainers", []) + spec.get("containers", []):
            out.append((f"{d['kind']} {d['metadata']['name']}", c))
    return out


@pytest.mark.parametrize("name", VALUE_SETS)
def test_container_commands_exist(
    render_set: Callable[[str], Rendered], name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    r = render_set(name)
    checked = set()
    for where, c in _containers(r):
        argv = expand(list(c.get("command") or _entrypoint()) + list(c.get("args", [])), {})
        argv = expand(argv, container_env(c))
        assert argv[0] == "rollstream", f"{where}: runs {argv[0]}"
        check_command(argv[1:], monkeypatch)
        checked.add(argv[2] if argv[1] == "run" else argv[1])
    stages = {s for s in STAGES if r.values[s]["enabled"]}
    assert stages <= checked, "some stage containers were not checked"


def test_notes_commands_exist(
    render_set: Callable[[str], Rendered], monkeypatch: pytest.MonkeyPatch
) -> None:
    notes = render_set("default").notes
    cmds = [line.split(" -- ", 1)[1] for line in notes.splitlines() if " -- rollstream " in line]
    assert any(c.startswith("rollstream tap rollouts.raw --follow") for c in cmds), notes
    for cmd in cmds:
        check_command(shlex.split(cmd)[1:], monkeypatch)


def test_a_wrong_flag_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """The check itself: an unknown stage flag and an unknown subcommand fail it."""
    with pytest.raises(AssertionError, match="unrecognized arguments: --batch"):
        check_command(["run", "generator", "--batch", "4"], monkeypatch)
    with pytest.raises(AssertionError, match="invalid choice"):
        check_command(["topic", "create"], monkeypatch)
    check_command(["run", "generator", "--backend", "vllm", "--model", "/m"], monkeypatch)
