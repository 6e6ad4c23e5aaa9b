"""`rollstream init-model --tasks/--dataset`: the built-in model warmed up on a user's tasks or
a JSONL file instead of the default mixture, written where the user says (never over the
default run's model)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from rollstream.services.models.build import init_model, init_model_cli, parse_tasks, tiny_settings
from rollstream.services.tasks import TaskError

SAMPLE = Path(__file__).resolve().parents[3] / "examples" / "data" / "gsm8k_sample.jsonl"


def test_tasks_parse_with_difficulties_and_an_unknown_task_is_named() -> None:
    from rollstream.services.tasks import get_task

    default = get_task("reverse").default_difficulty
    assert parse_tasks("sort@4, reverse") == [("sort", 4, 1.0), ("reverse", default, 1.0)]
    with pytest.raises(TaskError, match="nosuchtask"):
        parse_tasks("add,nosuchtask")


def test_tasks_without_out_are_refused_so_the_default_model_stays(capsys) -> None:
    assert init_model_cli(None, 0, False, tasks="add") == 2
    assert "--out" in capsys.readouterr().err


def test_a_jsonl_dataset_becomes_a_task_with_its_hash_answers() -> None:
    from rollstream.services.models.warmup import dataset_task
    from rollstream.services.tasks import get_task

    task = dataset_task(str(SAMPLE), "gsm8k_sample", "question", "answer")
    assert get_task("gsm8k_sample") is task
    items = task.sample(0, 20)
    rows = [json.loads(x) for x in SAMPLE.read_text().splitlines()]
    by_q = {r["question"]: r["answer"].rsplit("####", 1)[1].strip() for r in rows}
    assert all(by_q[it.prompt] == it.answer for it in items)
    assert task.check(items[0].answer + "\nmore text", items[0].answer)
    held = {it.prompt for it in task.heldout(size=10)}
    assert held and not held & {it.prompt for it in items}


def test_init_model_warms_up_on_the_given_mixture_only(tmp_path: Path) -> None:
    spec, warm = tiny_settings(steps=4)
    warm = replace(warm, mixture=parse_tasks("reverse@2"), sft_weights={}, check_every=2)
    summary = init_model(tmp_path / "m", spec=spec, warmup=warm, log=lambda _: None)
    assert summary["mixture"] == [["reverse", 2, 1.0]]
    assert set(summary["heldout"]["per_task"]) == {"reverse"}
    assert (tmp_path / "m" / "model.safetensors").exists()
