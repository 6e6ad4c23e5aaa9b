"""What a task is: a generator of (prompt, answer) pairs, a checker, and a fixed held-out split.

Pure: no I/O, no torch. Everything here is a function of the arguments (and of a task's own
`make`), so the feed, the scorer and the evaluator agree on the same items without talking.

The held-out split is disjoint from training by construction: a prompt is held out when the
sha256 of `"<task name>\\0<prompt>"` falls in one bucket of `HOLDOUT_BUCKETS` (about 10 % of all
prompts). `Task.heldout` only ever returns such prompts and `Task.sample` never does, whatever
the seed or difficulty, so no training item can leak into the evaluation.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

HOLDOUT_BUCKETS = 10  # one bucket in ten is held out
HELDOUT_SIZE = 200
HELDOUT_SEED = 1_000_003  # fixed: the split never depends on a run's seed
_MAX_TRIES_PER_ITEM = 200


class TaskError(ValueError):
    """A task that cannot be found, loaded or used as asked (unknown name, bad difficulty...)."""


@dataclass(frozen=True)
class Item:
    """One prompt with its reference answer. `task_id` is stable: the same prompt of the same
    task always gets the same id, so running pass rates per prompt survive restarts."""

    task_id: str
    task: str
    prompt: str
    answer: str
    difficulty: int


def first_line(completion: str) -> str:
    """The answer part of a completion: text before the first newline, stripped of spaces."""
    return completion.split("\n", 1)[0].strip()


def exact_check(completion: str, answer: str, extract: Callable[[str], str] = first_line) -> bool:
    """True when the extracted completion equals the answer exactly."""
    return extract(completion) == answer.strip()


MakeFn = Callable[[random.Random, int], tuple[str, str]]


@dataclass(frozen=True)
class Task:
    """A verifiable task family.

    `make(rng, difficulty) -> (prompt, answer)` draws one item; it must use only `rng` for
    randomness. `check(completion, answer) -> bool` is the exact checker the scorer calls;
    by default it compares `extract(completion)` with the answer. Difficulties are integers in
    `[min_difficulty, max_difficulty]`.

    `source` is the dotted path a user task was loaded from (set by the registry). Items then
    carry it as their `task`, so any process - the scorer, the evaluator - can load the task
    from the item alone; the held-out split and task ids still hash the plain `name`."""

    name: str
    make: MakeFn
    description: str = ""
    default_difficulty: int = 1
    min_difficulty: int = 1
    max_difficulty: int = 64
    extract: Callable[[str], str] = first_line
    checker: Callable[[str, str], bool] | None = field(default=None, repr=False)
    source: str = ""

    @property
    def ref(self) -> str:
        """What items name this task by: the dotted path it was loaded from, else its name."""
        return self.source or self.name

    def __post_init__(self) -> None:
        if not self.name or any(c in self.name for c in " :/"):
            raise TaskError(f"task name {self.name!r} must be non-empty without ' ', ':' or '/'")
        if not self.min_difficulty <= self.default_difficulty <= self.max_difficulty:
            raise TaskError(f"{self.name}: default difficulty outside its bounds")

    def check(self, completion: str, answer: str) -> bool:
        """Exact verdict on one completion (the scorer's verifiable reward)."""
        if self.checker is not None:
            return bool(self.checker(completion, answer))
        return exact_check(completion, answer, self.extract)

    def resolve_difficulty(self, difficulty: int | None) -> int:
        d = self.default_difficulty if difficulty is None else int(difficulty)
        if not self.min_difficulty <= d <= self.max_difficulty:
            raise TaskError(
                f"{self.name}: difficulty {d} outside "
                f"[{self.min_difficulty}, {self.max_difficulty}]"
            )
        return d

    def item(self, prompt: str, answer: str, difficulty: int) -> Item:
        """Wrap a (prompt, answer) pair of this task as an Item with its stable id."""
        digest = hashlib.sha256(f"{self.name}\0{prompt}".encode()).hexdigest()
        return Item(
            f"{self.name}-d{difficulty}-{digest[:12]}", self.ref, prompt, answer, difficulty
        )

    def is_heldout(self, prompt: str) -> bool:
        """Whether `prompt` belongs to the held-out split (for every difficulty)."""
        digest = hashlib.sha256(f"{self.name}\0{prompt}".encode()).digest()
        return int.from_bytes(digest[:8], "big") % HOLDOUT_BUCKETS == 0

    def iter_train(self, seed: int, difficulty: int | None = None) -> Iterator[Item]:
        """Endless stream of training items (held-out prompts are skipped), same for a seed."""
        d = self.resolve_difficulty(difficulty)
        rng = random.Random(f"{self.name}/{d}/{seed}")
        misses = 0
        while True:
            prompt, answer = self.make(rng, d)
            if self.is_heldout(prompt):
                misses += 1
                if misses > _MAX_TRIES_PER_ITEM:
                    raise TaskError(f"{self.name}: difficulty {d} has no training prompts left")
                continue
            misses = 0
            yield self.item(prompt, answer, d)

    def sample(self, seed: int, count: int, difficulty: int | None = None) -> list[Item]:
        """`count` training items (repeats possible when the item space is small)."""
        stream = self.iter_train(seed, difficulty)
        return [next(stream) for _ in range(count)]

    def heldout(self, difficulty: int | None = None, size: int = HELDOUT_SIZE) -> list[Item]:
        """The fixed held-out split: up to `size` distinct held-out items, the same on every
        call and every machine. Smaller when the difficulty has fewer held-out prompts."""
        d = self.resolve_difficulty(difficulty)
        rng = random.Random(f"{self.name}/{d}/heldout/{HELDOUT_SEED}")
        seen: set[str] = set()
        items: list[Item] = []
        tries = 0
        while len(items) < size and tries < size * _MAX_TRIES_PER_ITEM:
            tries += 1
            prompt, answer = self.make(rng, d)
            if prompt in seen or not self.is_heldout(prompt):
                continue
            seen.add(prompt)
            items.append(self.item(prompt, answer, d))
        return items
