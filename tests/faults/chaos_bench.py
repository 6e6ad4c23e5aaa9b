"""benchmarks/chaos.py as a module for the fault tests (benchmarks/ is not a package): the
short chaos run and its helpers (output_of: a child's output, collected as it comes)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

_spec = importlib.util.spec_from_file_location(
    "chaos", Path(__file__).parents[2] / "benchmarks" / "chaos.py"
)
assert _spec is not None and _spec.loader is not None
chaos = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(chaos)
