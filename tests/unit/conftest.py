"""Fixtures for the unit tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest


@pytest.fixture
def user_code(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[str, str], None]:
    """`user_code(module, source)` writes a user's module, importable by that name in this
    test, as a dotted path in a run file would name it ("module:Object")."""

    def write(module: str, source: str) -> None:
        (tmp_path / f"{module}.py").write_text(source)
        monkeypatch.syspath_prepend(str(tmp_path))

    return write
