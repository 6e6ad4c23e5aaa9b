"""The README's topic table is the registry's, its quickstart is what CI runs, its links resolve,
and the file map in docs/files.md is current."""

from __future__ import annotations

import re
from pathlib import Path

from generated_docs import script_output

from rollstream.schemas.topics import TOPICS

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def table_rows() -> list[list[str]]:
    block = README.split("<!-- topic-table:start -->")[1].split("<!-- topic-table:end -->")[0]
    rows = [r.strip() for r in block.strip().splitlines()[2:]]
    return [[c.strip() for c in r.strip("|").split("|")] for r in rows]


def test_topic_table_matches_registry() -> None:
    rows = {r[0].strip("`"): r for r in table_rows()}
    assert set(rows) == {t.name for t in TOPICS} | {"<topic>.dlq"}
    for t in TOPICS:
        row = rows[t.name]
        assert row[1] == t.key, t.name
        assert row[2] == t.message.__name__, t.name
        assert row[3] == f"{t.producer} → {', '.join(t.consumers)}", t.name
        assert int(row[4]) == t.partitions, t.name
        assert row[5] == t.cleanup_policy, t.name


def test_ci_runs_the_readme_commands() -> None:
    quick = README.split("## Quickstart")[1].split("##")[0]
    install = re.search(r"^(pip install [^#\n]+?)\s+#", quick, re.M)
    assert install, "README quickstart has no install command"
    test_cmd = re.search(r"Tests \(what CI runs\): `([^`]+)`", quick)
    assert test_cmd
    ci = (ROOT / ".ci" / "run").read_text()
    assert install.group(1).strip() in ci
    assert test_cmd.group(1) in ci


def test_file_map_is_current() -> None:
    out = script_output("filemap.py").strip()
    files_md = (ROOT / "docs" / "files.md").read_text()
    block = files_md.split("<!-- file-map:start -->")[1].split("<!-- file-map:end -->")[0].strip()
    assert block == out, "docs/files.md is stale: run `python scripts/filemap.py --write`"


def test_readme_links_resolve() -> None:
    for target in re.findall(r"\]\(([^)#]+)\)", README):
        if not target.startswith("http"):
            assert (ROOT / target).exists(), f"README links to a missing {target}"
