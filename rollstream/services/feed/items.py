"""The feed's pool of candidate prompts and the order each epoch walks it in.

Reads: JSONL / Parquet dataset files (Parquet through pyarrow, if installed). Writes nothing.
Everything else is a pure function of its arguments, so a restarted feed with the same config
rebuilds the same pool, the same task ids and the same per-epoch order.

Task ids: a built-in task item keeps its task's id (`<task>-d<difficulty>-<hash of prompt>`);
a dataset row gets `<task>-<id_field value>` or `<task>-<hash of prompt and answer>`. Rows
with an id already in the pool are dropped (first one wins), so one epoch sends each id once.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rollstream.schemas import PromptTask, Sampling
from rollstream.services.feed.config import DatasetSpec, FeedConfig, TaskEntry
from rollstream.services.tasks import DEFAULT_MIXTURE, get_task, sample_items


class DatasetError(ValueError):
    """A dataset that cannot be read or mapped: missing file or field, bad line, no pyarrow."""


@dataclass(frozen=True)
class FeedItem:
    """One candidate prompt of the pool."""

    task_id: str
    task: str
    prompt: str
    answer: str | None
    reference: dict[str, Any] = field(default_factory=dict)

    def prompt_task(
        self,
        n: int,
        epoch: int,
        now: float,
        sampling: Sampling | None = None,
        template: str | None = None,
    ) -> PromptTask:
        """The `prompts` message that asks for `n` samples of this item."""
        return PromptTask(
            task_id=self.task_id,
            task=self.task,
            prompt=self.prompt,
            n=n,
            answer=self.answer,
            reference=self.reference,
            sampling=sampling,
            template=template,  # type: ignore[arg-type]
            epoch=epoch,
            produced_at=now,
        )


def mixture_pool(tasks: Sequence[TaskEntry] | None, seed: int, size: int) -> list[FeedItem]:
    """`size` draws from the task mixture (DEFAULT_MIXTURE when `tasks` is None), deduplicated."""
    if tasks is None:
        entries = list(DEFAULT_MIXTURE)
    else:
        entries = [
            (t.task, get_task(t.task).resolve_difficulty(t.difficulty), t.weight) for t in tasks
        ]
    items = (
        FeedItem(it.task_id, it.task, it.prompt, it.answer)
        for it in sample_items(entries, seed, size)
    )
    return dedup(items)


def dedup(items: Iterable[FeedItem]) -> list[FeedItem]:
    """Items in order, without a second item of an id already seen."""
    seen: set[str] = set()
    out: list[FeedItem] = []
    for it in items:
        if it.task_id not in seen:
            seen.add(it.task_id)
            out.append(it)
    return out


def _get(row: dict[str, Any], path: str) -> Any:
    cur: Any = row
    for part in path.split("."):
        if not isinstance(cur, dict) or part not in cur:
            raise KeyError(path)
        cur = cur[part]
    return cur


def row_item(row: dict[str, Any], spec: DatasetSpec, where: str) -> FeedItem:
    """Map one dataset row onto a FeedItem; DatasetError names the row and the field."""
    try:
        prompt = _get(row, spec.prompt_field)
    except KeyError:
        raise DatasetError(f"{where}: no prompt field {spec.prompt_field!r}") from None
    if not isinstance(prompt, str):
        raise DatasetError(f"{where}: prompt field {spec.prompt_field!r} is not a string")
    answer: str | None = None
    if spec.answer_field is not None:
        try:
            value = _get(row, spec.answer_field)
        except KeyError:
            raise DatasetError(f"{where}: no answer field {spec.answer_field!r}") from None
        answer = value if isinstance(value, str) else json.dumps(value, default=str)
    if spec.id_field is not None:
        try:
            task_id = f"{spec.task}-{_get(row, spec.id_field)}"
        except KeyError:
            raise DatasetError(f"{where}: no id field {spec.id_field!r}") from None
    else:
        digest = hashlib.sha256(f"{spec.task}\0{prompt}\0{answer}".encode()).hexdigest()
        task_id = f"{spec.task}-{digest[:12]}"
    if spec.reference == "rest":
        used = {spec.prompt_field, spec.answer_field, spec.id_field}
        reference = {k: v for k, v in row.items() if k not in used}
    else:
        reference = {}
        for path in spec.reference:
            try:
                reference[path] = _get(row, path)
            except KeyError:
                raise DatasetError(f"{where}: no reference field {path!r}") from None
    return FeedItem(task_id, spec.task, prompt, answer, reference)


def _jsonl_rows(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DatasetError(f"{where}: not valid JSON: {exc}") from None
            if not isinstance(row, dict):
                raise DatasetError(f"{where}: expected a JSON object, got {type(row).__name__}")
            yield where, row


def _parquet_rows(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise DatasetError(
            f"{path}: reading Parquet needs the `pyarrow` package (pip install pyarrow),"
            " or convert the file to JSONL"
        ) from None
    index = 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=4096):
        for row in batch.to_pylist():
            index += 1
            yield f"{path} row {index}", row


def load_dataset(spec: DatasetSpec) -> list[FeedItem]:
    """Every row of one dataset file as FeedItems (up to `limit`), duplicates removed."""
    path = Path(spec.path).expanduser()
    if not path.is_file():
        raise DatasetError(f"dataset file {path} does not exist")
    fmt = spec.format
    if fmt == "auto":
        suffix = path.suffix.lower()
        if suffix in (".jsonl", ".ndjson", ".json"):
            fmt = "jsonl"
        elif suffix in (".parquet", ".pq"):
            fmt = "parquet"
        else:
            raise DatasetError(f"{path}: cannot tell the format from {suffix!r}; set `format`")
    rows = _jsonl_rows(path) if fmt == "jsonl" else _parquet_rows(path)
    items: list[FeedItem] = []
    for where, row in rows:
        if spec.limit is not None and len(items) >= spec.limit:
            break
        items.append(row_item(row, spec, where))
    if not items:
        raise DatasetError(f"{path}: no rows")
    return dedup(items)


def build_pool(cfg: FeedConfig, seed: int) -> list[FeedItem]:
    """The whole pool: task-mixture draws (if any) then every dataset's rows."""
    items: list[FeedItem] = []
    if cfg.tasks or (cfg.tasks is None and not cfg.datasets):
        items += mixture_pool(cfg.tasks, seed, cfg.pool_size)
    for spec in cfg.datasets:
        items += load_dataset(spec)
    return dedup(items)


def epoch_order(size: int, seed: int, epoch: int, shuffle: bool = True) -> list[int]:
    """Indices into the pool in the order epoch `epoch` sends them (same for a seed)."""
    order = list(range(size))
    if shuffle:
        random.Random(f"feed/{seed}/{epoch}").shuffle(order)
    return order


def fingerprint(pool: Sequence[FeedItem], seed: int, shuffle: bool) -> str:
    """Short id of a pool and its order: a restart resumes only where this matches."""
    h = hashlib.sha256(f"{seed}\0{shuffle}\0".encode())
    for it in pool:
        h.update(it.task_id.encode())
        h.update(b"\0")
    return h.hexdigest()[:16]
