"""What a generator script in scripts/ prints now, for the tests that check a generated doc
(docs/files.md, docs/config.md) is current."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def script_output(name: str) -> str:
    """stdout of `python scripts/<name>` run from the repo root."""
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / name)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
