"""`benchmarks/time_to_target.py`'s CPU accounting and core plan (pure functions; the e2e smoke
runs the whole script)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[2] / "benchmarks"))

import time_to_target as ttt  # noqa: E402


def test_a_broker_on_cores_of_its_own_is_listed_but_not_charged_to_the_run() -> None:
    evals = [{"step": 0, "wall": 0.0}, {"step": 10, "wall": 10.0}, {"step": 30, "wall": 20.0}]
    samples = [
        (9.0, {1: ("learner", 5.0), 2: ("generator", 5.0), 3: (ttt.ELSEWHERE_LABEL, 1.0)}),
        (19.5, {1: ("learner", 9.0), 2: ("generator", 11.0), 3: (ttt.ELSEWHERE_LABEL, 4.0)}),
    ]
    budget = ttt.cpu_budget(samples, evals)
    assert budget is not None
    assert budget["cpu_s"] == {"learner": 4.0, "generator": 6.0, ttt.ELSEWHERE_LABEL: 3.0}
    assert budget["cores_busy"] == pytest.approx(10.0 / 10.0)  # the broker's 3 s left out
    assert budget["cpu_ms_per_step"] == pytest.approx(1000 * 10.0 / 20)
    assert budget["cpu_ms_per_step_by_stage"][ttt.ELSEWHERE_LABEL] == pytest.approx(150.0)


def test_one_read_of_the_processes_labels_a_run_and_its_broker_elsewhere() -> None:
    procs = {10: (1, 3.0), 11: (10, 5.0), 20: (1, 2.0), 21: (20, 1.5), 30: (1, 9.0)}
    assert ttt.tree_cpu(20, procs, ttt.ELSEWHERE_LABEL) == {
        20: (ttt.ELSEWHERE_LABEL, 2.0),
        21: (ttt.ELSEWHERE_LABEL, 1.5),
    }
    assert set(ttt.tree_cpu(10, procs)) == {10, 11}  # not the broker's, not a stranger's


def test_cores_outside_every_slot_are_the_spare_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ttt, "physical_cpus", lambda: (list(range(16)), 1))
    slots, cores, spare = ttt.plan_cores(6, 2, 6)
    assert slots == 6 and cores[0] == [0, 1] and cores[-1] == [10, 11]
    assert spare == [12, 13, 14, 15]
    assert ttt.plan_cores(8, 2, None)[2] == []  # every core in a slot: none spare
    assert ttt.plan_cores(2, 2, None)[0] == 8


def test_a_row_with_its_broker_elsewhere_points_up_at_it() -> None:
    class Broker:
        bootstrap = "127.0.0.1:9999"

    run = ttt.Run("async-xb", 0, "x", broker=Broker())
    cmd = ttt.command(run, 60, [])
    assert cmd[cmd.index("--bootstrap") + 1] == "127.0.0.1:9999"
    assert "kafka.partitions=1" in cmd and "kafka.session_timeout_ms=6000" in cmd
    assert "--bootstrap" not in ttt.command(ttt.Run("async", 0, "y"), 60, [])
    two = ttt.command(ttt.Run("async-2gen-xb", 0, "z", broker=Broker()), 60, [])
    assert "kafka.partitions=2" in two  # a partition for each generator, as up's own broker
    three = ttt.command(ttt.Run("async-xb", 0, "w", broker=Broker()), 60, ["x.replicas=3"])
    assert "kafka.partitions=3" in three  # a --set given to every run counts as well


def test_a_model_size_is_built_once_and_then_reused(tmp_path, monkeypatch) -> None:
    """`--model-size small`: the first call builds runs/model-small with init-model (on the
    GPU if there is one); later calls, and every row and seed, train that same directory."""
    calls = fake_init_model(monkeypatch)
    first = ttt.model_of_size("small", tmp_path)
    again = ttt.model_of_size("small", tmp_path)
    assert first == again == tmp_path / "model-small"
    assert len(calls) == 1
    assert calls[0][calls[0].index("--size") + 1] == "small"
    assert calls[0][calls[0].index("--device") + 1] == "auto"


def test_a_model_folder_of_another_shape_is_refused_not_trained(tmp_path, monkeypatch) -> None:
    """RUNS_DIR/model-small that holds something else (the tiny model copied there, an older
    recipe) would make every row train the wrong model: the run stops and says so."""
    from rollstream.services.models.build import SUMMARY_FILE

    fake_init_model(monkeypatch)
    ttt.model_of_size("small", tmp_path)
    summary = tmp_path / "model-small" / SUMMARY_FILE
    summary.write_text(json.dumps({"spec": {"hidden_size": 128, "num_layers": 2}}))
    with pytest.raises(SystemExit, match="is not an `init-model --size small` build"):
        ttt.model_of_size("small", tmp_path)


def test_a_bad_argument_stops_the_script_before_it_builds_a_model(tmp_path, monkeypatch) -> None:
    """A build takes minutes (on a CPU, several): an argument error must come first."""
    calls = fake_init_model(monkeypatch)
    monkeypatch.setattr(ttt, "plan_cores", lambda n, per_run, parallel: (1, [[]], []))
    argv = ["--model-size", "small", "--rows", "async-xb", "--runs-dir", str(tmp_path / "runs")]
    with pytest.raises(SystemExit):
        ttt.main(argv)
    assert calls == []


def fake_init_model(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """`init-model` as the script calls it, writing what it would (the weights and the build
    summary with the size's shape) but training nothing; returns the commands called."""
    from dataclasses import asdict

    from rollstream.services.models.build import SIZES, SUMMARY_FILE

    calls: list[list[str]] = []

    def fake_run(cmd, check):  # type: ignore[no-untyped-def]
        calls.append(cmd)
        out = Path(cmd[cmd.index("--out") + 1])
        out.mkdir(parents=True)
        (out / "model.safetensors").write_bytes(b"x")
        spec = asdict(SIZES[cmd[cmd.index("--size") + 1]])
        (out / SUMMARY_FILE).write_text(json.dumps({"spec": spec}))

    monkeypatch.setattr(ttt.subprocess, "run", fake_run)
    return calls


def test_a_stage_that_exited_before_the_last_sample_keeps_its_name() -> None:
    """The learner stops before the run's final evaluation: by the last sample its command
    line reads empty ('?'), and its CPU must still count as the learner's."""
    evals = [{"step": 0, "wall": 0.0}, {"step": 10, "wall": 10.0}, {"step": 30, "wall": 20.0}]
    samples = [
        (9.0, {1: ("learner", 5.0), 2: ("generator", 5.0)}),
        (19.5, {1: ("?", 9.0), 2: ("generator", 11.0)}),
    ]
    budget = ttt.cpu_budget(samples, evals)
    assert budget is not None
    assert budget["cpu_s"] == {"learner": 4.0, "generator": 6.0}
