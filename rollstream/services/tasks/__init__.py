"""Built-in verifiable tasks, their fixed held-out splits and exact checkers (light: no torch).

Used by the feed (what to ask), the scorer (`get_task(name).check(completion, answer)`) and
the evaluator (`heldout_items(mixture)`). Four families ship: `add`, `sort`, `reverse`,
`count`; each has an integer difficulty.

Adding a task takes one small module on the Python path that defines `TASK`:

```python
# my_tasks/parity.py
from rollstream.services.tasks import Task


def make(rng, difficulty):
    # Draw one item; use only `rng` for randomness. Returns (prompt, answer).
    bits = "".join(rng.choice("01") for _ in range(difficulty))
    return f"parity {bits}=", str(bits.count("1") % 2)


TASK = Task(name="parity", make=make, default_difficulty=6)
```

Then `get_task("my_tasks.parity")` (or `"my_tasks.parity:TASK"`) loads it, and a mixture
entry `("my_tasks.parity", 6, 1.0)` trains on it. By default a completion is right when its
first line, stripped, equals the answer; pass `extract=` or `checker=` to `Task` to change
that. The held-out split (about 10 % of prompts, chosen by hashing the prompt) comes for free.
"""

from rollstream.services.tasks.base import (
    HELDOUT_SIZE,
    Item,
    Task,
    TaskError,
    exact_check,
    first_line,
)
from rollstream.services.tasks.builtin import BUILTIN_TASKS
from rollstream.services.tasks.mixture import (
    DEFAULT_MIXTURE,
    MixtureEntry,
    heldout,
    heldout_items,
    iter_items,
    sample_items,
)
from rollstream.services.tasks.registry import get_task, list_tasks, load_task, register

__all__ = [
    "BUILTIN_TASKS",
    "DEFAULT_MIXTURE",
    "HELDOUT_SIZE",
    "Item",
    "MixtureEntry",
    "Task",
    "TaskError",
    "exact_check",
    "first_line",
    "get_task",
    "heldout",
    "heldout_items",
    "iter_items",
    "list_tasks",
    "load_task",
    "register",
    "sample_items",
]
