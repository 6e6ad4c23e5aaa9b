"""The whole pipeline from one command: `rollstream up` with the built-in model and tasks.

A short run must end with held-out accuracy above the base model's and a ledger that balances
exactly (every rollout trained, dropped with a reason, expired, or still pending; none lost,
none trained twice) — also while a stage process is SIGKILLed and restarted mid-run. The sync
baseline must learn on the same config, and bad config must fail at start naming the field.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

pytestmark = [pytest.mark.slow, pytest.mark.kafka]

SHORT = [
    "--set",
    "target.minutes=3",
    "--set",
    "evaluator.min_interval_s=15",
    "--set",
    "evaluator.items_per_task=50",
]


def only_run(cwd: Path) -> Path:
    runs = [p for p in (cwd / "runs").iterdir() if p.is_dir()]
    assert len(runs) == 1, runs
    return runs[0]


def check_run(run: Path) -> dict:
    ledger = json.loads((run / "ledger.json").read_text())["ledger"]
    assert ledger["balanced"], ledger
    assert ledger["generated"] > 0 and ledger["trained"] > 0, ledger
    assert ledger["trained_twice"] == 0 and ledger["unknown"] == 0 and ledger["overlap"] == 0
    assert ledger["generated"] == (
        ledger["pending"] + ledger["trained"] + ledger["dropped_total"] + ledger["expired"]
    )
    evals = [json.loads(x) for x in (run / "eval.jsonl").read_text().splitlines()]
    assert evals[0]["version"] == 0, "the base model is evaluated first"
    assert evals[-1]["version"] > 0
    assert evals[-1]["accuracy"] > evals[0]["accuracy"], evals
    for png in ("accuracy.png", "throughput.png", "staleness.png", "drops.png"):
        assert (run / png).stat().st_size > 1000
    # TensorBoard: `tensorboard --logdir runs/` shows the same held-out accuracy series
    from tb_events import read_events

    (events,) = (run / "tensorboard").glob("events.out.tfevents.*")
    acc = [
        (e.step, v.simple_value)
        for e in read_events(events)
        for v in e.summary.value
        if v.tag == "accuracy/held_out"
    ]
    assert [round(a, 4) for _, a in acc] == [round(e["accuracy"], 4) for e in evals]
    assert [s for s, _ in acc] == [e["step"] for e in evals]
    return ledger


def test_short_up_run_learns_and_the_ledger_balances(rollstream_home: Path, tmp_path: Path, up):
    res = up(rollstream_home, tmp_path, *SHORT, "--name", "short")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "ledger BALANCED" in res.stdout and "FAILED" not in res.stdout
    ledger = check_run(only_run(tmp_path))
    # without a terminal: one progress line every up.progress_every_s (10 s), not every second
    lines = [x for x in res.stdout.splitlines() if x.startswith("[") and "s] step " in x]
    assert 3 * 60 / 10 - 3 <= len(lines) <= 3 * 60 / 10 + 3, len(lines)
    last = lines[-1]
    for part in ("step ", "version ", "accuracy ", "reward ", "rollouts/s ", "staleness ", "lag "):
        assert part in last, (part, last)
    assert all(f"{t} " in last for t in ("sort", "reverse", "count")), last  # per task
    # where its broker is, for the tools; at the end, the accuracy it reached
    run = only_run(tmp_path)
    assert f"run {run.relative_to(tmp_path)}: Kafka 127.0.0.1:" in res.stdout
    evals = [json.loads(x) for x in (run / "eval.jsonl").read_text().splitlines()]
    reached = f"held-out accuracy {evals[0]['accuracy']:.1%} (v0) -> {evals[-1]['accuracy']:.1%}"
    assert reached in res.stdout and reached in (run / "summary.txt").read_text()
    # ... which is the accuracy of the policy the run ended with: its last version is evaluated
    versions = (run / "weights" / "policy").glob("v*")
    published = max(int(p.name[1:]) for p in versions if p.name[1:].isdigit())
    assert evals[-1]["version"] == published, (evals[-1], published)
    # one version a step: the ledger's step and version agree with it (the version was the one
    # before, from the last step's Feedback, sent before that step's version is published)
    assert ledger["learner_step"] == ledger["learner_version"] == published, ledger
    # metrics.jsonl: a record a second, histogram buckets (most of a record's bytes) in one
    # every 10 s, so a 10-minute run's history is a few MB, not ~20
    history = (run / "metrics.jsonl").read_text().splitlines()
    with_buckets = sum("_bucket{" in line for line in history)
    assert 3 * 60 / 10 - 3 <= with_buckets <= 3 * 60 / 10 + 3 < len(history) / 5, with_buckets


def test_up_survives_a_stage_killed_with_sigkill(rollstream_home: Path, tmp_path: Path):
    env = {**os.environ, "ROLLSTREAM_HOME": str(rollstream_home), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "rollstream.services.cli",
            "up",
            "--no-view",
            *SHORT,
            "--name",
            "kill",
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        pids = tmp_path / "runs" / "kill" / "procs.json"
        evals = tmp_path / "runs" / "kill" / "eval.jsonl"
        deadline = time.time() + 240
        # wait until the learner has published at least one version, then kill the learner
        while time.time() < deadline:
            if evals.exists() and any(
                json.loads(x)["version"] > 0 for x in evals.read_text().splitlines()
            ):
                break
            time.sleep(2)
        else:
            pytest.fail("no trained version within 4 minutes")
        # `rollstream status` on the live run: one cut of the topics, a balanced ledger with
        # what is still in flight shown as pending (the guard is a hang guard: it used to
        # read each topic until a 30 s deadline)
        live = subprocess.run(
            [sys.executable, "-m", "rollstream.services.cli", "status", "runs/kill"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=100,
        )
        assert live.returncode == 0, live.stdout + live.stderr
        assert "live ledger" in live.stdout and "ledger BALANCED" in live.stdout, live.stdout
        assert "live: pending" in live.stdout, live.stdout
        victim = json.loads(pids.read_text())["learner-0"]["pid"]
        os.kill(victim, signal.SIGKILL)
        out, _ = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out[-4000:]
    run = tmp_path / "runs" / "kill"
    assert json.loads(pids.read_text())["learner-0"]["restarts"] >= 1
    check_run(run)


def test_sync_mode_learns_on_the_same_config(rollstream_home: Path, tmp_path: Path, up):
    res = up(rollstream_home, tmp_path, "--mode", "sync", *SHORT, "--name", "sync")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    summary = json.loads((only_run(tmp_path) / "sync_summary.json").read_text())
    evals = summary["evals"]
    assert summary["finished"] and summary["steps"] > 0
    assert evals[-1]["accuracy"] > evals[0]["accuracy"], evals
    # it ends as a stream run does: held-out accuracy from the base model, in percent
    assert f"held-out accuracy {evals[0]['accuracy']:.1%} (v0) -> " in res.stdout, res.stdout
    # its one process trains on the cores it may use, up to 4 (up.sync_threads unset)
    assert summary["threads"] == min(len(os.sched_getaffinity(0)), 4), summary["threads"]
    # the trained policy is where the stream's learner puts its versions, and loads
    check_policy(summary, tmp_path, rollstream_home)
    # every rollout accounted for: trained, dropped (filter or replay) or still in replay
    assert summary["generated"] == summary["trained"] + summary["dropped"] + summary["pending"]
    # `rollstream report` reads a sync run's figures from its summary
    cmd = [sys.executable, "-m", "rollstream.services.cli", "report", str(only_run(tmp_path))]
    rep = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert rep.returncode == 0, rep.stdout + rep.stderr
    report = json.loads((only_run(tmp_path) / "summary.json").read_text())
    assert report["mode"] == "sync" and report["learner_steps"] == summary["steps"]
    assert report["final_accuracy"] == evals[-1]["accuracy"]
    assert not (only_run(tmp_path) / "throughput.png").exists()  # no stages to plot
    cmd[-2] = "status"  # its ledger, from the summary (a sync run has no Kafka to ask)
    status = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert status.returncode == 0, status.stdout + status.stderr
    assert f"ledger BALANCED: generated {summary['generated']} = trained" in status.stdout


def test_sync_ledger_balances_with_reuse_and_success_replay(
    rollstream_home: Path, tmp_path: Path, up
) -> None:
    """With prioritized replay handing a group out twice and success replay appending samples
    of earlier groups, a sample can be trained twice: the sync ledger counts rollouts by id,
    as the stream's does, and still balances (it counted each hand-out before)."""
    sets = ["replay.policy=prioritized", "replay.max_uses=2", "replay.success_replay=true",
            "target.steps=40", "evaluator.items_per_task=10"]  # fmt: skip
    args = [a for x in sets for a in ("--set", x)]
    res = up(rollstream_home, tmp_path, "--mode", "sync", *args, "--name", "reuse")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    summary = json.loads((only_run(tmp_path) / "sync_summary.json").read_text())
    assert summary["reuses"] > 0, summary  # groups were trained twice
    assert summary["generated"] == summary["trained"] + summary["dropped"] + summary["pending"]
    cmd = [sys.executable, "-m", "rollstream.services.cli", "status", str(only_run(tmp_path))]
    status = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert status.returncode == 0 and "ledger BALANCED" in status.stdout, status.stdout


def test_sync_ledger_balances_with_a_prompt_pool_smaller_than_three_generate_calls(
    rollstream_home: Path, tmp_path: Path, up
) -> None:
    """With 40 prompts and 16 a generate call, a call's picks wrap into the next epoch every
    2.5 calls, often with no learner step between two calls: group ids once repeated then
    (here 4 groups went missing unseen in 60 steps, generated 11,904 against 11,872
    accounted for); each call's number in the id keeps them apart."""
    sets = ["feed.pool_size=40", "target.steps=60", "evaluator.items_per_task=10"]
    args = [a for x in sets for a in ("--set", x)]
    res = up(rollstream_home, tmp_path, "--mode", "sync", *args, "--name", "pool40")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    summary = json.loads((only_run(tmp_path) / "sync_summary.json").read_text())
    assert summary["generated"] == summary["trained"] + summary["dropped"] + summary["pending"]


def check_policy(summary: dict, tmp_path: Path, home: Path) -> None:
    """The policy a sync run wrote: an ordinary model directory at the run's last version,
    whose weights match the recorded sha256 and differ from the base model's."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rollstream.services.models.weightfile import digest_file

    policy = summary["policy"]
    path = Path(policy["uri"])
    assert policy["version"] == summary["version"] and path.name == f"v{summary['version']:08d}"
    assert path.parent.parent == only_run(tmp_path) / "weights", path
    digest = digest_file(path / "model.safetensors", policy["chunk_bytes"])
    assert digest == policy["sha256"]
    trained = AutoModelForCausalLM.from_pretrained(path)
    AutoTokenizer.from_pretrained(path)
    from rollstream.services.models.load import BASE_RECIPE

    base = AutoModelForCausalLM.from_pretrained(home / "models" / f"base-{BASE_RECIPE}")
    moved = [n for n, p in trained.named_parameters() if not torch.equal(p, base.state_dict()[n])]
    assert moved, "the written policy is the base model"


def test_sync_mode_run_as_the_rollstream_script_finds_a_reward_in_the_working_directory(
    rollstream_home: Path, tmp_path: Path
):
    """A stage runs `python -m`, which puts the working directory on its import path; the
    `rollstream` script does not. `--mode sync`, every stage in the script's own process, must
    find `my_reward.py` beside the user as the streaming stages do (and as `up`'s start check
    said it would)."""
    (tmp_path / "my_reward.py").write_text(
        "import pathlib\n"
        "def reward(rollout):\n"
        "    with pathlib.Path('scored.txt').open('a') as f:\n"
        "        f.write(rollout.rollout_id + '\\n')\n"
        "    return float(len(rollout.completion) % 2)\n"
    )
    env = {**os.environ, "ROLLSTREAM_HOME": str(rollstream_home), "PYTHONUNBUFFERED": "1"}
    cmd = [str(Path(sys.executable).parent / "rollstream"), "up", "--no-view", "--mode", "sync"]
    cmd += ["--name", "cwd", "--set", "scorer.rewards=[{name: 'my_reward:reward'}]"]
    cmd += ["--set", "target.steps=1", "--set", "evaluator.items_per_task=5"]
    res = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    summary = json.loads((only_run(tmp_path) / "sync_summary.json").read_text())
    assert summary["steps"] == 1
    assert len((tmp_path / "scored.txt").read_text().split()) == summary["generated"]


def test_sync_mode_stops_on_ctrl_c_after_the_step_and_keeps_what_it_trained(
    rollstream_home: Path, tmp_path: Path
):
    """Ctrl-C (a run without a target ends that way) finishes the step in progress, then
    evaluates, writes the policy and the summary, and exits 0."""
    env = {**os.environ, "ROLLSTREAM_HOME": str(rollstream_home), "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "rollstream.services.cli", "up", "--no-view", "--mode", "sync"]
    cmd += ["--name", "stop", "--set", "target.minutes=20", "--set", "evaluator.min_interval_s=5"]
    cmd += ["--set", "evaluator.items_per_task=20", "--set", "learner.deterministic=true"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 300
        evals = tmp_path / "runs" / "stop-sync" / "eval.jsonl"
        while not (
            evals.exists()
            and any(json.loads(x)["step"] > 0 for x in evals.read_text().splitlines())
        ):
            assert time.time() < deadline, "no trained step within 5 minutes"
            assert proc.poll() is None, proc.communicate()[0][-3000:]
            time.sleep(1)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out[-3000:]
    assert "stopped by a signal after step" in out, out[-3000:]
    summary = json.loads((only_run(tmp_path) / "sync_summary.json").read_text())
    assert summary["interrupted"] and summary["steps"] > 0
    assert summary["wall_s"] < 20 * 60
    assert summary["threads"] == 1  # learner.deterministic: one thread, as the stage
    assert summary["evals"][-1]["step"] == summary["steps"]  # evaluated where it stopped
    check_policy(summary, tmp_path, rollstream_home)


def test_sync_mode_killed_mid_run_leaves_the_policy_it_last_saved(
    rollstream_home: Path, tmp_path: Path
):
    """kill -9 (no chance to write anything at the end): the policy written by the last
    periodic save (`up.sync_save_every_s`) is there, loads and matches its summary."""
    env = {**os.environ, "ROLLSTREAM_HOME": str(rollstream_home), "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "rollstream.services.cli", "up", "--no-view", "--mode", "sync"]
    cmd += ["--name", "kill", "--set", "target.minutes=20", "--set", "up.sync_save_every_s=2"]
    cmd += ["--set", "evaluator.items_per_task=20"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, text=True)
    summary_file = tmp_path / "runs" / "kill-sync" / "sync_summary.json"
    try:
        deadline = time.time() + 300
        while not summary_file.exists():
            assert time.time() < deadline, "no periodic save within 5 minutes"
            assert proc.poll() is None, proc.communicate()[0][-3000:]
            time.sleep(0.5)
        proc.kill()
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    summary = json.loads(summary_file.read_text())
    assert summary["finished"] is False and summary["steps"] > 0
    assert summary["policy"]["step"] == summary["steps"]
    check_policy(summary, tmp_path, rollstream_home)


def test_bad_config_fails_at_start_naming_the_field(tmp_path: Path, up):
    res = up(
        tmp_path / "home",
        tmp_path,
        "--set",
        "learner.lr=-1",
        "--set",
        "generator.sampling.temperature=99",
        timeout=120,
    )
    assert res.returncode != 0
    assert "learner.lr" in res.stderr and "generator.sampling.temperature" in res.stderr
    # a typo in a user's reward module: found at start, not by the scorer at each restart
    (tmp_path / "myreward.py").write_text("def reward(rollout):\n    return scoer(  # typo\n")
    res = up(
        tmp_path / "home",
        tmp_path,
        "--set",
        "scorer.rewards=[{name: 'myreward:reward'}]",
        timeout=120,
    )
    assert res.returncode != 0
    assert "scorer.rewards.0.name: cannot import reward module 'myreward': SyntaxError" in (
        res.stderr
    )
    assert not (tmp_path / "runs").exists(), "nothing may start on a bad config"


def test_a_stage_that_keeps_failing_stops_up_with_its_error(
    rollstream_home: Path, tmp_path: Path, up
):
    """A user's reward that the scorer cannot build: it reads a rubric file that is not
    there, so the scorer dies at start, every time. `up`'s start-up check resolves the reward
    (its module imports) but builds none (building runs the user's code: files, servers,
    models), so only the stage can find this. `up` must not loop on it silently: it stops
    after `up.fail_restarts` failures, shows the error, exits 1 and its summary names the
    stage."""
    (tmp_path / "judge.py").write_text(
        "from pathlib import Path\n\n\n"
        "class Judge:\n"
        "    name = 'judge'\n\n"
        "    def __init__(self, rubric):\n"
        "        self.rubric = Path(rubric).read_text()\n\n"
        "    def score(self, rollout):\n"
        "        return float(self.rubric in rollout.completion)\n"
    )
    rubric = tmp_path / "rubric.txt"  # never written
    res = up(
        rollstream_home,
        tmp_path,
        "--set",
        f"scorer.rewards=[{{name: 'judge:Judge', params: {{rubric: '{rubric}'}}}}]",
        "--set",
        "target.minutes=4",
        "--set",
        "up.fail_restarts=2",
        "--name",
        "norubric",
        timeout=300,
    )
    out = res.stdout + res.stderr
    assert res.returncode == 1, out[-4000:]
    assert "FAILED: scorer-0 exited with 1 2 times" in res.stdout, out[-4000:]
    summary = res.stdout[res.stdout.index("FAILED: scorer-0") :]
    assert "FileNotFoundError" in summary and "rubric.txt" in summary, summary
    # it stopped early, not at the 4-minute target
    progress = [x for x in res.stdout.splitlines() if x.startswith("[")]
    assert progress and float(progress[-1][1:].split("s]")[0]) < 200, progress[-3:]


def test_resume_continues_a_stopped_run_with_a_continuous_ledger(
    rollstream_home: Path, tmp_path: Path, up, bootstrap: str
):
    """`up --resume runs/NAME` picks up where the run stopped: the learner from its
    checkpoint, every stage from its committed offsets on the same topics, the metrics and
    evals appended, and the ledger over the whole run still balanced. A run on a Kafka that
    `up` did not start, with no namespace named, gets one of its own (the session's broker
    holds other tests' topics), and the resumed run keeps it."""
    first = up(
        rollstream_home,
        tmp_path,
        "--bootstrap",
        bootstrap,
        "--set",
        "target.steps=20",
        "--set",
        "evaluator.min_interval_s=10",
        "--set",
        "evaluator.items_per_task=30",
        "--name",
        "res",
    )
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    run = only_run(tmp_path)
    namespace = yaml.safe_load((run / "config.yaml").read_text())["kafka"]["namespace"]
    assert namespace and namespace.startswith("res-"), namespace
    assert f"namespace {namespace} " in first.stdout
    led1 = json.loads((run / "ledger.json").read_text())["ledger"]
    evals1 = (run / "eval.jsonl").read_text().splitlines()
    t1 = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])["t"]
    assert led1["balanced"] and led1["learner_step"] >= 20, led1

    again = up(
        rollstream_home,
        tmp_path,
        "--resume",
        str(run),
        "--set",
        "target.steps=40",
        "--set",
        "target.minutes=null",
    )
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert f"resuming {run}" in again.stdout
    assert f"namespace {namespace} " in again.stdout
    assert only_run(tmp_path) == run, "no new run folder"
    led2 = json.loads((run / "ledger.json").read_text())["ledger"]
    assert led2["balanced"], led2
    assert led2["trained_twice"] == 0 and led2["unknown"] == 0
    # continuous: the same topics, so everything of the first part is still counted
    assert led2["generated"] > led1["generated"] and led2["trained"] > led1["trained"]
    assert led2["learner_step"] >= 40
    learner_log = (run / "logs" / "learner-0.log").read_text()
    assert "learner: resumed at step" in learner_log
    evals = [json.loads(x) for x in (run / "eval.jsonl").read_text().splitlines()]
    assert evals[: len(evals1)] == [json.loads(x) for x in evals1], "evals kept, not rewritten"
    keys = [(e["version"], e["step"]) for e in evals]
    assert len(keys) == len(set(keys)) and len(evals) > len(evals1), keys
    assert evals[-1]["step"] > json.loads(evals1[-1])["step"]
    times = [json.loads(x)["t"] for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert times == sorted(times) and times[-1] > t1, "the run's clock goes on"


def test_a_bootstrap_that_does_not_answer_fails_at_once_and_makes_no_run_folder(tmp_path: Path, up):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # free once closed: nothing listens there
    res = up(tmp_path / "home", tmp_path, "--bootstrap", f"127.0.0.1:{port}", timeout=120)
    assert res.returncode == 1
    assert f"no Kafka answers at 127.0.0.1:{port} (--bootstrap)" in res.stderr, res.stderr
    assert not (tmp_path / "runs").exists()


def test_resume_refuses_a_sync_run_saying_why(tmp_path: Path, up):
    run = tmp_path / "runs" / "lockstep"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text("name: lockstep\n")  # and no run.json: sync's folder
    res = up(tmp_path / "home", tmp_path, "--resume", str(run), timeout=120)
    assert res.returncode != 0
    assert "is a --mode sync run, which keeps no state" in res.stderr, res.stderr


def test_resume_refuses_a_run_of_the_embedded_broker_saying_why(tmp_path: Path, up):
    run = tmp_path / "runs" / "gone"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text("name: gone\n")
    (run / "run.json").write_text('{"embedded_broker": true}')
    res = up(tmp_path / "home", tmp_path, "--resume", str(run), timeout=120)
    assert res.returncode != 0
    assert "embedded broker, which keeps nothing once it stops" in res.stderr
    assert "--bootstrap" in res.stderr
