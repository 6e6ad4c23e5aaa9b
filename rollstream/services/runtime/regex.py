"""A regular-expression param and the matcher it configures, for the stages' pieces that check
a completion's format (the filter's `format` rule, the scorer's `format` reward). Pure.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Annotated, Literal

from pydantic import AfterValidator

MatchMode = Literal["fullmatch", "search"]


def _compiles(value: str) -> str:
    try:
        re.compile(value)
    except re.error as exc:
        raise ValueError(f"not a valid regular expression: {exc}") from None
    return value


Pattern = Annotated[str, AfterValidator(_compiles)]
"""A string field that must compile as a regular expression (Python syntax)."""


def matcher(pattern: str, mode: MatchMode, dotall: bool) -> Callable[[str], re.Match[str] | None]:
    """`pattern`'s fullmatch or search (per `mode`); with `dotall`, `.` also matches newlines."""
    regex = re.compile(pattern, re.DOTALL if dotall else 0)
    return regex.fullmatch if mode == "fullmatch" else regex.search
