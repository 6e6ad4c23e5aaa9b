"""The built-in task families: addition, sorting digits, reversing letters, counting a letter.

Each prompt is plain ASCII ending in "=", and the answer is what follows it, e.g.
"add 47+385=" -> "432". A model completes after the "=" and stops with its end-of-sequence
token. Answers are short (at most difficulty + 1 characters), so rollouts are cheap.
"""

from __future__ import annotations

import random
import string

from rollstream.services.tasks.base import Task

COUNT_ALPHABET = "abcd"


def make_add(rng: random.Random, difficulty: int) -> tuple[str, str]:
    """Two numbers below 10**difficulty; the answer is their sum."""
    a, b = rng.randrange(10**difficulty), rng.randrange(10**difficulty)
    return f"add {a}+{b}=", str(a + b)


def make_sort(rng: random.Random, difficulty: int) -> tuple[str, str]:
    """`difficulty` random digits; the answer is the same digits in ascending order."""
    digits = "".join(rng.choice(string.digits) for _ in range(difficulty))
    return f"sort {digits}=", "".join(sorted(digits))


def make_reverse(rng: random.Random, difficulty: int) -> tuple[str, str]:
    """`difficulty` random lowercase letters; the answer is them reversed."""
    word = "".join(rng.choice(string.ascii_lowercase) for _ in range(difficulty))
    return f"rev {word}=", word[::-1]


def make_count(rng: random.Random, difficulty: int) -> tuple[str, str]:
    """`difficulty` letters from "abcd", then the letter to count; the answer is how many.

    The letter comes last, right before "=", where a small model finds it at a fixed offset
    (with it first, a 2-layer model did not learn the task in 1000 steps)."""
    word = "".join(rng.choice(COUNT_ALPHABET) for _ in range(difficulty))
    letter = rng.choice(COUNT_ALPHABET)
    return f"{word} count {letter}=", str(word.count(letter))


ADD = Task(
    name="add",
    make=make_add,
    description="sum of two numbers with up to `difficulty` digits: 'add 47+385=' -> '432'",
    default_difficulty=3,
    max_difficulty=12,
)
SORT = Task(
    name="sort",
    make=make_sort,
    description="sort `difficulty` digits ascending: 'sort 5318=' -> '1358'",
    default_difficulty=5,
    min_difficulty=2,
    max_difficulty=24,
)
REVERSE = Task(
    name="reverse",
    make=make_reverse,
    description="reverse `difficulty` letters: 'rev abcd=' -> 'dcba'",
    default_difficulty=5,
    min_difficulty=2,
    max_difficulty=24,
)
COUNT = Task(
    name="count",
    make=make_count,
    description="count one letter among `difficulty` letters: 'abba count b=' -> '2'",
    default_difficulty=8,
    min_difficulty=2,
    max_difficulty=24,
)

BUILTIN_TASKS: tuple[Task, ...] = (ADD, SORT, REVERSE, COUNT)
