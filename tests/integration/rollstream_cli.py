"""Running the `rollstream` console script as a user would, against one test's broker and
namespace (`tap`, `record`, `replay`, `topics`)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from rollstream.services.runtime.settings import KafkaSettings

ROLLSTREAM = str(Path(sys.executable).with_name("rollstream"))


def rollstream(kafka: KafkaSettings, *args: str) -> subprocess.CompletedProcess[str]:
    """`rollstream ARGS...` as a subprocess on `kafka`'s broker and namespace (a wide terminal,
    so tables do not wrap); its output as text."""
    env = {
        **os.environ,
        "ROLLSTREAM_BOOTSTRAP": kafka.bootstrap,
        "ROLLSTREAM_NAMESPACE": str(kafka.namespace),
        "COLUMNS": "200",
    }
    return subprocess.run([ROLLSTREAM, *args], env=env, capture_output=True, text=True, timeout=120)
