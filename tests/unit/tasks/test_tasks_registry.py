"""Finding tasks by name, and loading a user's task from a module by dotted path."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

import rollstream.services.tasks as tasks_pkg
from rollstream.services.tasks import TaskError, get_task, list_tasks, load_task, sample_items
from rollstream.services.tasks import registry as registry_mod


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    """A package `my_tasks` on sys.path whose module `parity` is the README's example."""
    pkg = tmp_path / "my_tasks"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    # the example from the package docstring, verbatim
    doc = tasks_pkg.__doc__ or ""
    example = doc.split("```python\n", 1)[1].split("```", 1)[0]
    (pkg / "parity.py").write_text(example)
    (pkg / "other.py").write_text(
        textwrap.dedent(
            """
            from rollstream.services.tasks import Task

            def make(rng, difficulty):
                n = rng.randrange(10 ** difficulty)
                return f"double {n}=", str(2 * n)

            DOUBLE = Task(name="double", make=make, default_difficulty=2)
            NOT_A_TASK = 42
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry_mod, "_REGISTRY", dict(registry_mod._REGISTRY))
    yield "my_tasks"
    for name in [m for m in sys.modules if m.startswith("my_tasks")]:
        del sys.modules[name]


def test_the_builtins_are_listed_and_found():
    assert list_tasks()[:4] == ["add", "sort", "reverse", "count"]
    assert get_task("reverse").name == "reverse"
    with pytest.raises(TaskError, match="unknown task 'nope'"):
        get_task("nope")


def test_a_user_task_loads_by_dotted_path_and_then_by_its_name(user_module):
    task = get_task("my_tasks.parity")
    assert task.name == "parity"
    prompt, answer = task.make(__import__("random").Random(0), 6)
    assert prompt.startswith("parity ") and answer == str(prompt[7:-1].count("1") % 2)
    assert get_task("parity") is task and "parity" in list_tasks()
    assert get_task("my_tasks.parity:TASK") is task  # another spelling, the same task
    assert list_tasks().count("parity") == 1
    items = task.heldout(6, size=20)
    assert items and all(task.check(i.answer, i.answer) for i in items)
    mixed = sample_items([("my_tasks.parity", 6, 1.0), ("add", 2, 1.0)], seed=0, count=50)
    assert {i.task for i in mixed} == {"my_tasks.parity", "add"}
    assert all(i.task_id.startswith(("parity-d6-", "add-d2-")) for i in mixed)


def test_another_process_checks_a_user_item_from_the_item_alone(user_module, tmp_path):
    item = get_task("my_tasks.parity").heldout(6, size=1)[0]
    assert item.task == "my_tasks.parity"
    code = (
        "import sys; from rollstream.services.tasks import get_task; "
        f"t = get_task({item.task!r}); "
        f"print(t.check({item.answer!r}, {item.answer!r}), t.is_heldout({item.prompt!r}))"
    )
    env = {**__import__("os").environ, "PYTHONPATH": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.strip() == "True True", out.stderr


def test_a_user_task_loads_by_module_and_object(user_module):
    task = load_task("my_tasks.other:DOUBLE")
    assert task.name == "double"
    assert task.check("84", task.make(_Fixed(42), 2)[1])


@pytest.mark.parametrize(
    ("path", "error"),
    [
        ("my_tasks.missing", "cannot import"),
        ("my_tasks.other", "defines no 'TASK'"),
        ("my_tasks.other:NOT_A_TASK", "not a rollstream Task"),
    ],
)
def test_bad_dotted_paths_say_what_is_wrong(user_module, path, error):
    with pytest.raises(TaskError, match=error):
        get_task(path)


class _Fixed:
    def __init__(self, n: int) -> None:
        self.n = n

    def randrange(self, _: int) -> int:
        return self.n
