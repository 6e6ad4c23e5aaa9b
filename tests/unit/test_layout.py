"""The package's import graph, read the way import tools read it (grimp, the engine of
import-linter): the folders are the import path, and the design's rule that services never
import each other holds. Under the old `package-dir` mapping (`rollstream.services` served
from a top-level `services/`) grimp found 0 modules of `rollstream`."""

from __future__ import annotations

import grimp
import pytest

STAGES = ("feed", "generator", "scorer", "filter", "replay", "learner", "evaluator")
# what a stage may share: the wire contract, the runtime and the two libraries (tasks, models)
SHARED = ("schemas", "services.runtime", "services.tasks", "services.models")


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return grimp.build_graph("rollstream")


def test_tools_that_read_import_paths_see_the_whole_package(graph) -> None:
    assert {"rollstream.schemas", "rollstream.services"} <= graph.find_children("rollstream")
    assert {f"rollstream.services.{s}" for s in STAGES} <= graph.find_children(
        "rollstream.services"
    )
    assert len(graph.modules) > 100


@pytest.mark.parametrize("stage", STAGES)
def test_a_stage_imports_no_other_stage(graph, stage: str) -> None:
    others = [s for s in STAGES if s != stage]
    chains = {
        o: graph.find_shortest_chain(f"rollstream.services.{stage}", f"rollstream.services.{o}")
        for o in others
        if graph.chain_exists(
            f"rollstream.services.{stage}", f"rollstream.services.{o}", as_packages=True
        )
    }
    assert chains == {}


@pytest.mark.parametrize("shared", SHARED)
def test_what_the_stages_share_imports_no_stage(graph, shared: str) -> None:
    reached = [
        s
        for s in (*STAGES, "up", "tools")
        if graph.chain_exists(f"rollstream.{shared}", f"rollstream.services.{s}", as_packages=True)
    ]
    assert reached == []


def test_the_wheel_holds_every_module_and_data_file_of_the_checkout(tmp_path) -> None:
    """What `pip install .` (the image) gets: every module and the default run file. The old
    hand-kept package list had missed runtime.faust, tools, the plugin subpackages and
    learner.objectives, so an installed (not editable) scorer or filter could not start."""
    import subprocess
    import sys
    import zipfile
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"]
        + ["-w", str(tmp_path), str(root)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = tmp_path.glob("rollstream-*.whl")
    inside = {n for n in zipfile.ZipFile(wheel).namelist() if n.startswith("rollstream/")}
    tracked = subprocess.run(
        ["git", "ls-files", "rollstream"], cwd=root, capture_output=True, text=True, check=True
    ).stdout.split()
    assert sorted(set(tracked) - inside) == []
