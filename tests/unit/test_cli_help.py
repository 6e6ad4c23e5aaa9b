"""`--help` answers for every command a user can type, including `rollstream run`."""

from __future__ import annotations

import pytest

from rollstream.services.cli import STAGES, build_parser, main


def test_run_help_lists_the_stages(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: rollstream run STAGE")
    assert all(f"  {s} " in out for s in STAGES)


def test_every_subcommand_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    ap = build_parser()
    sub = next(a for a in ap._actions if a.dest == "cmd")
    for name in sub.choices:  # type: ignore[union-attr]
        if name == "run":
            continue
        with pytest.raises(SystemExit) as exc:
            main([name, "--help"])
        assert exc.value.code == 0, name
        canonical = "playback" if name == "replay" else name  # the old name is an alias
        assert capsys.readouterr().out.startswith(f"usage: rollstream {canonical}")
