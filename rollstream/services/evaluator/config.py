"""Evaluator settings (the `evaluator:` block of a run file). Pure config; no I/O."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class EvalTask(BaseModel):
    """One task whose fixed held-out split is evaluated."""

    model_config = ConfigDict(extra="forbid")

    task: str = Field(min_length=1)
    """Task name (`add`, `sort`, ...) or a user task's dotted path."""
    difficulty: int | None = Field(None, ge=1)
    """Difficulty of the held-out items; None = the task's default."""


class EvaluatorConfig(BaseModel):
    """Held-out greedy accuracy of each new policy version, at most every `min_interval_s`."""

    model_config = ConfigDict(extra="forbid")

    tasks: list[EvalTask] | None = None
    """Tasks to evaluate. None = the run's `feed.tasks` (their difficulties), or the built-in
    default mixture when the feed uses that."""
    items_per_task: int = Field(100, ge=1, le=10_000)
    """Held-out items per task (the first ones of its fixed split; at most the split's size)."""
    batch_size: int = Field(64, ge=1, le=4096)
    """Prompts per greedy generate call."""
    max_new_tokens: int = Field(32, ge=1, le=8192)
    """Longest completion generated per held-out prompt."""
    min_interval_s: float = Field(30.0, ge=0)
    """Least time between the starts of two evaluations; versions published in between are
    skipped and the newest one is evaluated."""
    evaluate_initial: bool = True
    """Evaluate the starting model as version 0 when no newer version is published yet."""
    evaluate_final: bool = True
    """When stopping, evaluate the newest version if it was not (`min_interval_s` skips
    versions; without this the policy a run ends with would have no accuracy). `rollstream up`
    stops the evaluator after the learner has exited, so this is the run's last version."""
    evaluate_final_max_s: float = Field(20.0, ge=0)
    """Skip that last evaluation when it would end more than this after the stop began to be
    handled: the time spent reading and loading the last weights, plus as long as the
    evaluation before took. A stop may have to finish the evaluation in progress too, within
    `up`'s 60 s and the pod's grace period."""
    device: str = "auto"
    """torch device: auto (cuda when available, else cpu), cpu, cuda, cuda:1 ..."""
    threads: int | None = Field(None, ge=1)
    """torch CPU threads (None = torch's default)."""

    def task_entries(self, feed_section: dict[str, Any]) -> list[tuple[str, int | None]]:
        """(task, difficulty) pairs to evaluate: this section's, else the feed's task mixture,
        else the default mixture when the feed uses it; [] when the feed has only datasets."""
        if self.tasks is not None:
            return [(t.task, t.difficulty) for t in self.tasks]
        tasks = feed_section.get("tasks")
        if tasks is not None:
            return [(str(t["task"]), t.get("difficulty")) for t in tasks]
        if feed_section.get("datasets"):
            return []
        from rollstream.services.tasks import DEFAULT_MIXTURE

        return [(name, difficulty) for name, difficulty, _ in DEFAULT_MIXTURE]
