"""User tasks, rewards and filters from outside the current directory: a plugin folder
(`--plugins DIR` / `plugins:` in the run file) and installed packages' entry points
(`rollstream.tasks`, `rollstream.rewards`, `rollstream.filters`). Each check runs in a fresh
process whose working directory is not the plugin folder, as a stage process would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

TASK = """
from rollstream.services.tasks import Task

def make(rng, difficulty):
    bits = "".join(rng.choice("01") for _ in range(difficulty))
    return f"parity {bits}=", str(bits.count("1") % 2)

TASK = Task(name="parity", make=make, default_difficulty=6)
"""
REWARD = """
def brevity(rollout, per_char=0.001):
    return -per_char * len(rollout.completion)
"""
FILTER = """
from rollstream.services.filter.chain import KEEP, Decision, Filter, FilterParams

class Short(Filter):
    name = "short"

    class Params(FilterParams):
        max_chars: int = 8

    def apply(self, group):
        if all(len(s.rollout.completion) <= self.params.max_chars for s in group.samples):
            return KEEP
        return Decision.drop_group("too_long")
"""
CHECK = """
import json, sys
from rollstream.schemas import synthetic as syn
from rollstream.services.filter.chain import load_filter
from rollstream.services.scorer.reward import load_reward
from rollstream.services.tasks import get_task
{setup}
task = get_task({task!r})
prompt, answer = task.make(__import__("random").Random(0), 4)
reward = load_reward({reward!r}, {{"per_char": 0.5}})
r = syn.scored("g", 0, [1], [2], group_size=1, text=("p", "abcd")).rollout
flt = load_filter({filt!r})
print(json.dumps({{"task": task.name, "prompt": prompt, "reward": reward.score(r),
                  "filter": type(flt).__name__}}))
"""


def run_check(cwd: Path, env: dict[str, str], **spec: str) -> dict:
    code = CHECK.format(setup=spec.pop("setup", ""), **spec)
    res = subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout.strip().splitlines()[-1])


def write_plugins(d: Path) -> None:
    d.mkdir(parents=True)
    (d / "my_tasks.py").write_text(TASK)
    (d / "my_rewards.py").write_text(REWARD)
    (d / "my_filters.py").write_text(FILTER)


def test_plugins_load_from_a_folder_named_in_the_run_config(tmp_path: Path) -> None:
    plugins = tmp_path / "plugins"
    write_plugins(plugins)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    run_file = tmp_path / "run.yaml"
    run_file.write_text(f"plugins: [{json.dumps(str(plugins))}]\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    setup = textwrap.dedent(f"""
        from rollstream.services.runtime.config import load_config
        from rollstream.services.runtime.plugins import add_plugin_dirs
        add_plugin_dirs(load_config({str(run_file)!r}).plugins)  # what every stage does
    """)
    got = run_check(
        elsewhere,
        env,
        setup=setup,
        task="my_tasks:TASK",
        reward="my_rewards:brevity",
        filt="my_filters:Short",
    )
    assert got == {"task": "parity", "prompt": got["prompt"], "reward": -2.0, "filter": "Short"}
    assert got["prompt"].startswith("parity ")
    # without the folder, the same names fail with the import error
    bare = subprocess.run(
        [
            sys.executable,
            "-c",
            "from rollstream.services.scorer.reward import load_reward;"
            "load_reward('my_rewards:brevity')",
        ],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bare.returncode != 0 and "cannot import reward module 'my_rewards'" in bare.stderr


def test_up_puts_the_plugin_folder_into_the_run_config_as_an_absolute_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rollstream.services.cli import build_parser
    from rollstream.services.up.main import resolve

    write_plugins(tmp_path / "plugins")
    monkeypatch.chdir(tmp_path)
    args = build_parser().parse_args(["up", "--plugins", "plugins"])
    cfg = resolve(args)
    assert cfg.plugins == [str((tmp_path / "plugins").resolve())]
    args = build_parser().parse_args(["up", "--plugins", "nowhere"])
    with pytest.raises(ValueError, match="plugin folder nowhere does not exist"):
        resolve(args)


def test_plugins_load_from_installed_entry_points(tmp_path: Path) -> None:
    """An installed package (its code and a dist-info with entry_points.txt on the path, as
    `pip install` leaves it) makes `parity`, `brevity` and `short` usable as bare names."""
    site = tmp_path / "site"
    pkg = site / "rs_user_pkg"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "tasks.py").write_text(TASK)
    (pkg / "rewards.py").write_text(REWARD)
    (pkg / "filters.py").write_text(FILTER)
    info = site / "rs_user_pkg-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: rs-user-pkg\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[rollstream.tasks]\nparity = rs_user_pkg.tasks:TASK\n\n"
        "[rollstream.rewards]\nbrevity = rs_user_pkg.rewards:brevity\n\n"
        "[rollstream.filters]\nshort = rs_user_pkg.filters:Short\n"
    )
    env = {**os.environ, "PYTHONPATH": str(site)}
    got = run_check(tmp_path, env, task="parity", reward="brevity", filt="short")
    assert got["task"] == "parity" and got["reward"] == -2.0 and got["filter"] == "Short"
    # an unknown bare name lists what is installed
    res = subprocess.run(
        [
            sys.executable,
            "-c",
            "from rollstream.services.scorer.reward import load_reward;load_reward('nosuch')",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "installed (rollstream.rewards entry points): brevity" in res.stderr
