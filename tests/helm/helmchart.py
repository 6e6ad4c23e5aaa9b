"""Render the Helm chart with real Helm (helm-python-sdk bundles Helm's Go SDK; no binary, no
cluster) once per values set; conftest.py shares the parsed manifests with every chart test.

Values sets: the chart defaults, every `helm/rollstream/examples/*.yaml` overlay, and two that
switch on what the examples leave off (ServiceMonitor/PodMonitor forced on, KafkaTopic
resources without a namespace), so every template renders somewhere.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import helm_python as helm
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "rollstream"
EXAMPLES = sorted((CHART / "examples").glob("*.yaml"))
STAGES = ("feed", "generator", "scorer", "filter", "replay", "learner", "evaluator")
RELEASE, K8S_NAMESPACE = "rs", "ml"

EXTRA_SETS: dict[str, dict[str, Any]] = {
    # Every example again with the Prometheus Operator API assumed present.
    "gpu+monitors": {"_base": "gpu", "monitoring": {"force": True}},
    "cpu-small+monitors": {
        "_base": "cpu-small",
        "monitoring": {"force": True, "kind": "PodMonitor"},
    },
    # Strimzi topics without a namespace prefix; the other mode's counterpart is the default.
    "strimzi-plain": {"kafka": {"strimzi": {"enabled": True}}},
}


def example_values(name: str) -> dict[str, Any]:
    return yaml.safe_load((CHART / "examples" / f"{name}.yaml").read_text()) or {}


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = (
            deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
        )
    return out


def values_for(name: str) -> dict[str, Any]:
    if name == "default":
        return {}
    if name in EXTRA_SETS:
        spec = dict(EXTRA_SETS[name])
        base = spec.pop("_base", None)
        return deep_merge(example_values(base) if base else {}, spec)
    return example_values(name)


VALUE_SETS = ("default", *(p.stem for p in EXAMPLES), *EXTRA_SETS)


@dataclass
class Rendered:
    """One values set, rendered: the manifests by template, parsed documents, merged values."""

    name: str
    user_values: dict[str, Any]
    values: dict[str, Any]
    templates: dict[str, str]
    docs: list[dict[str, Any]] = field(default_factory=list)

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [d for d in self.docs if d["kind"] == kind]

    def one(self, kind: str, name: str) -> dict[str, Any]:
        found = [d for d in self.of_kind(kind) if d["metadata"]["name"] == name]
        assert len(found) == 1, f"{self.name}: expected one {kind} {name}, found {len(found)}"
        return found[0]

    def workload(self, stage: str) -> dict[str, Any]:
        found = [
            d
            for d in self.docs
            if d["kind"] in ("Deployment", "StatefulSet")
            and d["metadata"]["labels"].get("app.kubernetes.io/component") == stage
        ]
        assert len(found) == 1, f"{self.name}: {stage}: {len(found)} workloads"
        return found[0]

    @property
    def notes(self) -> str:
        return self.templates.get("rollstream/templates/NOTES.txt", "")


_cache: dict[str, Rendered] = {}


def render(chart: helm.Chart, name: str) -> Rendered:
    if name not in _cache:
        user = values_for(name)
        out = chart.render(user, name=RELEASE, namespace=K8S_NAMESPACE)
        docs = [
            d
            for path, text in sorted(out.items())
            if path.endswith((".yaml", ".yml"))
            for d in yaml.safe_load_all(text)
            if d
        ]
        _cache[name] = Rendered(name, user, chart.merge_values(user), out, docs)
    return _cache[name]


def load_script(name: str) -> ModuleType:
    """helm/<name>.py (the generators; helm/ is not a package)."""
    path = ROOT / "helm" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"helm_{name}", path)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


_VAR = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def container_env(container: dict[str, Any]) -> dict[str, str]:
    """A container's environment as the kubelet would build it, with stand-ins for values from
    the API (`pod-0` for fields, `<secret>/<key>` for Secrets) and $(VAR) expanded in order."""
    env: dict[str, str] = {}
    for e in container.get("env", []):
        if "valueFrom" in e:
            src = e["valueFrom"]
            if "secretKeyRef" in src:
                ref = src["secretKeyRef"]
                value = f"{ref['name']}/{ref['key']}"
            elif "fieldRef" in src:
                value = "pod-0"
            else:
                value = "from-api"
        else:
            value = _VAR.sub(lambda m: env.get(m.group(1), m.group(0)), str(e.get("value", "")))
        env[e["name"]] = value
    return env


def expand(args: list[str], env: dict[str, str]) -> list[str]:
    return [_VAR.sub(lambda m: env.get(m.group(1), m.group(0)), a) for a in args]
