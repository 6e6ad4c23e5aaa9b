"""The chart renders, lints clean and validates for the defaults and every examples/ overlay;
what it renders matches what the code expects (run file, probes, ports, volumes, GPUs)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import helm_python as helm
import jsonschema
import kubernetes_validate
import pytest
import yaml
from helmchart import (
    CHART,
    EXAMPLES,
    STAGES,
    Rendered,
    container_env,
    values_for,
)

from rollstream.services.runtime.config import load_config

KUBE_VERSION = "1.31"
STATEFUL = {"replay", "learner"}

# Custom resources have no schema in kubernetes-validate: check the fields their operators
# require, with the types they require (KEDA's trigger metadata is string-valued).
_META = {"type": "object", "required": ["name"]}
_STR_MAP = {"type": "object", "additionalProperties": {"type": "string"}}


def _monitor(endpoints: str) -> dict[str, Any]:
    """A Prometheus-operator monitor: a selector and, under `endpoints`, at least one endpoint
    naming its port."""
    endpoint = {"required": ["port"], "properties": {"port": {"type": "string"}}}
    return {
        "required": ["metadata", "spec"],
        "properties": {
            "metadata": _META,
            "spec": {
                "required": ["selector", endpoints],
                "properties": {endpoints: {"type": "array", "minItems": 1, "items": endpoint}},
            },
        },
    }


CRD_SCHEMAS: dict[tuple[str, str], dict[str, Any]] = {
    ("monitoring.coreos.com/v1", "PodMonitor"): _monitor("podMetricsEndpoints"),
    ("monitoring.coreos.com/v1", "ServiceMonitor"): _monitor("endpoints"),
    ("keda.sh/v1alpha1", "ScaledObject"): {
        "required": ["metadata", "spec"],
        "properties": {
            "metadata": _META,
            "spec": {
                "required": ["scaleTargetRef", "triggers"],
                "properties": {
                    "scaleTargetRef": {"required": ["name", "kind", "apiVersion"]},
                    "minReplicaCount": {"type": "integer", "minimum": 0},
                    "maxReplicaCount": {"type": "integer", "minimum": 1},
                    "cooldownPeriod": {"type": "integer"},
                    "pollingInterval": {"type": "integer"},
                    "triggers": {
                        "type": "array",
                        "minItems": 1,
                        "items": {
                            "required": ["type", "metadata"],
                            "properties": {
                                "metadata": {
                                    **_STR_MAP,
                                    "required": [
                                        "bootstrapServers",
                                        "consumerGroup",
                                        "topic",
                                        "lagThreshold",
                                    ],
                                }
                            },
                        },
                    },
                },
            },
        },
    },
    ("keda.sh/v1alpha1", "TriggerAuthentication"): {
        "required": ["metadata", "spec"],
        "properties": {"metadata": _META, "spec": {"minProperties": 1}},
    },
    ("kafka.strimzi.io/v1beta2", "KafkaTopic"): {
        "required": ["metadata", "spec"],
        "properties": {
            "metadata": {
                **_META,
                "properties": {
                    "name": {"pattern": r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", "maxLength": 253},
                    "labels": {"required": ["strimzi.io/cluster"]},
                },
            },
            "spec": {
                "required": ["topicName", "partitions", "replicas"],
                "properties": {
                    "partitions": {"type": "integer", "minimum": 1},
                    "replicas": {"type": "integer", "minimum": 1},
                    "config": {"type": "object"},
                },
            },
        },
    },
}


def test_lint_is_clean(rendered: Rendered) -> None:
    report = helm.lint(str(CHART), rendered.user_values, strict=True)
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert problems == [] and report["errors"] == [], problems


def test_every_manifest_validates(rendered: Rendered) -> None:
    assert rendered.docs, "nothing rendered"
    for doc in rendered.docs:
        where = f"{rendered.name}: {doc['kind']} {doc['metadata']['name']}"
        crd = CRD_SCHEMAS.get((doc["apiVersion"], doc["kind"]))
        if crd is not None:
            errors = [e.message for e in jsonschema.Draft7Validator(crd).iter_errors(doc)]
            assert errors == [], f"{where}: {errors}"
            continue
        try:
            kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            pytest.fail(f"{where}: {path}: {exc.message}")
        except kubernetes_validate.SchemaNotFoundError:
            pytest.fail(f"{where}: no schema for {doc['apiVersion']} and no CRD check here")


def test_object_names_are_unique(rendered: Rendered) -> None:
    keys = [
        (d["kind"], d["metadata"].get("namespace", ""), d["metadata"]["name"])
        for d in rendered.docs
    ]
    assert len(keys) == len(set(keys))


def test_each_stage_has_its_workload_kind(rendered: Rendered) -> None:
    for stage in STAGES:
        if not rendered.values[stage]["enabled"]:
            continue
        w = rendered.workload(stage)
        if stage in STATEFUL:
            assert w["kind"] == "StatefulSet"
            claims = [c["metadata"]["name"] for c in w["spec"].get("volumeClaimTemplates", [])]
            assert claims == (["data"] if rendered.values[stage]["persistence"]["enabled"] else [])
        else:
            assert w["kind"] == "Deployment"


def _container(rendered: Rendered, stage: str) -> dict[str, Any]:
    (c,) = rendered.workload(stage)["spec"]["template"]["spec"]["containers"]
    return c


def test_probes_hit_healthz_on_the_metrics_port(rendered: Rendered) -> None:
    for stage in STAGES:
        v = rendered.values[stage]
        c = _container(rendered, stage)
        (port,) = c["ports"]
        assert port == {"name": "metrics", "containerPort": v["metrics"]["port"], "protocol": "TCP"}
        args = c["args"]
        assert args[args.index("--metrics-port") + 1] == str(v["metrics"]["port"])
        for kind in ("startup", "liveness", "readiness"):
            probe = c.get(f"{kind}Probe")
            assert (probe is not None) == v["probes"][kind]["enabled"]
            if probe:
                assert probe["httpGet"] == {"path": "/healthz", "port": "metrics"}


def test_run_file_and_env_load_in_every_stage(
    rendered: Rendered, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What each stage process would load: the ConfigMap's run file plus its container env
    (ROLLSTREAM_<SECTION>__<FIELD> overrides, Secrets substituted by the kubelet)."""
    for var in ("ROLLSTREAM_BOOTSTRAP", "ROLLSTREAM_NAMESPACE"):
        monkeypatch.delenv(var, raising=False)
    (cm,) = [d for d in rendered.of_kind("ConfigMap") if d["metadata"]["name"].endswith("-run")]
    run_file = tmp_path / "run.yaml"
    run_file.write_text(cm["data"]["run.yaml"])
    v = rendered.values
    for stage in STAGES:
        c = _container(rendered, stage)
        env = container_env(c)
        assert env["ROLLSTREAM_CONFIG"] == "/etc/rollstream/run.yaml"
        cfg = load_config(run_file, env=env)
        assert cfg.kafka.bootstrap == v["kafka"]["bootstrap"]
        assert cfg.kafka.namespace == (v["kafka"]["namespace"] or None)
        mounts = {m["mountPath"] for m in c["volumeMounts"]}
        sec = cfg.kafka.security
        if v["kafka"]["sasl"]["enabled"]:
            s = v["kafka"]["sasl"]
            assert sec["sasl.password"] == f"{s['existingSecret']}/{s['passwordKey']}"
            assert sec["sasl.username"] == (
                s["username"] or f"{s['existingSecret']}/{s['usernameKey']}"
            )
            assert sec["security.protocol"].startswith("SASL_")
        for key in ("ssl.ca.location", "ssl.certificate.location", "ssl.key.location"):
            if key in sec:  # the client reads it from a mounted Secret
                assert str(Path(sec[key]).parent) in mounts, f"{stage}: {key} {sec[key]}"
        ws = v["weightStore"]
        if ws["type"] == "s3":
            assert cfg.weights.uri == ws["s3"]["uri"]
        else:
            assert cfg.weights.uri == ws["pvc"]["mountPath"]
            if stage in ("generator", "learner", "evaluator"):
                assert ws["pvc"]["mountPath"] in mounts
        _validate_stage_section(cfg, stage)


def _validate_stage_section(cfg: Any, stage: str) -> None:
    """The stage's own section against its config model, where the stage has one."""
    import importlib

    from rollstream.services.runtime.config import section

    try:
        mod = importlib.import_module(f"rollstream.services.{stage}.config")
    except ModuleNotFoundError as exc:
        if exc.name == f"rollstream.services.{stage}.config":
            return
        raise
    model = getattr(mod, f"{stage.capitalize()}Config", None)
    if model is not None:
        section(cfg, stage, model)


def test_gpu_example_puts_generator_and_learner_on_gpus(
    render_set: Callable[[str], Rendered],
) -> None:
    r = render_set("gpu")
    for stage in ("generator", "learner"):
        c = _container(r, stage)
        assert int(c["resources"]["limits"]["nvidia.com/gpu"]) >= 1, stage
    for stage in ("feed", "scorer", "filter", "replay"):
        assert "nvidia.com/gpu" not in _container(r, stage).get("resources", {}).get("limits", {})


def test_stage_blocks_have_identical_keys() -> None:
    """Same keys in every stage block, nested ones too (the fixed-shape ones), and the schema's
    one stage definition requires exactly them."""

    def shape(x: Any) -> Any:
        return {k: shape(x[k]) for k in sorted(x)} if isinstance(x, dict) else type(x).__name__

    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    keys = {s: sorted(defaults[s]) for s in STAGES}
    assert all(k == keys["feed"] for k in keys.values()), keys
    shapes = {
        s: {
            k: shape(defaults[s][k])
            for k in ("image", "metrics", "probes", "persistence", "autoscaling")
        }
        for s in STAGES
    }
    assert all(sh == shapes["feed"] for sh in shapes.values())
    stage_def = json.loads((CHART / "values.schema.json").read_text())["definitions"]["stage"]
    assert sorted(stage_def["required"]) == keys["feed"]
    assert stage_def["additionalProperties"] is False


def test_network_policy_admits_only_metrics_scrapes(render_set: Callable[[str], Rendered]) -> None:
    (np,) = render_set("default").of_kind("NetworkPolicy")
    assert np["spec"]["policyTypes"] == ["Ingress"]
    assert [r["ports"] for r in np["spec"]["ingress"]] == [[{"port": "metrics", "protocol": "TCP"}]]


def test_every_enabled_stage_has_a_disruption_budget(rendered: Rendered) -> None:
    pdbs = rendered.of_kind("PodDisruptionBudget")
    if not rendered.values["podDisruptionBudget"]["enabled"]:
        assert pdbs == []
        return
    covered = {p["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] for p in pdbs}
    assert covered == {s for s in STAGES if rendered.values[s]["enabled"]}


def test_monitors_render_only_when_the_api_is_there_or_forced(
    render_set: Callable[[str], Rendered],
) -> None:
    plain = render_set("gpu")
    assert plain.of_kind("ServiceMonitor") == []
    assert "no ServiceMonitor was created" in plain.notes
    forced = render_set("gpu+monitors")
    (sm,) = forced.of_kind("ServiceMonitor")
    assert sm["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert sm["spec"]["endpoints"][0]["port"] == "metrics"
    # the selector matches the stage Services, which expose the port it names
    services = [
        s
        for s in forced.of_kind("Service")
        if all(
            s["metadata"]["labels"].get(k) == v
            for k, v in sm["spec"]["selector"]["matchLabels"].items()
        )
    ]
    assert len(services) == len(STAGES)
    assert all(s["spec"]["ports"][0]["name"] == "metrics" for s in services)
    (pm,) = render_set("cpu-small+monitors").of_kind("PodMonitor")
    assert pm["spec"]["podMetricsEndpoints"][0]["path"] == "/metrics"


def test_examples_are_the_documented_ones() -> None:
    assert {p.stem for p in EXAMPLES} >= {"cpu-small", "gpu"}
    for p in EXAMPLES:
        assert values_for(p.stem), f"{p.name} is empty"
