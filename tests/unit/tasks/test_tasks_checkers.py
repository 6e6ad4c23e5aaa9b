"""Each built-in task: the prompt and answer it makes, and the exact checker the scorer uses."""

from __future__ import annotations

import pytest

from rollstream.services.tasks import Task, TaskError, get_task
from rollstream.services.tasks.builtin import make_add, make_count, make_reverse, make_sort


class ScriptedRng:
    """Returns scripted values in order: `randrange` and `choice` both take the next one."""

    def __init__(self, *values: object) -> None:
        self.values = list(values)

    def randrange(self, n: int) -> object:
        return self.values.pop(0)

    def choice(self, seq: object) -> object:
        return self.values.pop(0)


def test_each_family_makes_the_prompt_and_answer_by_hand():
    assert make_add(ScriptedRng(47, 385), 3) == ("add 47+385=", "432")
    assert make_add(ScriptedRng(99, 1), 2) == ("add 99+1=", "100")
    assert make_sort(ScriptedRng(*"53182"), 5) == ("sort 53182=", "12358")
    assert make_reverse(ScriptedRng(*"hello"), 5) == ("rev hello=", "olleh")
    assert make_count(ScriptedRng(*"abbacdbb", "b"), 8) == ("abbacdbb count b=", "4")
    assert make_count(ScriptedRng(*"aaaa", "d"), 4) == ("aaaa count d=", "0")


@pytest.mark.parametrize(
    ("completion", "answer", "right"),
    [
        ("432", "432", True),
        (" 432 ", "432", True),  # surrounding spaces are ignored
        ("432\nadd 1+1=2", "432", True),  # only the first line is the answer
        ("4320", "432", False),
        ("43", "432", False),
        ("", "432", False),
        ("\n432", "432", False),  # an empty first line is an empty answer
        ("0", "0", True),
        ("00", "0", False),
    ],
)
def test_the_checker_wants_the_exact_answer_on_the_first_line(completion, answer, right):
    for name in ("add", "sort", "reverse", "count"):
        assert get_task(name).check(completion, answer) is right


def test_every_heldout_answer_passes_its_own_checker_and_a_wrong_one_fails():
    for name, difficulty in (("add", 2), ("sort", 5), ("reverse", 6), ("count", 8)):
        task = get_task(name)
        for item in task.heldout(difficulty, size=50):
            assert task.check(item.answer, item.answer)
            assert not task.check(item.answer + "1", item.answer)


def test_answers_are_right_for_every_heldout_prompt():
    for item in get_task("add").heldout(3, size=100):
        a, b = item.prompt[len("add ") : -1].split("+")
        assert item.answer == str(int(a) + int(b))
    for item in get_task("sort").heldout(6, size=100):
        assert item.answer == "".join(sorted(item.prompt[len("sort ") : -1]))
    for item in get_task("reverse").heldout(6, size=100):
        assert item.answer == item.prompt[len("rev ") : -1][::-1]
    for item in get_task("count").heldout(8, size=100):
        word, _, letter = item.prompt[:-1].partition(" count ")
        assert len(word) == 8 and item.answer == str(word.count(letter))


def test_a_custom_extract_and_checker_replace_the_default():
    def make(rng, difficulty):
        return "say yes=", "yes"

    shouting = Task(name="shout", make=make, extract=lambda c: c.strip().lower())
    assert shouting.check("YES", "yes") and not shouting.check("no", "yes")
    lenient = Task(name="lenient", make=make, checker=lambda c, a: a in c)
    assert lenient.check("well, yes indeed", "yes")


def test_difficulty_outside_the_bounds_is_refused():
    with pytest.raises(TaskError, match="difficulty 1 outside"):
        get_task("sort").heldout(1)
    with pytest.raises(TaskError, match="difficulty 99 outside"):
        get_task("add").sample(0, 1, 99)
    with pytest.raises(TaskError, match="name"):
        Task(name="has space", make=make_add)
