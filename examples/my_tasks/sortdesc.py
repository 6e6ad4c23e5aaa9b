"""A user task for `rollstream init-model --tasks` (README): sort digits in descending order."""

from rollstream.services.tasks import Task


def make(rng, difficulty):
    """Draw one item with `rng` only; return (prompt, answer)."""
    digits = "".join(rng.choice("0123456789") for _ in range(difficulty))
    return f"desc {digits}=", "".join(sorted(digits, reverse=True))


TASK = Task(name="sortdesc", make=make, default_difficulty=5)
