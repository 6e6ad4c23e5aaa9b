"""Answer extraction and number parsing used by the matching rewards."""

from __future__ import annotations

import pytest

from rollstream.services.scorer.extract import extract, last_boxed, parse_number


def test_last_boxed_keeps_nested_braces_and_takes_the_last_one() -> None:
    text = r"first \boxed{1} then \boxed{\frac{1}{2}} done"
    assert last_boxed(text) == r"\frac{1}{2}"
    assert last_boxed(r"unclosed \boxed{3") is None
    assert last_boxed("no box") is None


@pytest.mark.parametrize(
    ("how", "text", "expected"),
    [
        ("auto", r"so \boxed{7}. <answer>8</answer>", "7"),
        ("auto", "think <answer> 8 </answer>", "8"),
        ("auto", "work\n#### 1,234\nbye", "1,234"),
        ("auto", "  plain answer \n", "plain answer"),
        ("answer_tag", "<answer>a</answer> <answer>b</answer>", "b"),
        ("hash", "no hash here", None),
        ("first_line", "\n 12 \nrest", "12"),
        ("last_line", "work\n  42  ", "42"),
        ("last_number", "3 apples and 4.5 pears", "4.5"),
        ("none", " x ", " x "),
    ],
)
def test_extract(how: str, text: str, expected: str | None) -> None:
    assert extract(text, how) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("42", 42.0),
        ("-3.5", -3.5),
        ("1,234", 1234.0),
        ("3/4", 0.75),
        ("-3/4", -0.75),
        (r"\frac{3}{4}", 0.75),
        (r"-\dfrac{1}{8}", -0.125),
        ("50%", 50.0),
        ("$12$", 12.0),
        ("7.", 7.0),
        ("1/0", None),
        ("nan", None),
        ("twelve", None),
        ("1,2", None),
        (None, None),
    ],
)
def test_parse_number(text: str | None, value: float | None) -> None:
    assert parse_number(text) == value
