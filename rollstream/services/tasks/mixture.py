"""A mixture of task families at chosen difficulties: what a run trains and evaluates on.

A mixture is a list of `(name, difficulty, weight)`. `iter_items` draws training items from it
forever (deterministic for a seed); `heldout_items` is the union of each entry's fixed held-out
split. Pure: no I/O.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator, Sequence

from rollstream.services.tasks.base import HELDOUT_SIZE, Item, TaskError
from rollstream.services.tasks.registry import get_task

MixtureEntry = tuple[str, int, float]

# The default run: the families on which RL lifts the built-in base model fastest. `add` is
# left out: the tiny model learns it slowly by supervision and barely by RL (its errors are
# algorithmic), so in a 10-minute CPU run it only dilutes the held-out gain. Add it back with
# ("add", 2, 1.0) for a harder run.
DEFAULT_MIXTURE: tuple[MixtureEntry, ...] = (
    ("sort", 5, 1.0),
    ("reverse", 6, 1.0),
    ("count", 8, 1.0),
)


def _validate(tasks: Sequence[MixtureEntry]) -> list[MixtureEntry]:
    entries = [(str(n), int(d), float(w)) for n, d, w in tasks]
    if not entries:
        raise TaskError("a mixture needs at least one (name, difficulty, weight)")
    if any(w < 0 for _, _, w in entries) or sum(w for _, _, w in entries) <= 0:
        raise TaskError("mixture weights must be >= 0 with a positive sum")
    for name, d, _ in entries:
        get_task(name).resolve_difficulty(d)  # raises on an unknown task or a bad difficulty
    return entries


def iter_items(tasks: Sequence[MixtureEntry], seed: int) -> Iterator[Item]:
    """Endless training items: each draw picks an entry by weight, then an item of it."""
    entries = _validate(tasks)
    streams = [get_task(n).iter_train(seed * 1009 + i, d) for i, (n, d, _) in enumerate(entries)]
    weights = [w for _, _, w in entries]
    rng = random.Random(f"mixture/{seed}")
    while True:
        (stream,) = rng.choices(streams, weights=weights)
        yield next(stream)


def sample_items(tasks: Sequence[MixtureEntry], seed: int, count: int) -> list[Item]:
    """The first `count` items of `iter_items(tasks, seed)`."""
    stream = iter_items(tasks, seed)
    return [next(stream) for _ in range(count)]


def heldout(name: str, difficulty: int | None = None, size: int = HELDOUT_SIZE) -> list[Item]:
    """The fixed held-out split of one task at one difficulty."""
    return get_task(name).heldout(difficulty, size)


def heldout_items(
    tasks: Iterable[tuple[str, int] | MixtureEntry], size: int = HELDOUT_SIZE
) -> list[Item]:
    """Held-out items of every entry of a mixture (weights are ignored: each counts `size`)."""
    items: list[Item] = []
    for entry in tasks:
        items.extend(heldout(entry[0], entry[1], size))
    return items
