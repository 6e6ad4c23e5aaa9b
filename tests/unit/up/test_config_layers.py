"""Run config layering as a user meets it: defaults <- run file(s) <- env <- --set, and
`rollstream config show` saying where every value came from."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from rollstream.services.cli import main as cli
from rollstream.services.runtime.config import ConfigError, load_layers
from rollstream.services.up.main import default_config_path


def two_line_file(tmp_path: Path) -> Path:
    f = tmp_path / "my.yaml"
    f.write_text("target: {steps: 50}\nlearner: {lr: 5.0e-5}\n")
    return f


def test_a_two_line_run_file_keeps_the_defaults(tmp_path: Path) -> None:
    defaults, _ = load_layers([default_config_path()], env={})
    cfg, _ = load_layers([default_config_path(), two_line_file(tmp_path)], env={})
    assert cfg.learner["lr"] == 5.0e-5
    # everything the file does not mention is still the default run's
    assert cfg.filter["chain"] == defaults.filter["chain"] == [{"name": "zero_variance"}]
    assert cfg.scorer == defaults.scorer and cfg.replay == defaults.replay
    assert cfg.learner["objective"] == "grpo" and cfg.feed["n"] == 8
    # a target replaces the default target instead of adding a 10-minute limit to it
    assert cfg.target.steps == 50 and cfg.target.minutes is None


def test_a_run_is_named_after_its_model_unless_named(tmp_path: Path) -> None:
    """`runs/<name>/`: the default run's folder says which model it trains, not `tiny-cpu`
    whatever was set."""
    base = [default_config_path()]
    assert load_layers(base, env={})[0].name == "tiny"
    assert load_layers(base, ["model.size=small"], env={})[0].name == "small"
    model = tmp_path / "Qwen2.5 0.5B+chat"
    cfg, _ = load_layers(base, [f"model.path={model}/"], env={})
    assert cfg.name == "Qwen2.5-0.5B-chat"
    assert load_layers(base, ["model.size=small", "name=mine"], env={})[0].name == "mine"


def test_layers_apply_in_order_files_then_env_then_set(tmp_path: Path) -> None:
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text("learner: {lr: 1.0e-3, threads: 2}\nfeed: {n: 4}\n")
    b.write_text("learner: {lr: 2.0e-3}\n")
    env = {"ROLLSTREAM_LEARNER__LR": "3.0e-3", "ROLLSTREAM_FEED__N": "6"}
    cfg, src = load_layers([default_config_path(), a, b], ["feed.n=7"], env=env)
    assert cfg.learner["threads"] == 2 and src["learner.threads"] == f"file {a}"
    assert cfg.learner["lr"] == 3.0e-3 and src["learner.lr"] == "env ROLLSTREAM_LEARNER__LR"
    assert cfg.feed["n"] == 7 and src["feed.n"] == "--set"
    cfg, _ = load_layers([default_config_path(), a, b], env={})
    assert cfg.learner["lr"] == 2.0e-3, "a later file wins over an earlier one"


def test_a_bad_value_in_a_layer_still_names_the_field(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="target.steps"):
        load_layers([default_config_path()], ["target.steps=0"], env={})


def test_a_built_in_model_size_is_checked_and_refused_beside_a_model_path(tmp_path: Path) -> None:
    """`model.size` picks the built-in model; with `model.path` set it would be ignored, so
    the pair is refused at start, naming both."""
    cfg, _ = load_layers([default_config_path()], ["model.size=small"], env={})
    assert cfg.model.size == "small" and cfg.model.path is None
    with pytest.raises(ConfigError, match="model.size"):
        load_layers([default_config_path()], ["model.size=huge"], env={})
    with pytest.raises(ConfigError, match=r"model: .*size 'small'.* path is set"):
        load_layers([default_config_path()], ["model.size=small", f"model.path={tmp_path}"], env={})


def test_config_show_prints_each_value_and_its_source(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ROLLSTREAM_REPLAY__BATCH_GROUPS", "8")
    f = two_line_file(tmp_path)
    assert cli(["config", "show", "--config", str(f), "--set", "feed.n=4"]) == 0
    lines = {x.split(":", 1)[0]: x for x in capsys.readouterr().out.splitlines()}
    assert lines["learner.lr"].endswith(f"# file {f}")
    assert lines["feed.n"].startswith("feed.n: 4") and lines["feed.n"].endswith("# --set")
    assert lines["replay.batch_groups"].endswith("# env ROLLSTREAM_REPLAY__BATCH_GROUPS")
    assert lines["filter.chain"].endswith("# defaults (default.yaml)")
    # fields nobody set are shown too, with their model default (e.g. a stage's own fields)
    assert lines["up.fail_restarts"].endswith("# built-in default")
    assert "learner.objective" in lines and "evaluator.items_per_task" in lines


def test_set_changes_one_field_of_the_target_and_a_file_replaces_it(tmp_path: Path) -> None:
    cfg, _ = load_layers([default_config_path()], ["target.steps=40"], env={})
    assert cfg.target.steps == 40 and cfg.target.minutes == 10  # the default's 10 min stays
    cfg, _ = load_layers(
        [default_config_path()], ["target.steps=40", "target.minutes=null"], env={}
    )
    assert cfg.target.steps == 40 and cfg.target.minutes is None


def test_the_embedded_broker_gets_as_many_partitions_as_the_most_replicas_of_a_stage() -> None:
    from rollstream.services.up.main import embedded_partitions

    base, _ = load_layers([default_config_path()], env={})
    assert embedded_partitions(base) == 1
    scaled, _ = load_layers(
        [default_config_path()],
        ["stages.generator.replicas=3", "stages.scorer.replicas=2"],
        env={},
    )
    assert embedded_partitions(scaled) == 3
    with pytest.raises(ConfigError, match="kafka.partitions"):
        load_layers([default_config_path()], ["kafka.partitions=0"], env={})


def test_one_staleness_bound_reaches_replay_and_the_generators(tmp_path: Path) -> None:
    from rollstream.services.generator.config import GeneratorConfig
    from rollstream.services.replay.config import ReplayConfig
    from rollstream.services.runtime.config import section

    f = tmp_path / "s.yaml"
    f.write_text("staleness: {max_versions: 1, rollouts_per_version: 64}\n")
    cfg, src = load_layers([default_config_path(), f], env={})
    assert src["staleness.max_versions"] == f"file {f}"
    assert section(cfg, "replay", ReplayConfig).max_staleness == 1
    gen = section(cfg, "generator", GeneratorConfig)
    assert (gen.max_staleness, gen.rollouts_per_version) == (1, 64)


def test_the_old_staleness_names_still_work_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from rollstream.services.replay.config import ReplayConfig
    from rollstream.services.runtime.config import section

    f = tmp_path / "old.yaml"
    f.write_text("replay: {max_staleness: 5, batch_groups: 4}\ngenerator: {max_staleness: 5}\n")
    cfg, src = load_layers([default_config_path(), f], ["generator.rollouts_per_version=32"], {})
    assert cfg.staleness.max_versions == 5 and src["staleness.max_versions"] == f"file {f}"
    assert cfg.staleness.rollouts_per_version == 32
    assert section(cfg, "replay", ReplayConfig).batch_groups == 4  # the rest of the section stays
    assert "max_staleness" not in cfg.replay and "max_staleness" not in cfg.generator
    said = caplog.text
    assert "replay.max_staleness is deprecated" in said and "staleness.max_versions" in said
    # an env variable of the old name overrides the file like any later layer
    env = {"ROLLSTREAM_REPLAY__MAX_STALENESS": "3"}
    assert load_layers([default_config_path(), f], env=env)[0].staleness.max_versions == 3


def test_two_different_values_for_the_one_bound_in_one_file_are_refused(tmp_path: Path) -> None:
    f = tmp_path / "clash.yaml"
    f.write_text("replay: {max_staleness: 1}\ngenerator: {max_staleness: 3}\n")
    with pytest.raises(ConfigError, match=r"one bound now, staleness\.max_versions"):
        load_layers([f], env={})
    g = tmp_path / "clash2.yaml"
    g.write_text("replay: {max_staleness: 1}\nstaleness: {max_versions: 2}\n")
    with pytest.raises(ConfigError, match="disagree"):
        load_layers([g], env={})


def test_a_misspelt_key_names_the_field_it_is_closest_to() -> None:
    from rollstream.services.generator.config import GeneratorConfig
    from rollstream.services.runtime.config import section

    with pytest.raises(ConfigError, match=r"kafka.bootstrp: .* \(did you mean bootstrap\?\)"):
        load_layers([default_config_path()], ["kafka.bootstrp=x:1"], env={})
    with pytest.raises(ConfigError, match=r"targt: .* \(did you mean target\?\)"):
        load_layers([default_config_path()], ["targt.minutes=1"], env={})
    cfg, _ = load_layers([default_config_path()], ["generator.batchprompts=4"], env={})
    with pytest.raises(ConfigError, match=r"generator.batchprompts: .*mean batch_prompts\?"):
        section(cfg, "generator", GeneratorConfig)
    # nothing close: no guess
    with pytest.raises(ConfigError) as err:
        load_layers([default_config_path()], ["kafka.zzzzzz=1"], env={})
    assert "did you mean" not in str(err.value)


def test_an_unknown_task_or_a_missing_model_directory_fails_before_the_run_starts(
    tmp_path: Path,
) -> None:
    """Found only by the stages, each would crash `up.fail_restarts` times first."""
    from rollstream.services.up.main import check_names

    sets = ["feed.tasks=[{task: sort}, {task: sortt}]", f"model.path={tmp_path / 'nope'}"]
    cfg, _ = load_layers([default_config_path()], sets)
    with pytest.raises(ConfigError) as err:
        check_names(cfg)
    assert "feed.tasks.1.task: unknown task 'sortt'; known: add, sort" in str(err.value)
    assert f"model.path: {tmp_path / 'nope'}: no such directory" in str(err.value)
    (tmp_path / "nope").mkdir()
    cfg, _ = load_layers([default_config_path()], ["feed.tasks=[{task: sort}]", sets[1]])
    with pytest.raises(ConfigError, match="no config.json in it"):
        check_names(cfg)
    check_names(load_layers([default_config_path()], [])[0])  # the default run passes


@pytest.mark.parametrize(
    ("change", "error"),
    [
        (
            "scorer.rewards=[{name: task}, {name: formt}]",
            "scorer.rewards.1.name: unknown reward 'formt'; built-ins: code_exec, exact_match, "
            "format,",
        ),
        (
            "filter.chain=[{name: truncated}, {name: zero_varience}]",
            "filter.chain.1.name: unknown filter 'zero_varience'; built-ins: duplicate, format,",
        ),
    ],
)
def test_an_unknown_reward_or_filter_fails_before_the_run_starts(change: str, error: str) -> None:
    """Found only by the scorer or the filter, each would crash `up.fail_restarts` times."""
    from rollstream.services.up.main import check_names

    cfg, _ = load_layers([default_config_path()], [change])
    with pytest.raises(ConfigError) as err:
        check_names(cfg)
    assert error in str(err.value)


def test_a_plugin_module_that_does_not_import_fails_before_the_run_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A typo in a user's reward module, a filter module whose dependency is missing: `up`
    names the field and the error instead of the stage crashing at every restart."""
    from rollstream.services.cli import build_parser
    from rollstream.services.up.main import resolve

    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "typo_reward.py").write_text("def reward(rollout):\n    return 1.0 +\n")
    (plugins / "needy_filter.py").write_text("import rs_missing_dependency\n")
    (plugins / "raising_reward.py").write_text("x = 1\nLIMITS = {}['max']\n")
    monkeypatch.setattr(sys, "path", [*sys.path])  # `--plugins` puts the folder on it
    sets = [
        "scorer.rewards=[{name: 'typo_reward:reward'}, {name: 'raising_reward:R'}]",
        "filter.chain=[{name: 'needy_filter:F'}]",
    ]
    args = build_parser().parse_args(
        ["up", "--plugins", str(plugins), *(a for s in sets for a in ("--set", s))]
    )
    with pytest.raises(ConfigError) as err:
        resolve(args)
    message = str(err.value)
    assert (
        "scorer.rewards.0.name: cannot import reward module 'typo_reward': SyntaxError" in message
    )
    assert "(typo_reward.py, line 2)" in message
    assert (
        "scorer.rewards.1.name: cannot import reward module 'raising_reward': KeyError: 'max' "
        "(raising_reward.py, line 2)"
    ) in message
    assert (
        "filter.chain.0.name: cannot import filter module 'needy_filter': "
        "No module named 'rs_missing_dependency'"
    ) in message


def test_a_user_module_in_the_working_directory_passes_as_the_stages_find_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each stage runs `python -m` from up's directory, which puts that directory on its
    import path; `up` run as the `rollstream` script lacks it and must not refuse the module."""
    from rollstream.services.up.main import check_names

    (tmp_path / "here_reward.py").write_text("def reward(rollout):\n    return 1.0\n")
    monkeypatch.chdir(tmp_path)
    path = [*sys.path]
    cfg, _ = load_layers([default_config_path()], ["scorer.rewards=[{name: 'here_reward:reward'}]"])
    check_names(cfg)
    assert sys.path == path


def test_a_user_module_is_imported_for_the_check_in_a_process_of_its_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reward module may load a model or start a thread at import: the check imports it
    in a child process, so nothing of it stays in `up` for the run, and a thread it leaves
    running does not hang the check."""
    from rollstream.services.up.main import check_names

    (tmp_path / "heavy_reward.py").write_text(
        "import threading, time\n"
        "threading.Thread(target=time.sleep, args=(3600,)).start()  # not a daemon\n"
        "def reward(rollout):\n    return 1.0\n"
    )
    monkeypatch.chdir(tmp_path)
    cfg, _ = load_layers(
        [default_config_path()], ["scorer.rewards=[{name: 'heavy_reward:reward'}]"]
    )
    check_names(cfg)
    assert "heavy_reward" not in sys.modules


def test_bad_reward_and_filter_params_fail_before_the_run_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A misspelt parameter of a built-in, a keyword a user's reward does not take, a user
    class's required argument left out: found only when the scorer or the filter builds them,
    each would crash `up.fail_restarts` times. Checked without building anything."""
    from rollstream.services.up.main import check_names

    (tmp_path / "my_rewards.py").write_text(
        "BUILT = []\n"
        "def brevity(rollout, scale=1.0):\n    return 1.0\n"
        "LIMIT = 3\n"
        "class Judge:\n"
        "    name = 'judge'\n"
        "    def __init__(self, url, retries=3):\n        BUILT.append(url)\n"
        "    def score(self, rollout):\n        return 1.0\n"
    )
    monkeypatch.chdir(tmp_path)
    sets = [
        "scorer.rewards=[{name: format, params: {patern: x}}, "
        "{name: 'my_rewards:brevity', params: {scael: 2}}, {name: 'my_rewards:Judge'}, "
        "{name: 'my_rewards:LIMIT'}]",
        "filter.chain=[{name: zero_variance}, {name: pass_rate_band, params: {lo: high}}]",
    ]
    cfg, _ = load_layers([default_config_path()], sets)
    with pytest.raises(ConfigError) as err:
        check_names(cfg)
    message = str(err.value)
    assert "scorer.rewards.0: reward 'format': params.patern: Extra inputs are not permitted" in (
        message
    )
    assert (
        "scorer.rewards.1: reward 'my_rewards:brevity': params: got an unexpected keyword "
        "argument 'scael'"
    ) in message
    assert (
        "scorer.rewards.2: reward 'my_rewards:Judge': params: missing a required argument: 'url'"
    ) in message
    assert "filter.chain.1: filter 'pass_rate_band': params.lo: Input should be a valid number" in (
        message
    )
    assert "scorer.rewards.3: 'my_rewards:LIMIT' is a int, not a reward" in message
    assert "filter.chain.0" not in message
    # the same rewards with the params they take pass
    sets = [
        "scorer.rewards=[{name: format, params: {pattern: x}}, "
        "{name: 'my_rewards:brevity', params: {scale: 2}}, "
        "{name: 'my_rewards:Judge', params: {url: 'http://judge'}}]",
    ]
    check_names(load_layers([default_config_path()], sets)[0])


def test_a_task_module_that_does_not_import_names_the_field_and_the_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A SyntaxError in a user's task module is a config error naming the entry, as for a
    reward or filter module, not a traceback."""
    from rollstream.services.up.main import check_names

    (tmp_path / "typo_task.py").write_text("TASK = (\n")
    monkeypatch.chdir(tmp_path)
    cfg, _ = load_layers(
        [default_config_path()], ["feed.tasks=[{task: sort}, {task: 'typo_task:TASK'}]"]
    )
    with pytest.raises(ConfigError) as err:
        check_names(cfg)
    assert "feed.tasks.1.task: cannot import task module 'typo_task': SyntaxError" in str(err.value)


def test_a_module_found_through_a_stages_own_environment_passes_only_for_that_stage(
    tmp_path: Path,
) -> None:
    """`stages.scorer.env: {PYTHONPATH: DIR}` gives the scorer's processes a reward module
    that `up` itself cannot import: the start check looks with the scorer's environment.
    `--mode sync` runs every stage in one process with up's environment, so there the same
    module is refused."""
    from rollstream.services.up.main import check_names

    (tmp_path / "judges").mkdir()
    (tmp_path / "judges" / "env_reward.py").write_text("def reward(rollout):\n    return 1.0\n")
    sets = [
        "scorer.rewards=[{name: 'env_reward:reward'}]",
        f"stages.scorer.env={{PYTHONPATH: '{tmp_path / 'judges'}'}}",
    ]
    cfg, _ = load_layers([default_config_path()], sets)
    check_names(cfg)
    with pytest.raises(ConfigError, match="scorer.rewards.0.name: cannot import reward module"):
        check_names(cfg, stage_env=False)
    # the filter, without that environment, does not find it either
    cfg, _ = load_layers([default_config_path()], [*sets, "filter.chain=[{name: 'env_reward:F'}]"])
    with pytest.raises(ConfigError) as err:
        check_names(cfg)
    assert "filter.chain.0.name: cannot import filter module 'env_reward'" in str(err.value)
    assert "scorer.rewards" not in str(err.value)


def test_params_a_user_reward_or_filter_takes_by_its_own_signature_pass_the_start_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The check errs towards what the stage would build: an argument a user's `__init__`
    takes beside its Params model, a filter with an `__init__` of its own, a decorator that
    adds a keyword, a pydantic-model reward, an infinite tolerance in `--mode sync`."""
    from rollstream.services.up.main import check_names

    (tmp_path / "shapes.py").write_text(
        "import functools\n"
        "from pydantic import BaseModel\n"
        "from rollstream.services.filter.chain import KEEP, Filter, FilterParams\n"
        "from rollstream.services.scorer.reward import RewardParams, parse_params\n"
        "class Windowed(Filter):\n"
        "    name = 'windowed'\n"
        "    def __init__(self, window=10):\n"
        "        super().__init__()\n"
        "    def apply(self, group):\n        return KEEP\n"
        "class WithModel(Filter):\n"
        "    name = 'with_model'\n"
        "    class Params(FilterParams):\n        threshold: float = 0.5\n"
        "    def __init__(self, model=None, **params):\n"
        "        super().__init__(**params)\n"
        "    def apply(self, group):\n        return KEEP\n"
        "class Judge:\n"
        "    name = 'judge'\n"
        "    class Params(RewardParams):\n        temperature: float = 0.0\n"
        "    def __init__(self, url='http://x', **params):\n"
        "        self.params = parse_params(self.Params, params, self.name)\n"
        "    def score(self, rollout):\n        return 1.0\n"
        "def cached(fn):\n"
        "    @functools.wraps(fn)\n"
        "    def wrapper(rollout, cache_size=128, **kw):\n        return fn(rollout, **kw)\n"
        "    return wrapper\n"
        "@cached\n"
        "def brevity(rollout, scale=1.0):\n    return 1.0\n"
        "class Model(BaseModel):\n"
        "    name: str = 'model'\n"
        "    def score(self, rollout):\n        return 1.0\n"
    )
    monkeypatch.chdir(tmp_path)
    sets = [
        "scorer.rewards=[{name: 'shapes:Judge', params: {url: u, temperature: 1}}, "
        "{name: 'shapes:brevity', params: {cache_size: 4}}, "
        "{name: 'shapes:Model', params: {legacy: 1}}, "
        "{name: numeric_match, params: {abs_tol: .inf}}]",
        "filter.chain=[{name: 'shapes:Windowed', params: {window: 5}}, "
        "{name: 'shapes:WithModel', params: {model: m, threshold: 0.9}}]",
    ]
    cfg, _ = load_layers([default_config_path()], sets)
    check_names(cfg, stage_env=False)
    # what falls into a Params model is still checked against it
    sets[1] = "filter.chain=[{name: 'shapes:WithModel', params: {model: m, treshold: 0.9}}]"
    with pytest.raises(ConfigError, match="filter.chain.0: filter 'shapes:WithModel': params.tre"):
        check_names(load_layers([default_config_path()], sets)[0])


def test_up_says_where_sync_is_measured_faster_with_the_built_in_model() -> None:
    """The built-in models train sooner in --mode sync on 2 CPU cores, and the tiny one on a
    GPU host too; `up` says so at start there (and how the stream wins on a GPU), and nowhere
    else."""
    from rollstream.services.up.main import speed_note

    gpu = speed_note("tiny", "cuda", 16)
    assert gpu is not None and "--mode sync" in gpu and "model.size=small" in gpu
    two = speed_note("tiny", "cpu", 2)
    assert two is not None and "2 CPU core(s)" in two and "--mode sync" in two
    assert speed_note("tiny", "cpu", 8) is None
    assert speed_note("small", "cuda", 16) is None
    assert speed_note("small", "cpu", 2) == two


def test_stream_only_flags_with_mode_sync_are_refused_not_ignored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from rollstream.services.cli import main

    monkeypatch.chdir(tmp_path)
    argv = ["up", "--mode", "sync", "--bootstrap", "127.0.0.1:1", "--stage", "generator"]
    assert main([*argv, "--replicas", "2"]) == 1
    err = capsys.readouterr().err
    assert "--bootstrap, --stage/--replicas: for the stream's processes" in err
    assert not (tmp_path / "runs").exists()  # refused before a run folder or a model


def test_a_resume_that_changes_the_model_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A run's checkpoint and weight versions have its model's shape: `--resume` with another
    `model.size` (or path) would crash every stage that loads them, restart after restart."""
    from rollstream.services.runtime.config import dump

    monkeypatch.chdir(tmp_path)
    run = tmp_path / "runs" / "r"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(dump(load_layers([default_config_path()], env={})[0]))
    (run / "run.json").write_text('{"embedded_broker": false}')
    args = ["up", "--resume", str(run), "--bootstrap", "127.0.0.1:1"]
    assert cli([*args, "--set", "model.size=small"]) == 1
    err = capsys.readouterr().err
    assert "model.size: " in err and "trained 'tiny'; this call asks for 'small'" in err


def test_up_does_not_count_gpus_that_cuda_visible_devices_hides(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from rollstream.services.up.main import nvidia_gpu_visible

    for hidden in ("", "-1"):
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", hidden)
        assert not nvidia_gpu_visible()
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert nvidia_gpu_visible() == Path("/proc/driver/nvidia/version").exists()


@pytest.mark.parametrize(
    "argv, env, where",
    [
        (["up", "--bootstrap", "garbage"], {}, "(--bootstrap)"),
        (["up", "--bootstrap", "kafka-0:9092,kafka-1"], {}, "(--bootstrap)"),
        (
            ["tap", "rollouts.raw"],
            {"ROLLSTREAM_BOOTSTRAP": "kafka-0:99999"},
            "ROLLSTREAM_BOOTSTRAP",
        ),
    ],
)
def test_a_bootstrap_that_is_not_host_port_fails_at_once_naming_the_field(
    argv: list[str], env: dict[str, str], where: str, tmp_path: Path, monkeypatch, capsys
) -> None:
    """Not "no Kafka answers at garbage" 10 s later: the field, the value and where it came
    from, before any connection or run folder."""
    monkeypatch.chdir(tmp_path)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert cli(argv) == 1
    err = capsys.readouterr().err
    assert "kafka.bootstrap:" in err and "is not host:port" in err and where in err, err
    assert not (tmp_path / "runs").exists()


def test_bootstrap_lists_with_schemes_and_ipv6_hosts_pass() -> None:
    from rollstream.services.runtime.settings import KafkaSettings

    for ok in ("a:1", "a:9092,b:9093", "PLAINTEXT://kafka-0:9092", "[::1]:9092"):
        assert KafkaSettings(bootstrap=ok).bootstrap == ok
