"""`--where` expressions: what they match, and that nothing but the whitelist gets through."""

from __future__ import annotations

import pytest

from rollstream.services.tools.where import Where, WhereError, resolve_path

SCORED = {
    "schema": "ScoredRollout",
    "v": 1,
    "reward": 0.75,
    "rewards": {"correct": 1.0, "format": 0.5},
    "correct": None,
    "rollout": {
        "task": "add",
        "policy_version": 3,
        "finish_reason": "length",
        "completion": "x = 12",
        "completion_ids": [40, 41, 42],
        "sampling": {"temperature": 0.7},
    },
    "timed_out": ["slow_judge"],
}


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("reward > 0.5 and policy_version >= 3", True),
        ("reward > 0.8 and policy_version >= 3", False),
        ('task == "add" or not correct', True),
        ('task == "mul" or correct', False),
        ("not correct", True),  # None is falsy
        ("correct is None", True),
        ('rollout.finish_reason == "length"', True),
        ("rollout.sampling.temperature < 1", True),
        ("len(completion) > 10", False),
        ("len(completion) == 6", True),
        ('"x" in completion', True),
        ('"y" not in completion', True),
        ("len(completion_ids) == 3 and 41 in completion_ids", True),
        ('task in ("add", "mul")', True),
        ('task in ["mul", "div"]', False),
        ('rewards["format"] * 2 == 1', True),
        ("rollout.completion_ids[-1] == 42", True),
        ("0 < reward < 1", True),
        ("0 < reward < 0.5", False),
        ("-reward == -0.75", True),
        ("reward + 0.25 == 1 and reward - 0.25 == 0.5 and reward / 3 == 0.25", True),
        ("policy_version % 2 == 1 and policy_version // 2 == 1", True),
        ("abs(-reward) == 0.75 and min(reward, 0.5) == 0.5 and max(1, 2, 3) == 3", True),
        ('timed_out[0] == "slow_judge"', True),
        ('task + "!" == "add!"', True),
    ],
)
def test_expression_matches_message(expr: str, expected: bool) -> None:
    assert Where(expr).matches(SCORED) is expected


def test_top_level_field_wins_over_the_nested_rollout() -> None:
    msg = {"schema": "ScoredRollout", "produced_at": 2.0, "rollout": {"produced_at": 1.0}}
    assert Where("produced_at == 2").matches(msg)
    assert Where("rollout.produced_at == 1").matches(msg)


@pytest.mark.parametrize(
    "expr",
    [
        "__import__('os')",
        "__import__('os').system('true')",
        "().__class__",
        "().__class__.__bases__[0].__subclasses__()",
        "reward.__class__",
        "rollout._secret",
        "_hidden",
        'rewards["__class__"]',
        "open('/etc/passwd')",
        "eval('1')",
        "exec('x = 1')",
        "getattr(reward, 'real')",
        "completion.upper()",
        "lambda: 1",
        "[x for x in completion]",
        "{x: 1 for x in completion}",
        "(x for x in completion)",
        "{1, 2}",
        "{'a': 1}",
        "reward ** 1000000",
        "reward if correct else 0",
        "(y := 1)",
        "f'{reward}'",
        "b'bytes'",
        "rewards[task]",
        "len(*completion_ids)",
        "max(completion_ids, key=abs)",
        "len",
        "reward << 2",
        "~policy_version",
        "...",
    ],
)
def test_anything_outside_the_whitelist_is_refused_at_parse_time(expr: str) -> None:
    with pytest.raises(WhereError):
        Where(expr)


@pytest.mark.parametrize(
    ("expr", "error"),
    [
        ("__import__('os')", "calling __import__\\(\\) is not allowed"),
        ("().__class__", "'__class__'"),
        ("lambda: 1", "Lambda"),
        ("reward >", "invalid expression"),
        (" or ".join(["reward > 0"] * 400), "longer than"),
    ],
    ids=["import", "dunder", "lambda", "syntax", "long"],
)
def test_refusals_say_what_was_wrong(expr: str, error: str) -> None:
    with pytest.raises(WhereError, match=error):
        Where(expr)


def test_field_names_are_checked_against_the_message_type_when_given() -> None:
    fields = {"schema", "v", "reward", "rollout", "task"}
    assert Where("reward > 0 and task == 'add'", fields).matches(SCORED)
    with pytest.raises(WhereError, match="unknown field 'rewrd'; fields: .*reward"):
        Where("rewrd > 0.5", fields)


def test_evaluation_errors_are_where_errors_not_crashes() -> None:
    with pytest.raises(WhereError, match="no field 'pass_rate'"):
        Where("pass_rate > 0.5").matches(SCORED)
    with pytest.raises(WhereError, match="cannot compare None"):
        Where("correct > 0").matches(SCORED)
    with pytest.raises(WhereError, match="needs numbers"):
        Where('completion * 1000000000 == ""').matches(SCORED)  # no string blow-up
    with pytest.raises(WhereError, match="needs numbers"):
        Where('"%s" % task').matches(SCORED)  # no format strings
    with pytest.raises(WhereError, match="division by zero"):
        Where("reward / 0 > 1").matches(SCORED)
    with pytest.raises(WhereError, match="no item"):
        Where("completion_ids[9] == 1").matches(SCORED)


def test_resolve_path_follows_dots_and_indexes() -> None:
    assert resolve_path(SCORED, "rollout.sampling.temperature") == 0.7
    assert resolve_path(SCORED, "finish_reason") == "length"
    assert resolve_path(SCORED, "rollout.completion_ids.1") == 41
    with pytest.raises(WhereError):
        resolve_path(SCORED, "rollout.nothing")
