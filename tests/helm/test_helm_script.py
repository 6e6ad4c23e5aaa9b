"""scripts/helm.py, the render/lint command the README gives: it works without a helm binary,
and what it renders matches what the README says about PodDisruptionBudgets."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
CPU_SMALL = "helm/rollstream/examples/cpu-small.yaml"


def helm_script(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "scripts/helm.py", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def kinds(text: str) -> list[str]:
    return [d["kind"] for d in yaml.safe_load_all(text) if d]


def test_lint_of_the_cpu_small_example_is_clean() -> None:
    res = helm_script("lint", "-f", CPU_SMALL)
    assert res.returncode == 0 and "lint clean" in res.stdout, res.stdout + res.stderr


def test_template_renders_pdbs_by_default_and_none_for_cpu_small() -> None:
    default = helm_script("template")
    small = helm_script("template", "-f", CPU_SMALL)
    assert default.returncode == 0 and small.returncode == 0, default.stderr + small.stderr
    assert kinds(default.stdout).count("PodDisruptionBudget") == 7
    assert "PodDisruptionBudget" not in kinds(small.stdout)
    assert "StatefulSet" in kinds(small.stdout) and "Deployment" in kinds(small.stdout)
