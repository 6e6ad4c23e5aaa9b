"""`rollstream up`: the whole pipeline on one machine, each stage its own OS process.

With no arguments: start the embedded broker, create the topics, build the base model if it
is missing, run feed, generator(s), scorer, filter, replay, learner and the evaluator, show the
live view, and stop at the run's target (steps, minutes or accuracy) or on Ctrl-C. The run
folder `runs/<name>/` gets the resolved config, every process's log, the metrics history
(metrics.jsonl), eval results (eval.jsonl), checkpoints, weight versions and plots.
`--bootstrap HOST:PORT` uses an existing Kafka instead of the embedded broker.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from contextlib import ExitStack
from importlib import resources
from pathlib import Path
from typing import Any

from rollstream.services.runtime.config import (
    RunConfig,
    dump,
    kafka_with,
    load_layers,
    section_models,
)
from rollstream.services.runtime.settings import KafkaSettings

ORDER = ("feed", "generator", "scorer", "filter", "replay", "learner", "evaluator")


def default_config_path() -> Path:
    return Path(str(resources.files("rollstream.services.up") / "default.yaml"))


def resolve(args: argparse.Namespace) -> RunConfig:
    """The config a new run starts with: the built-in defaults under this call's options."""
    return layered(args, default_config_path(), [f"name={args.name}"] if args.name else [])


def layered(args: argparse.Namespace, base: Path, sets: list[str]) -> RunConfig:
    """`base`, then this call's `--config` files, `--set`, `--stage/--replicas` and `sets` on
    top; its plugin folders put on sys.path, every stage's section validated, and
    `--bootstrap`/`--namespace` applied."""
    if len(args.stage) != len(args.replicas):
        raise ValueError("--stage and --replicas come in pairs: --stage generator --replicas 2")
    replicas = [f"stages.{s}.replicas={r}" for s, r in zip(args.stage, args.replicas, strict=True)]
    cfg, _ = load_layers([base, *args.config], [*args.set, *replicas, *sets])
    from rollstream.services.runtime.plugins import add_plugin_dirs

    # absolute paths in the run's config.yaml: every stage (any cwd) finds the same folders
    cfg.plugins = add_plugin_dirs([*cfg.plugins, *getattr(args, "plugins", [])])
    validate_sections(cfg, stage_env=getattr(args, "mode", "stream") != "sync")
    flags = {k: v for k, v in (("bootstrap", args.bootstrap), ("namespace", args.namespace)) if v}
    cfg.kafka = kafka_with(cfg.kafka, flags, ", ".join(f"--{k}" for k in flags))
    return cfg


def validate_sections(cfg: RunConfig, stage_env: bool = True) -> None:
    """Validate every stage's section with that stage's own model, and check the names it
    will look up (`check_names`), before anything starts, so a bad value fails `up` at once
    with the field's name (ConfigError)."""
    from rollstream.services.runtime.config import ConfigError, section

    errors = []
    for stage, model in section_models().items():
        try:
            section(cfg, stage, model)
        except ConfigError as exc:
            errors.append(str(exc))
    if errors:
        raise ConfigError("; ".join(errors))
    check_names(cfg, stage_env)


def check_names(cfg: RunConfig, stage_env: bool = True) -> None:
    """What the stages would only find missing once started (each crashing `up.fail_restarts`
    times before the run stops): the feed's tasks, the scorer's rewards and the filter chain's
    filters with their params, resolved and checked as those stages do, in a process started
    as a stage is (up/names.py: user modules imported there, nothing built), with that stage's
    `stages.<stage>.env` unless not `stage_env` (`--mode sync`: one process, up's own
    environment); and the model directory. ConfigError names the field."""
    from rollstream.services.feed.config import FeedConfig
    from rollstream.services.filter.config import FilterConfig
    from rollstream.services.runtime.config import ConfigError, section
    from rollstream.services.scorer.config import ScorerConfig

    by_stage = {
        "feed": {"tasks": [{"name": e.task} for e in section(cfg, "feed", FeedConfig).tasks or []]},
        "scorer": {
            "rewards": [
                r.model_dump(include={"name", "params"})
                for r in section(cfg, "scorer", ScorerConfig).rewards
            ]
        },
        "filter": {
            "filters": [
                f.model_dump(include={"name", "params"})
                for f in section(cfg, "filter", FilterConfig).chain
            ]
        },
    }
    checks: dict[tuple[tuple[str, str], ...], dict[str, Any]] = {}  # one process an environment
    for stage, names in by_stage.items():
        spec = cfg.stages.get(stage)
        env = tuple(sorted(spec.env.items())) if spec is not None and stage_env else ()
        checks.setdefault(env, {"plugins": cfg.plugins}).update(names)
    errors = [e for env, names in checks.items() for e in unresolved_names(names, dict(env))]
    path = cfg.model.path
    if path is not None and not (Path(path) / "config.json").is_file():
        what = "no such directory" if not Path(path).exists() else "no config.json in it"
        errors.append(
            f"model.path: {path}: {what} (a Hugging Face model directory; nothing is downloaded)"
        )
    if errors:
        raise ConfigError("; ".join(errors))


def unresolved_names(
    names: dict[str, Any], env: dict[str, str] | None = None, timeout_s: float = 120.0
) -> list[str]:
    """up/names.py's errors for `names`, from a child process run as the supervisor runs a
    stage (`python -m` from this directory, up's environment with `env` on top)."""
    import subprocess

    cmd = [sys.executable, "-m", "rollstream.services.up.names"]
    try:
        proc = subprocess.run(
            cmd,
            input=json.dumps(names),
            capture_output=True,
            text=True,
            timeout=timeout_s,
            env={**os.environ, **(env or {})},
        )
    except subprocess.TimeoutExpired:
        return [f"checking the task, reward and filter names took over {timeout_s:g} s"]
    lines = proc.stdout.strip().splitlines()
    try:
        errors = json.loads(lines[-1]) if proc.returncode == 0 and lines else None
    except json.JSONDecodeError:
        errors = None
    if not isinstance(errors, list):
        detail = (proc.stderr.strip() or proc.stdout.strip())[-2000:]
        return [f"checking the task, reward and filter names failed: {detail}"]
    return [str(e) for e in errors]


def resolved_with_sources(args: argparse.Namespace) -> list[tuple[str, Any, str]]:
    """Every field of the resolved run config, stage sections included with their models'
    defaults, as (dotted path, value, where it came from)."""
    from rollstream.services.runtime.config import section

    base = default_config_path()
    cfg, sources = load_layers([base, *args.config], list(args.set))
    data = cfg.model_dump(mode="json")
    for stage, model in section_models().items():
        data[stage] = section(cfg, stage, model).model_dump(mode="json")
    rows: list[tuple[str, Any, str]] = []

    def walk(value: Any, dotted: str) -> None:
        if isinstance(value, dict) and value:
            for k, v in value.items():
                walk(v, f"{dotted}.{k}" if dotted else str(k))
            return
        origin = sources.get(dotted)
        if origin is None:  # a list element's parent, or a field no layer set
            parent = next((s for k, s in sources.items() if dotted.startswith(k + ".")), None)
            origin = parent or "built-in default"
        rows.append((dotted, value, origin.replace(f"file {base}", "defaults (default.yaml)")))

    walk(data, "")
    return rows


def config_main(args: argparse.Namespace) -> int:
    """`rollstream config show`: the config `up` would run with, one field a line, each with
    the layer that set it (defaults, a run file, an env variable, --set, or the model's
    built-in default)."""
    rows = resolved_with_sources(args)
    width = min(60, max(len(f"{k}: {json.dumps(v)}") for k, v, _ in rows))
    for key, value, origin in rows:
        print(f"{key}: {json.dumps(value)}".ljust(width) + f"  # {origin}")
    return 0


def embedded_partitions(cfg: RunConfig) -> int:
    """Partitions per multi-partition topic on `up`'s own broker: the most replicas any stage
    runs. A partition is a produce batch and a fetch of its own, so the registry's 8 cost the
    embedded broker about three times the CPU per message of 1 (benchmarks/broker_cost.py)
    while one replica per stage uses a single partition anyway; nothing scales that broker's
    stages later."""
    return max([1, *(cfg.replicas(stage) for stage in cfg.stages)])


def nvidia_gpu_visible() -> bool:
    """Whether this host has an NVIDIA driver whose GPUs CUDA_VISIBLE_DEVICES does not hide:
    the GPU the stages' torch would see, asked without importing torch into `up` (1-2 s of
    its start and ~200 MB for the whole run in a process that never uses it)."""
    hidden = os.environ.get("CUDA_VISIBLE_DEVICES")
    if hidden is not None and hidden.strip() in ("", "-1"):
        return False
    return Path("/proc/driver/nvidia/version").exists()


def speed_note(size: str, device: str, cores: int) -> str | None:
    """What `up` says at start where the built-in model of `size` is measured to train sooner
    in `--mode sync` than as a stream (benchmarks/RESULTS.md), on `device` with `cores`."""
    if device != "cpu" and size == "tiny":
        return (
            "note: with the tiny built-in model a GPU host trains faster in --mode sync; "
            "the stream is first there with --set model.size=small (benchmarks/RESULTS.md)"
        )
    if device == "cpu" and cores <= 2:  # both sizes (the small one: two seeds)
        return (
            f"note: on {cores} CPU core(s) --mode sync trains the built-in model faster: the "
            "stream's processes share the cores that one process would have (benchmarks/RESULTS.md)"
        )
    return None


def new_run_dir(name: str, root: Path = Path("runs")) -> Path:
    d = root / name
    i = 1
    while d.exists():
        i += 1
        d = root / f"{name}-{i}"
    d.mkdir(parents=True)
    return d


class ResumeError(ValueError):
    """A run folder that cannot be continued; the message says why."""


class ModeError(ValueError):
    """A flag that does not apply to the chosen --mode."""


class KafkaUnreachable(ValueError):
    """`--bootstrap` names a Kafka that does not answer; the message says what was tried."""


def check_kafka(kafka: KafkaSettings, timeout_s: float = 10.0) -> None:
    """Fail before a run folder is made when the Kafka named by `--bootstrap` does not answer
    a metadata request (with the run's own client settings: a secured cluster is asked as
    the stages will ask it), instead of after creating the folder and waiting out the topic
    creation's 30 s with the client's raw error."""
    from rollstream.services.runtime.admin import unreachable

    why = unreachable(kafka, timeout_s)
    if why is not None:
        raise KafkaUnreachable(
            f"no Kafka answers at {kafka.bootstrap} (--bootstrap) within {timeout_s:.0f} s "
            f"({why}): check the address, and the `kafka` section's security settings for a "
            "secured cluster; without --bootstrap `up` starts a broker of its own"
        )


def own_namespace(run_dir: Path) -> str:
    """A namespace for a new run on a Kafka that `up` did not start, when none was named: the
    run folder's name and a random suffix. Without one, two runs on the same Kafka would
    share every topic and consumer group (the second would read the first's weights, prompts
    and committed offsets, and its ledger would count both)."""
    import re
    import secrets

    return f"{re.sub(r'[^A-Za-z0-9_-]', '_', run_dir.name)}-{secrets.token_hex(3)}"


def resume_config(args: argparse.Namespace) -> tuple[RunConfig, Path]:
    """The stopped run's own resolved config, with this call's `--config`/`--set` layered on
    top (a new target, say). Only a run whose Kafka kept its topics and offsets can go on."""
    run_dir = Path(args.resume)
    saved = run_dir / "config.yaml"
    if not saved.exists():
        raise ResumeError(f"{run_dir} is not a run folder (no config.yaml)")
    from rollstream.services.tools.target import is_sync_run

    if is_sync_run(run_dir):
        raise ResumeError(
            f"{run_dir} is a --mode sync run, which keeps no state to go on from (no "
            "checkpoint, no topics); start a new run"
        )
    info = json.loads((run_dir / "run.json").read_text()) if (run_dir / "run.json").exists() else {}
    if info.get("embedded_broker") and not args.bootstrap:
        raise ResumeError(
            f"{run_dir} ran on the embedded broker, which keeps nothing once it stops (Tansu "
            "with memory storage): its topics and committed offsets are gone, so the run "
            "cannot continue where it stopped. Runs against a Kafka that keeps its data "
            "(`rollstream up --bootstrap HOST:PORT`) can be resumed."
        )
    cfg = layered(args, saved, [])
    before = load_layers([saved], [], env={})[0].model
    for field in ("path", "size"):  # its checkpoint and versions are of that model's shape
        was, now = getattr(before, field), getattr(cfg.model, field)
        if was != now:
            raise ResumeError(
                f"model.{field}: {run_dir} trained {was!r}; this call asks for {now!r}, whose "
                "weights would not fit its checkpoint: resume with the run's model or start a "
                "new run"
            )
    return cfg, run_dir


def main(args: argparse.Namespace) -> int:
    resume = getattr(args, "resume", None)
    if args.mode == "sync":
        if resume:
            raise ResumeError("--resume continues a streaming run; --mode sync has no state")
        stream_only = [
            flag
            for flag, given in (
                ("--bootstrap", getattr(args, "bootstrap", None)),
                ("--namespace", getattr(args, "namespace", None)),
                ("--stage/--replicas", getattr(args, "stage", None)),
            )
            if given
        ]
        if stream_only:  # said, not silently ignored, before anything is checked or built
            raise ModeError(
                f"{', '.join(stream_only)}: for the stream's processes; --mode sync is one "
                "process with no Kafka"
            )
    if resume:
        cfg, run_dir = resume_config(args)
    else:
        cfg = resolve(args)
    if args.mode == "sync":
        from rollstream.services.up.sync import run_sync

        return run_sync(cfg)
    if not resume:
        if args.bootstrap:
            check_kafka(cfg.kafka)
        run_dir = new_run_dir(cfg.name)
        embedded = not args.bootstrap
        if not embedded and not cfg.kafka.namespace:
            cfg.kafka.namespace = own_namespace(run_dir)
        (run_dir / "run.json").write_text(json.dumps({"embedded_broker": embedded}))
    else:
        print(f"resuming {run_dir} on {cfg.kafka.bootstrap}", flush=True)
    with ExitStack() as stack:
        if not args.bootstrap and not resume:
            from rollstream.services.runtime.broker import EmbeddedBroker

            broker = stack.enter_context(EmbeddedBroker(log_path=run_dir / "broker.log"))
            cfg.kafka.bootstrap = broker.bootstrap
            cfg.kafka.session_timeout_ms = min(cfg.kafka.session_timeout_ms, 6000)
            if cfg.kafka.partitions is None:  # no more than the stages can share
                cfg.kafka.partitions = embedded_partitions(cfg)
        if cfg.weights.uri is None:
            cfg.weights.uri = str((run_dir / "weights").resolve())
        config_path = run_dir / "config.yaml"
        config_path.write_text(dump(cfg))
        print(
            f"run {run_dir}: Kafka {cfg.kafka.bootstrap}, namespace "
            f"{cfg.kafka.namespace or '(none)'} (`rollstream tap`, `topics`, `status` run from "
            "this folder find it)",
            flush=True,
        )
        from rollstream.services.runtime.admin import create_topics

        create_topics(cfg.kafka)
        if cfg.model.path is None:  # built once here, before the stages look for it
            from rollstream.services.models.load import model_dir_of

            print("base model:", model_dir_of(cfg.model, in_child=True), flush=True)
            from rollstream.services.up.sync import usable_cores

            device = "cuda" if nvidia_gpu_visible() else "cpu"
            note = speed_note(cfg.model.size, device, usable_cores())
            if note:
                print(note, flush=True)
        from rollstream.services.up.loop import Loop

        view = not args.no_view and sys.stdout.isatty()  # piped: progress lines instead
        loop = Loop(cfg, run_dir, config_path, view=view, resume=bool(resume))
        code = loop.run()
        from rollstream.services.up.ledger import compute, render

        led = compute(cfg.kafka, cfg.model.policy)
        text = render(led)
        (run_dir / "ledger.json").write_text(json.dumps({"ledger": led.as_dict(), "text": text}))
        print(text)
    from rollstream.services.up.report import write_report

    write_report(run_dir)
    summary = [*accuracy_lines(run_dir), *loop.summary()]
    (run_dir / "summary.txt").write_text("".join(x + "\n" for x in summary))
    for line in summary:
        print(line, flush=True)
    print(f"run folder: {run_dir}")
    return code


def accuracy_lines(run_dir: Path) -> list[str]:
    """Held-out accuracy from the base model to the last version evaluated, and where the
    report is."""
    evals = load_jsonl(run_dir / "eval.jsonl")
    if not evals:
        return [f"no evaluation finished; `rollstream report {run_dir}` for what there is"]
    first, last = evals[0], evals[-1]
    best = max(evals, key=lambda e: e["accuracy"])
    return [
        f"held-out accuracy {first['accuracy']:.1%} (v{first['version']}) -> "
        f"{last['accuracy']:.1%} (v{last['version']}, step {last.get('step', '?')}; best "
        f"{best['accuracy']:.1%} at v{best['version']}); table and plots: "
        f"`rollstream report {run_dir}`"
    ]


def load_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
