"""The feed's pool: task mixtures, dataset mapping, stable ids and per-epoch order."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import pytest

from rollstream.services.feed.config import DatasetSpec, FeedConfig, TaskEntry
from rollstream.services.feed.items import (
    DatasetError,
    build_pool,
    epoch_order,
    fingerprint,
    load_dataset,
    mixture_pool,
)

ROWS = [
    {"question": "What is 2+3?", "answer": 5, "meta": {"source": "gsm", "level": 1}, "uid": "a"},
    {
        "question": "What is 7*6?",
        "answer": "42",
        "meta": {"source": "math", "level": 2},
        "uid": "b",
    },
    {"question": "What is 2+3?", "answer": 5, "meta": {"source": "dup", "level": 1}, "uid": "c"},
]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_epoch_order_is_a_seeded_permutation_that_changes_per_epoch() -> None:
    first = epoch_order(50, seed=7, epoch=0)
    assert sorted(first) == list(range(50))
    assert epoch_order(50, seed=7, epoch=0) == first  # a restart walks the same order
    assert epoch_order(50, seed=7, epoch=1) != first
    assert epoch_order(50, seed=8, epoch=0) != first
    assert epoch_order(5, seed=7, epoch=3, shuffle=False) == [0, 1, 2, 3, 4]


def test_mixture_pool_is_deterministic_with_unique_stable_ids() -> None:
    entries = [TaskEntry(task="add", difficulty=2), TaskEntry(task="reverse", weight=0.0)]
    pool = mixture_pool(entries, seed=3, size=40)
    again = mixture_pool(entries, seed=3, size=40)
    assert [it.task_id for it in pool] == [it.task_id for it in again]
    assert len({it.task_id for it in pool}) == len(pool)
    assert all(it.task_id.startswith("add-d2-") and it.task == "add" for it in pool)
    first = pool[0]  # e.g. "add 11+36=" -> "47": the answer is the sum
    a, b = first.prompt.removeprefix("add ").removesuffix("=").split("+")
    assert first.answer == str(int(a) + int(b))


def test_jsonl_rows_map_onto_prompts_with_stable_ids(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "qa.jsonl", ROWS)
    spec = DatasetSpec(
        path=str(path),
        task="math",
        prompt_field="question",
        reference=["meta.source"],
    )
    items = load_dataset(spec)
    assert [it.prompt for it in items] == ["What is 2+3?", "What is 7*6?"]  # duplicate dropped
    assert [it.answer for it in items] == ["5", "42"]  # numbers become strings
    digest = hashlib.sha256(b"math\0What is 2+3?\x005").hexdigest()[:12]
    assert items[0].task_id == f"math-{digest}"
    assert items[0].task == "math"
    assert items[1].reference == {"meta.source": "math"}


def test_jsonl_id_field_and_rest_of_the_row_as_reference(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "qa.jsonl", ROWS)
    spec = DatasetSpec(
        path=str(path), task="math", prompt_field="question", id_field="uid", reference="rest"
    )
    items = load_dataset(spec)
    assert [it.task_id for it in items] == ["math-a", "math-b", "math-c"]
    assert items[2].reference == {"meta": {"source": "dup", "level": 1}}


def test_dataset_errors_name_the_line_and_field(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "qa.jsonl", ROWS)
    with pytest.raises(DatasetError, match=r"qa\.jsonl:1: no prompt field 'prompt'"):
        load_dataset(DatasetSpec(path=str(path), task="math"))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "p", "answer": "a"}\n{"prompt": \n')
    with pytest.raises(DatasetError, match=r"bad\.jsonl:2: not valid JSON"):
        load_dataset(DatasetSpec(path=str(bad), task="math"))
    with pytest.raises(DatasetError, match="does not exist"):
        load_dataset(DatasetSpec(path=str(tmp_path / "nope.jsonl"), task="math"))


def test_limit_reads_only_the_first_rows(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "qa.jsonl", ROWS)
    spec = DatasetSpec(path=str(path), task="math", prompt_field="question", limit=1)
    assert [it.prompt for it in load_dataset(spec)] == ["What is 2+3?"]


def test_parquet_rows_map_like_jsonl(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow", reason="pyarrow is optional; Parquet needs it")
    import pyarrow.parquet as pq

    path = tmp_path / "qa.parquet"
    rows = [dict(ROWS[0]), dict(ROWS[1], answer=42)]  # a Parquet column has one type
    pq.write_table(pa.Table.from_pylist(rows), path)
    spec = DatasetSpec(path=str(path), task="math", prompt_field="question", id_field="uid")
    items = load_dataset(spec)
    assert [(it.task_id, it.prompt, it.answer) for it in items] == [
        ("math-a", "What is 2+3?", "5"),
        ("math-b", "What is 7*6?", "42"),
    ]


def test_parquet_without_pyarrow_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "qa.parquet"
    path.write_bytes(b"PAR1")
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # import pyarrow -> ImportError
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(DatasetError, match="needs the `pyarrow` package"):
        load_dataset(DatasetSpec(path=str(path), task="math"))


def test_pool_mixes_tasks_and_datasets_and_fingerprints_them(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "qa.jsonl", ROWS)
    ds = DatasetSpec(path=str(path), task="math", prompt_field="question")
    only_data = build_pool(FeedConfig(datasets=[ds]), seed=0)
    assert [it.task for it in only_data] == ["math", "math"]  # no default mixture added
    both = build_pool(FeedConfig(datasets=[ds], tasks=[TaskEntry(task="add")], pool_size=5), 0)
    assert [it.task for it in both] == ["add"] * 5 + ["math", "math"]
    default = build_pool(FeedConfig(pool_size=20), seed=0)
    assert {it.task for it in default} == {"sort", "reverse", "count"}
    assert fingerprint(both, 0, True) == fingerprint(list(both), 0, True)
    assert fingerprint(both, 0, True) != fingerprint(both[:-1], 0, True)
    assert fingerprint(both, 0, True) != fingerprint(both, 1, True)
