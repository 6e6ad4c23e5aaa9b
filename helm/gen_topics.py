"""Write the Helm chart's topic list from the topic registry.

Reads: `rollstream.schemas.topics.all_topics()` (every registry topic plus its `.dlq`).
Writes: `helm/rollstream/files/topics.json`, which `templates/topics.yaml` ranges over to
render Strimzi KafkaTopic resources (or to list what the topic-init Job creates).
Run it after changing rollstream/schemas/topics.py: `.venv/bin/python helm/gen_topics.py`. A test
(tests/helm/test_chart_topics.py) regenerates the list in memory and fails on drift.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from rollstream.schemas.topics import all_topics

OUT = Path(__file__).resolve().parent / "rollstream" / "files" / "topics.json"


def topics_document() -> list[dict[str, Any]]:
    """One entry per topic, in registry order: name, partitions, Kafka configs."""
    return [
        {"name": t.name, "partitions": t.partitions, "config": t.config()} for t in all_topics()
    ]


def render() -> str:
    return json.dumps(topics_document(), indent=2) + "\n"


def main() -> int:
    OUT.write_text(render())
    print(f"wrote {OUT} ({len(topics_document())} topics)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
