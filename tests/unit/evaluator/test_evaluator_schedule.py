"""The evaluator's schedule (newest version, at most every min_interval_s) and its items."""

from __future__ import annotations

from rollstream.services.evaluator.config import EvalTask, EvaluatorConfig
from rollstream.services.evaluator.service import EvalSchedule, eval_items
from rollstream.services.tasks import get_task


def test_schedule_takes_only_newer_versions_and_waits_the_interval() -> None:
    s = EvalSchedule(min_interval_s=30.0)
    assert not s.due(None, now=0.0)  # nothing published
    assert s.due(0, now=0.0)
    s.started(0, now=0.0)
    assert not s.due(0, now=100.0)  # already evaluated
    assert not s.due(3, now=29.0)  # too soon: v1..v3 wait
    assert s.due(3, now=30.0)  # then the newest, v3, skipping v1 and v2
    s.started(3, now=30.0)
    assert not s.due(2, now=500.0)  # an older version never


def test_tasks_come_from_the_evaluator_section_then_the_feed() -> None:
    own = EvaluatorConfig(tasks=[EvalTask(task="sort", difficulty=4)])
    assert own.task_entries({"tasks": [{"task": "add"}]}) == [("sort", 4)]
    feed_tasks = {"tasks": [{"task": "add", "difficulty": 3, "weight": 2.0}, {"task": "count"}]}
    assert EvaluatorConfig().task_entries(feed_tasks) == [("add", 3), ("count", None)]
    assert EvaluatorConfig().task_entries({"datasets": [{"path": "x.jsonl"}]}) == []
    default = EvaluatorConfig().task_entries({})
    assert [name for name, _ in default] == ["sort", "reverse", "count"]


def test_eval_items_are_the_head_of_each_fixed_heldout_split() -> None:
    items = eval_items([("add", 2), ("reverse", None)], per_task=5)
    reverse_d = get_task("reverse").default_difficulty
    assert [it.task_id for it in items[:5]] == [it.task_id for it in get_task("add").heldout(2, 5)]
    assert [it.task for it in items] == ["add"] * 5 + ["reverse"] * 5
    assert all(it.difficulty == reverse_d for it in items[5:])
    assert all(get_task(it.task).is_heldout(it.prompt) for it in items)
