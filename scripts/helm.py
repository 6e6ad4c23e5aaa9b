"""Render or lint the Helm chart here, with real Helm from PyPI (`helm-python-sdk`, in the
`dev` extra): no helm binary and no cluster needed.

    python scripts/helm.py template -f helm/rollstream/examples/cpu-small.yaml [--set k=v ...]
    python scripts/helm.py lint -f helm/rollstream/examples/cpu-small.yaml

`template` prints the manifests as `helm template` would; `lint` prints Helm's findings and
exits 1 on any warning or error (strict, as the chart tests lint it).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "helm" / "rollstream"


def merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in top.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def main(argv: list[str]) -> int:
    import helm_python as helm

    ap = argparse.ArgumentParser(prog="scripts/helm.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("action", choices=["template", "lint"])
    ap.add_argument("-f", "--values", action="append", default=[], help="values file")
    ap.add_argument("--set", action="append", default=[], help="KEY=VALUE, as helm --set")
    ap.add_argument("--name", default="rs", help="release name")
    ap.add_argument("-n", "--namespace", default="rl")
    ap.add_argument("--chart", default=str(CHART))
    args = ap.parse_args(argv)
    values: dict[str, Any] = {}
    for f in args.values:
        values = merge(values, yaml.safe_load(Path(f).read_text()) or {})
    for s in args.set:
        values = merge(values, helm.parse_set_string(s))
    if args.action == "lint":
        report = helm.lint(args.chart, values, strict=True, namespace=args.namespace)
        for m in report["messages"]:
            print(f"[{m['severity']}] {m.get('path', '')}: {m.get('error', m)}")
        bad = report["errors"] or [m for m in report["messages"] if m["severity"] >= 2]
        print(f"{args.chart}: {'FAILED' if bad else 'lint clean'}")
        return 1 if bad else 0
    out = helm.Chart.load(args.chart).render(values, name=args.name, namespace=args.namespace)
    for path, text in sorted(out.items()):
        if path.endswith((".yaml", ".yml")) and text.strip():
            sys.stdout.write(f"---\n# Source: {path}\n{text.strip()}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
