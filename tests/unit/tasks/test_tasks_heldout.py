"""The held-out split is fixed and never shows up in training; mixtures are deterministic."""

from __future__ import annotations

import subprocess
import sys

import pytest

from rollstream.services.tasks import (
    DEFAULT_MIXTURE,
    TaskError,
    get_task,
    heldout,
    heldout_items,
    iter_items,
    sample_items,
)


def test_the_heldout_split_is_the_same_items_on_every_call():
    first = heldout("add", 2)
    assert first == heldout("add", 2)
    # pinned: a change here silently changes every reported accuracy
    assert (first[0].prompt, first[0].answer) == ("add 28+7=", "35")
    assert first[0].task_id == heldout("add", 2)[0].task_id
    assert [i.prompt for i in heldout("reverse", 6, size=50)] == [
        i.prompt for i in heldout("reverse", 6)[:50]
    ]


def test_each_default_entry_has_200_distinct_heldout_items():
    for name, difficulty, _ in DEFAULT_MIXTURE:
        items = heldout(name, difficulty)
        assert len(items) == 200
        assert len({i.prompt for i in items}) == 200
        assert all(i.task == name and i.difficulty == difficulty for i in items)


def test_training_items_never_include_a_heldout_prompt():
    held = {(i.task, i.prompt) for i in heldout_items(DEFAULT_MIXTURE)}
    train = sample_items(DEFAULT_MIXTURE, seed=3, count=5000)
    assert not held & {(i.task, i.prompt) for i in train}
    # also across difficulties: a prompt is held out for the task, whatever the difficulty
    add3 = {i.prompt for i in get_task("add").sample(seed=1, count=3000, difficulty=3)}
    assert not add3 & {i.prompt for i in heldout("add", 1)}


def test_small_item_spaces_give_a_smaller_split():
    items = heldout("add", 1)  # 100 possible prompts, about a tenth held out
    assert 0 < len(items) < 30
    assert all(get_task("add").is_heldout(i.prompt) for i in items)


def test_mixture_sampling_is_deterministic_and_follows_the_weights():
    a = sample_items(DEFAULT_MIXTURE, seed=7, count=400)
    assert a == sample_items(DEFAULT_MIXTURE, seed=7, count=400)
    assert a != sample_items(DEFAULT_MIXTURE, seed=8, count=400)
    only_sort = sample_items([("sort", 4, 1.0), ("add", 2, 0.0)], seed=0, count=200)
    assert {i.task for i in only_sort} == {"sort"}
    counts = {n: 0 for n, _, _ in DEFAULT_MIXTURE}
    for item in a:
        counts[item.task] += 1
    assert all(93 < c < 173 for c in counts.values()), counts  # about 133 each of 400
    stream = iter_items(DEFAULT_MIXTURE, seed=7)
    assert [next(stream) for _ in range(5)] == a[:5]


def test_same_prompt_same_task_id():
    item = heldout("sort", 5)[0]
    again = get_task("sort").item(item.prompt, item.answer, 5)
    assert again.task_id == item.task_id and item.task_id.startswith("sort-d5-")


@pytest.mark.parametrize(
    "bad",
    [[], [("add", 2, -1.0)], [("add", 2, 0.0)], [("nope", 1, 1.0)], [("sort", 0, 1.0)]],
)
def test_a_bad_mixture_is_refused(bad):
    with pytest.raises(TaskError):
        sample_items(bad, seed=0, count=1)


def test_the_tasks_package_does_not_import_torch():
    code = (
        "import sys, rollstream.services.tasks as t; t.heldout('add', 2); "
        "import rollstream.services.models; print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
