"""The Grafana dashboard queries only metric names the code exports (`catalog()`), shows every
one of them, has a row per stage, and ships in a ConfigMap the Grafana sidecar picks up."""

from __future__ import annotations

import json
from collections.abc import Callable
from types import ModuleType
from typing import Any

import pytest
from helmchart import CHART, STAGES, Rendered, load_script

from rollstream.services.runtime.metrics import catalog

DASHBOARD = CHART / "dashboards" / "rollstream.json"


@pytest.fixture(scope="module")
def gen() -> ModuleType:
    return load_script("gen_dashboard")


@pytest.fixture(scope="module")
def exported() -> dict[str, set[str]]:
    return catalog()


def _strings(x: Any) -> list[str]:
    if isinstance(x, dict):
        return [s for v in x.values() for s in _strings(v)]
    if isinstance(x, list):
        return [s for v in x for s in _strings(v)]
    return [x] if isinstance(x, str) else []


def test_committed_dashboard_is_fresh(gen: ModuleType, exported: dict[str, set[str]]) -> None:
    assert DASHBOARD.read_text() == gen.render(exported), (
        "stale: the code's metrics changed; run `.venv/bin/python helm/gen_dashboard.py`"
    )


def test_every_queried_metric_is_exported_by_its_stage(
    gen: ModuleType,
    exported: dict[str, set[str]],
) -> None:
    board = json.loads(DASHBOARD.read_text())
    used = set().union(*(gen.used_names(s) for s in _strings(board)))
    assert used, "the dashboard queries nothing"
    for name in sorted(used):
        stage = name.split("_")[1]
        assert name in exported.get(stage, set()), f"{name} is not exported by {stage}"


def test_every_exported_metric_is_on_the_dashboard(
    gen: ModuleType, exported: dict[str, set[str]]
) -> None:
    board = json.loads(DASHBOARD.read_text())
    used = set().union(*(gen.used_names(s) for s in _strings(board)))
    for stage, names in exported.items():
        for n in names:
            if n.endswith(("_sum", "_count")) and n.rsplit("_", 1)[0] + "_bucket" in names:
                continue  # histograms are shown as quantiles of their buckets
            assert n in used, f"{n} ({stage}) has no panel"


def test_one_row_per_stage() -> None:
    board = json.loads(DASHBOARD.read_text())
    rows = [p["title"] for p in board["panels"] if p["type"] == "row"]
    assert rows == ["pipeline", *STAGES]


def test_a_new_metric_gets_a_panel_and_an_unknown_one_none(gen: ModuleType) -> None:
    common = {
        f"rollstream_scorer_{n}"
        for n in (
            "messages_in_total",
            "messages_out_total",
            "dead_letters_total",
            "consumer_lag_messages",
            "up",
        )
    }
    before = gen.build({"scorer": common})
    titles = [p["title"] for p in before["panels"]]
    assert "tokens / s" not in titles  # curated for the generator only, and not exported here
    after = gen.build(
        {
            "scorer": common
            | {
                "rollstream_scorer_reward_seconds_bucket",
                "rollstream_scorer_reward_seconds_sum",
                "rollstream_scorer_reward_seconds_count",
                "rollstream_scorer_timeouts_total",
            }
        }
    )
    exprs = {t["expr"] for p in after["panels"] for t in p.get("targets", [])}
    assert any("histogram_quantile(0.95" in e and "reward_seconds_bucket" in e for e in exprs)
    assert any(e.startswith("sum(rate(rollstream_scorer_timeouts_total") for e in exprs)
    assert len(after["panels"]) == len(before["panels"]) + 2


def test_dashboard_configmap_has_the_sidecar_label(render_set: Callable[[str], Rendered]) -> None:
    r = render_set("default")
    (cm,) = [d for d in r.of_kind("ConfigMap") if d["metadata"]["name"].endswith("-dashboard")]
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(cm["data"]["rollstream.json"]) == json.loads(DASHBOARD.read_text())
