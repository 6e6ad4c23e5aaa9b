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


def test_every_option_and_argument_says_what_it_does() -> None:
    """A user reading `rollstream CMD --help` sees a line for each option, not a bare name."""
    ap = build_parser()
    sub = next(a for a in ap._actions if a.dest == "cmd")
    bare = [
        f"{name} {action.option_strings or action.dest}"
        for name, parser in sub.choices.items()  # type: ignore[union-attr]
        for action in parser._actions
        if not action.help and action.dest != "help"
    ]
    assert bare == []


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    from importlib.metadata import version

    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"rollstream {version('rollstream')}"


def test_init_model_refuses_flags_that_would_do_nothing(capsys, tmp_path) -> None:
    """--gate without a warm-up of tasks or a dataset, and a --plugins folder that is not
    there, are errors (both were silently ignored), before any model is built."""
    assert main(["init-model", "--gate", "0.3", "--out", str(tmp_path / "m")]) == 2
    assert "--gate applies to --tasks or --dataset" in capsys.readouterr().err
    missing = tmp_path / "nope"
    assert main(["init-model", "--plugins", str(missing), "--tasks", "sort", "--out", "x"]) == 2
    assert f"--plugins {missing}: no such folder" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()
