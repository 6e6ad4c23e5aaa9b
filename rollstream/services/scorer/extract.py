"""Pull the final answer out of a completion, and read numbers written in the usual ways.

Pure string functions shared by the matching rewards. `extract(text, "auto")` tries, in order,
the last `\\boxed{...}`, the last `<answer>...</answer>`, the text after the last `####`, and
falls back to the whole completion stripped.
"""

from __future__ import annotations

import math
import re
from fractions import Fraction
from typing import Literal

Extraction = Literal[
    "auto", "boxed", "answer_tag", "hash", "first_line", "last_line", "last_number", "none"
]

_ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:/\d+)?|-?\.\d+")
_FRAC = re.compile(r"^(-?)\\[dt]?frac\{\s*(-?[\d.]+)\s*\}\{\s*(-?[\d.]+)\s*\}$")
_THOUSANDS = re.compile(r"^-?\d{1,3}(,\d{3})+(\.\d+)?$")


def last_boxed(text: str) -> str | None:
    """Content of the last `\\boxed{...}` (or `\\fbox{...}`), braces balanced; None if absent."""
    start = max(text.rfind("\\boxed{"), text.rfind("\\fbox{"))
    if start < 0:
        return None
    i = text.index("{", start) + 1
    depth = 1
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i:j].strip()
    return None


def answer_tag(text: str) -> str | None:
    """Content of the last `<answer>...</answer>`; None if absent."""
    found = _ANSWER_TAG.findall(text)
    return found[-1].strip() if found else None


def after_hash(text: str) -> str | None:
    """Text after the last `####` (GSM8K style), up to the end of that line; None if absent."""
    pos = text.rfind("####")
    if pos < 0:
        return None
    return text[pos + 4 :].strip().split("\n", 1)[0].strip()


def last_number(text: str) -> str | None:
    """The last number-looking token (`-1,234.5`, `3/4`, `.5`); None if there is none."""
    found = _NUMBER.findall(text)
    return found[-1] if found else None


def extract(text: str, how: Extraction = "auto") -> str | None:
    """The answer part of `text` according to `how`; None when that pattern is absent."""
    if how == "auto":
        for fn in (last_boxed, answer_tag, after_hash):
            found = fn(text)
            if found is not None:
                return found
        return text.strip()
    if how == "boxed":
        return last_boxed(text)
    if how == "answer_tag":
        return answer_tag(text)
    if how == "hash":
        return after_hash(text)
    if how == "last_number":
        return last_number(text)
    if how == "first_line":
        return text.strip().split("\n", 1)[0].strip()
    if how == "last_line":
        return text.strip().rsplit("\n", 1)[-1].strip()
    return text


def parse_number(text: str | None) -> float | None:
    """The value of a number written as `42`, `-3.5`, `1,234`, `3/4`, `\\frac{3}{4}`, `50%`
    (as 50), `$12`, with surrounding `$`/spaces/trailing period ignored; None otherwise."""
    if text is None:
        return None
    s = text.strip().strip("$").strip().rstrip(".").replace(" ", "")
    s = s.removeprefix("\\(").removesuffix("\\)").removesuffix("\\%").removesuffix("%")
    if _THOUSANDS.match(s):
        s = s.replace(",", "")
    frac = _FRAC.match(s)
    if frac:
        sign, num, den = frac.groups()
        s = f"{sign}{num}/{den}"
    try:
        if "/" in s:
            num, den = s.split("/", 1)
            value = float(Fraction(num) / Fraction(den))
        else:
            value = float(s)
    except (ValueError, ZeroDivisionError):
        return None
    return value if math.isfinite(value) else None
