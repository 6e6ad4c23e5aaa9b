"""Print (or --write into docs/files.md) the file map: one line per tracked file, each described
by its own first docstring/comment line, so the map cannot drift from the code.

    python scripts/filemap.py            # print
    python scripts/filemap.py --write    # replace the block between docs/files.md's markers
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
START, END = "<!-- file-map:start -->", "<!-- file-map:end -->"
# Files that cannot carry their own description.
FIXED = {
    ".gitignore": "files git leaves alone (virtual environments, runs/, caches)",
    "README.md": "what rollstream is, quickstart, the default run, extending, deploying, tests",
    "pyproject.toml": "the `rollstream` distribution: dependencies, extras, console script, tools",
    "Dockerfile": "one image for every stage (CPU or CUDA variant by build argument)",
}
PATTERNS = {  # glob -> description, for data files that cannot carry a comment
    "helm/rollstream/templates/feed.yaml": "the feed Deployment",
    "helm/rollstream/templates/generator.yaml": "the generator Deployment",
    "helm/rollstream/templates/scorer.yaml": "the scorer Deployment (faust)",
    "helm/rollstream/templates/filter.yaml": "the filter Deployment (faust)",
    "helm/rollstream/templates/evaluator.yaml": "the evaluator Deployment",
    "helm/rollstream/templates/replay.yaml": "the replay StatefulSet (with a volume)",
    "helm/rollstream/templates/learner.yaml": "the learner StatefulSet (with a volume)",
    "helm/rollstream/templates/*.yaml": "chart template",
    "helm/rollstream/templates/_helpers.tpl": "shared pod template and per-stage facts",
    "helm/rollstream/Chart.yaml": "chart metadata",
    "helm/rollstream/values.yaml": "default values: one block per stage with identical keys",
    "helm/rollstream/values.schema.json": "JSON schema that rejects bad values",
    "helm/rollstream/files/topics.json": "topic list generated from rollstream/schemas/topics.py",
    "helm/rollstream/dashboards/rollstream.json": "Grafana dashboard from the metrics catalog",
    "benchmarks/results/*.json": "benchmark results (written by the script of the same name)",
    "tests/golden/*.msgpack": "golden bytes of one message type (tests/unit/test_schemas.py)",
    "examples/*.yaml": "example run file",
    "examples/data/gsm8k_sample.jsonl": "256 generated GSM8K-shaped rows (scripts/make_gsm8k_*)",
    "docs/*.png": "figure used in the README",
}
BY_SUFFIX = {
    ".msgpack": "golden bytes of one message type (tests/unit/test_schemas.py)",
    ".json": "JSON data",
    ".png": "image",
    ".yaml": "YAML",
    ".tpl": "Helm template helpers",
    ".txt": "text",
}


def describe(path: Path) -> str:
    rel = path.relative_to(ROOT).as_posix()
    if rel in FIXED:
        return FIXED[rel]
    for pattern, desc in PATTERNS.items():
        if "*" not in pattern and rel == pattern:
            return desc
    if path.suffix in (".yaml", ".json", ".png", ".msgpack", ".tpl", ".patch"):
        from fnmatch import fnmatch

        for pattern, desc in PATTERNS.items():
            if fnmatch(rel, pattern):
                return desc
    text = path.read_text(errors="replace") if path.suffix not in (".png",) else ""
    if path.suffix == ".py":
        try:
            doc = ast.get_docstring(ast.parse(text))
        except SyntaxError:
            doc = None
        if doc:
            return first_sentence(doc)
        return (
            "package marker"
            if path.name == "__init__.py" and not text.strip()
            else "(no docstring)"
        )
    for line in text.splitlines()[:5]:
        s = line.strip()
        for lead in ("#!", "# ", "{{/*", "## ", "<!--"):
            if s.startswith(lead) and not s.startswith("#!/"):
                return s.lstrip("#{/*<!- ").rstrip("*/}>- ").strip()
    return BY_SUFFIX.get(path.suffix, "")


def first_sentence(doc: str, limit: int = 120) -> str:
    para = " ".join(doc.strip().split("\n\n")[0].split())
    # the first ". " or "? " that ends a sentence (not "Dr. GRPO", "e.g. x")
    end = re.search(r"(?<!\bDr)(?<!\be\.g)(?<!\bi\.e)(?<!\bvs)(?<!\betc)\. |\? ", para)
    if end:
        para = para[: end.start() + (1 if end.group() == "? " else 0)]
    para = para.rstrip(".")
    return para if len(para) <= limit else para[: limit - 1].rstrip() + "…"


def tracked() -> list[Path]:
    out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True)
    return [ROOT / p for p in out.stdout.splitlines() if (ROOT / p).is_file()]


def render() -> str:
    return "\n".join(
        f"- `{p.relative_to(ROOT).as_posix()}` — {describe(p)}" for p in sorted(tracked())
    )


def main() -> int:
    block = render()
    if "--write" in sys.argv:
        readme = ROOT / "docs" / "files.md"
        text = readme.read_text()
        head, _, rest = text.partition(START)
        _, _, tail = rest.partition(END)
        readme.write_text(f"{head}{START}\n{block}\n{END}{tail}")
    else:
        print(block)
    return 0


if __name__ == "__main__":
    sys.exit(main())
