"""Reading the bus and asking for help stay light: no torch, transformers, vllm, faust or Kafka
client is imported by `rollstream.schemas` or by `rollstream --help`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

HEAVY = ("torch", "transformers", "vllm", "faust", "aiokafka", "confluent_kafka")


def _loaded_heavy(code: str) -> list[str]:
    """Run `code` in a fresh interpreter; the heavy top-level packages it left imported."""
    probe = (
        f"{code}\nimport sys, json\n"
        f"print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & {set(HEAVY)!r})))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_schemas_import_nothing_heavy() -> None:
    assert _loaded_heavy("import rollstream.schemas, rollstream.schemas.topics") == []


def test_building_the_cli_parser_imports_nothing_heavy() -> None:
    code = "from rollstream.services import cli; cli.build_parser()"
    assert _loaded_heavy(code) == []


def test_rollstream_help_exits_0_and_imports_nothing_heavy() -> None:
    exe = Path(sys.executable).with_name("rollstream")
    assert exe.exists(), f"console script not installed next to {sys.executable}"
    env = {**os.environ, "PYTHONPROFILEIMPORTTIME": "1"}  # every import, on stderr
    out = subprocess.run([str(exe), "--help"], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "tap" in out.stdout and "record" in out.stdout and "replay" in out.stdout
    imported = {
        line.rsplit("|", 1)[-1].strip().split(".")[0]
        for line in out.stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    }
    assert "rollstream" in imported  # the import log is really there
    assert imported & set(HEAVY) == set()
