"""The README's init-model example task (examples/my_tasks) loads by dotted path and warms up."""

from __future__ import annotations

import random
import sys
from pathlib import Path

import pytest

from rollstream.services.tasks import get_task, heldout_items
from rollstream.services.tasks import registry as registry_mod

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


@pytest.fixture
def examples_on_path(monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLES))
    monkeypatch.setattr(registry_mod, "_REGISTRY", dict(registry_mod._REGISTRY))
    yield
    for name in [m for m in sys.modules if m.startswith("my_tasks")]:
        del sys.modules[name]


def test_sortdesc_draws_digits_and_their_descending_sort(examples_on_path):
    task = get_task("my_tasks.sortdesc")
    rng = random.Random(0)
    for _ in range(20):
        prompt, answer = task.make(rng, 5)
        digits = prompt.removeprefix("desc ").removesuffix("=")
        assert len(digits) == 5 and answer == "".join(sorted(digits, reverse=True))
    held = heldout_items([("my_tasks.sortdesc", 5, 1.0)])
    assert held and all(i.answer == "".join(sorted(i.answer, reverse=True)) for i in held)


@pytest.mark.slow
def test_init_model_leaves_the_example_task_partly_learnt(examples_on_path, tmp_path):
    """`rollstream init-model --tasks my_tasks.sortdesc@5 --gate 0.45` (the README's command,
    about 10 s on a CPU): right on some held-out items and wrong on others - what RL needs."""
    import json

    from rollstream.services.models import build

    out = tmp_path / "m"
    assert build.init_model_cli(str(out), 0, False, tasks="my_tasks.sortdesc@5", gate=0.45) == 0
    summary = json.loads((out / build.SUMMARY_FILE).read_text())
    assert summary["mixture"] == [["my_tasks.sortdesc", 5, 1.0]]
    assert 0.3 < summary["heldout"]["accuracy"] < 0.95, summary["heldout"]
    assert bad_gate(tmp_path) == 2


def bad_gate(tmp_path: Path) -> int:
    from rollstream.services.models import build

    return build.init_model_cli(str(tmp_path / "x"), 0, False, tasks="my_tasks.sortdesc", gate=2)
