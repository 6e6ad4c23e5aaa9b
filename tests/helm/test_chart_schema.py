"""values.schema.json rejects bad values before anything renders, names the bad key, and
stays in step with the run-file model; template checks reject what a schema cannot express."""

from __future__ import annotations

import json
from typing import Any

import helm_python as helm
import pytest
from helmchart import CHART

from rollstream.services.models.build import SIZES
from rollstream.services.runtime.config import ModelSpec, RunConfig, WeightStoreSpec
from rollstream.services.runtime.settings import KafkaSettings

BAD_VALUES = [
    ({"generator": {"replicas": -1}}, "/generator/replicas"),
    ({"feed": {"bogus": 1}}, "'bogus' not allowed"),
    ({"scorer": {"metrics": {"port": "9100"}}}, "/scorer/metrics/port"),
    ({"learner": {"metrics": {"port": 70000}}}, "/learner/metrics/port"),
    ({"replay": {"probes": {"liveness": {"periodSeconds": 0}}}}, "/replay/probes/liveness"),
    ({"filter": {"resources": {"request": {"cpu": 1}}}}, "'request' not allowed"),
    ({"generatr": {"replicas": 2}}, "'generatr' not allowed"),
    ({"weightStore": {"type": "nfs"}}, "/weightStore/type"),
    ({"weightStore": {"type": "s3", "s3": {"uri": "/local/dir"}}}, "/weightStore/s3/uri"),
    ({"kafka": {"sasl": {"enabled": True}}}, "/kafka/sasl/existingSecret"),
    ({"kafka": {"sasl": {"mechanism": "GSSAPI"}}}, "/kafka/sasl/mechanism"),
    ({"kafka": {"bootstrap": "kafka"}}, "/kafka/bootstrap"),
    ({"kafka": {"namespace": "a.b"}}, "/kafka/namespace"),
    ({"monitoring": {"kind": "Prometheus"}}, "/monitoring/kind"),
    ({"runConfig": {"stages": {"generator": {"replicas": 2}}}}, "'stages' not allowed"),
    ({"runConfig": {"kafka": {"bootstrap": "x:1"}}}, "'bootstrap' not allowed"),
    ({"runConfig": {"weights": {"uri": "s3://b/p"}}}, "'uri' not allowed"),
    ({"generator": {"env": {"1BAD NAME": "x"}}}, "invalid propertyName '1BAD NAME'"),
    ({"runConfig": {"model": {"size": "huge"}}}, "/runConfig/model/size"),
    ({"runConfig": {"model": {"sise": "small"}}}, "'sise' not allowed"),
    ({"runConfig": {"model": {"dtype": "bogus"}}}, "/runConfig/model/dtype"),
]


@pytest.mark.parametrize(("values", "where"), BAD_VALUES, ids=[w for _, w in BAD_VALUES])
def test_bad_values_are_rejected(chart: helm.Chart, values: dict[str, Any], where: str) -> None:
    with pytest.raises(helm.HelmValuesError) as exc:
        chart.validate_schema(values)
    assert where in str(exc.value)
    with pytest.raises(helm.HelmValuesError):  # `helm install/template` refuses them too
        chart.render(values, name="rs")


def test_a_good_override_is_accepted(chart: helm.Chart) -> None:
    chart.validate_schema(
        {
            "generator": {"replicas": 4, "env": {"ROLLSTREAM_GENERATOR__BATCH_PROMPTS": "32"}},
            "kafka": {"sasl": {"enabled": True, "existingSecret": "kafka-user"}},
            "weightStore": {"type": "s3", "s3": {"uri": "s3://bucket/run"}},
        }
    )


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"feed": {"persistence": {"enabled": True}}}, "only the StatefulSet stages"),
        (
            {"keda": {"enabled": True}, "evaluator": {"autoscaling": {"enabled": True}}},
            "evaluator has no consumer group",
        ),
        (
            {"runConfig": {"model": {"size": "small", "path": "/models/m"}}},
            "runConfig.model.size: small names a built-in model, but runConfig.model.path is set",
        ),
    ],
)
def test_template_checks_fail_with_the_field(
    chart: helm.Chart, values: dict[str, Any], message: str
) -> None:
    with pytest.raises(helm.HelmRenderError) as exc:
        chart.render(values, name="rs")
    assert message in str(exc.value)


def test_run_config_schema_follows_the_run_file_model() -> None:
    """Every run-file section is accepted except those the chart sets itself (stages ->
    per-stage replicas; kafka connection and weights.uri -> kafka and weightStore values;
    kafka.partitions -> the chart's topic resources, from the registry) and `up` (how
    `rollstream up` supervises its processes; Kubernetes does that in a cluster)."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    rc = schema["properties"]["runConfig"]["properties"]
    assert set(rc) == set(RunConfig.model_fields) - {"stages", "up"}
    assert set(rc["kafka"]["properties"]) == set(KafkaSettings.model_fields) - {
        "bootstrap",
        "namespace",
        "security",
        "partitions",
    }
    assert set(rc["weights"]["properties"]) == set(WeightStoreSpec.model_fields) - {"uri"}
    assert set(rc["model"]["properties"]) == set(ModelSpec.model_fields)
    assert set(rc["model"]["properties"]["size"]["enum"]) == set(SIZES)
