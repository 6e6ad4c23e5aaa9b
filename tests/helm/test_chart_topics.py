"""The chart creates exactly the registry's topics (rollstream/schemas/topics.py), in both modes,
and KEDA scales each stage on a topic that stage really consumes."""

from __future__ import annotations

from collections.abc import Callable

import helm_python as helm
import pytest
from helmchart import CHART, VALUE_SETS, Rendered, load_script

from rollstream.schemas.topics import BY_NAME, all_topics, lookup, qualified, unqualified


def test_topic_list_is_generated_from_the_registry() -> None:
    gen = load_script("gen_topics")
    committed = (CHART / "files" / "topics.json").read_text()
    assert committed == gen.render(), "stale: run `.venv/bin/python helm/gen_topics.py`"


def _expected(r: Rendered) -> set[str]:
    return {qualified(t.name, r.values["kafka"]["namespace"] or None) for t in all_topics()}


@pytest.mark.parametrize("name", VALUE_SETS)
def test_rendered_topics_are_the_registry(render_set: Callable[[str], Rendered], name: str) -> None:
    r = render_set(name)
    k = r.values["kafka"]
    kafka_topics = r.of_kind("KafkaTopic")
    jobs = [j for j in r.of_kind("Job") if j["metadata"]["name"].endswith("-topics")]
    if k["strimzi"]["enabled"]:
        assert jobs == []
        names = [t["spec"]["topicName"] for t in kafka_topics]
        assert sorted(names) == sorted(_expected(r))
        ns = k["namespace"] or None
        for t in kafka_topics:
            reg = lookup(unqualified(t["spec"]["topicName"], ns))
            assert t["spec"]["partitions"] == reg.partitions
            assert t["spec"]["replicas"] == k["strimzi"]["replicas"]
            assert {a: str(b) for a, b in t["spec"]["config"].items()} == reg.config()
            assert t["metadata"]["labels"]["strimzi.io/cluster"] == k["strimzi"]["cluster"]
    else:
        assert kafka_topics == []
        (job,) = jobs
        listed = job["metadata"]["annotations"]["rollstream.dev/topics"].split(",")
        assert sorted(listed) == sorted(_expected(r))
        (c,) = job["spec"]["template"]["spec"]["containers"]
        assert c["args"] == ["topics", "create"]  # creates all_topics() under the namespace
        env = {e["name"]: e.get("value") for e in c["env"]}
        assert env["ROLLSTREAM_BOOTSTRAP"] == k["bootstrap"]
        assert env.get("ROLLSTREAM_NAMESPACE") == (k["namespace"] or None)
        hooks = job["metadata"]["annotations"]["helm.sh/hook"].split(",")
        assert {"pre-install", "pre-upgrade"} <= set(hooks)


def test_no_topics_when_creation_is_off(chart: helm.Chart) -> None:
    for strimzi in (False, True):
        out = chart.render(
            {"kafka": {"topics": {"create": False}, "strimzi": {"enabled": strimzi}}}, name="rs"
        )
        assert "KafkaTopic" not in out["rollstream/templates/topics.yaml"]
        assert "kind: Job" not in out["rollstream/templates/topics.yaml"]


def test_keda_scales_on_topics_the_stage_consumes(render_set: Callable[[str], Rendered]) -> None:
    r = render_set("gpu")
    ns = r.values["kafka"]["namespace"]
    scaled = r.of_kind("ScaledObject")
    assert {s["metadata"]["labels"]["app.kubernetes.io/component"] for s in scaled} == {
        "generator",
        "scorer",
        "filter",
    }
    for so in scaled:
        stage = so["metadata"]["labels"]["app.kubernetes.io/component"]
        (trigger,) = so["spec"]["triggers"]
        meta = trigger["metadata"]
        topic = unqualified(meta["topic"], ns)
        assert meta["topic"] == f"{ns}.{topic}"
        assert stage in BY_NAME[topic].consumers, (stage, topic)
        assert meta["consumerGroup"].startswith(f"{ns}.")
        assert meta["sasl"] == "scram_sha512" and meta["tls"] == "enable"
        target = so["spec"]["scaleTargetRef"]
        assert r.workload(stage)["metadata"]["name"] == target["name"]
        assert r.workload(stage)["kind"] == target["kind"]
        # KEDA owns the replica count of what it scales
        assert "replicas" not in r.workload(stage)["spec"]
        cooldown = so["spec"]["cooldownPeriod"]
        hpa = so["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
        assert hpa["scaleDown"]["stabilizationWindowSeconds"] == cooldown
    faust = {s["metadata"]["labels"]["app.kubernetes.io/component"]: s for s in scaled}
    for stage in ("scorer", "filter"):  # faust apps: group rollstream-<stage>, long cooldowns
        meta = faust[stage]["spec"]["triggers"][0]["metadata"]
        assert meta["consumerGroup"] == f"{ns}.rollstream-{stage}"
        assert faust[stage]["spec"]["cooldownPeriod"] >= 600
