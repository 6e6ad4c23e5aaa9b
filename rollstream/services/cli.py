"""`rollstream` command line. Thin: parse, then call into a service (imported lazily, so
`rollstream --help` never loads torch, faust or Kafka clients)."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import Any

STAGES = ("feed", "generator", "scorer", "filter", "replay", "learner", "evaluator")


RUN_HELP = """usage: rollstream run STAGE [stage options]

Run one stage as a service (what `rollstream up` and the Helm chart start per process).

stages:
  feed        publish prompts from the tasks (curriculum from prompt.stats)
  generator   sample rollouts with the current policy (vLLM or transformers)
  scorer      score rollouts.raw into rollouts.scored (faust)
  filter      assemble groups, drop by rule, compute advantages (faust)
  replay      the buffer between filter and learner (priority, staleness bound)
  learner     train on replay's batches, publish weight versions
  evaluator   held-out greedy accuracy per policy version

`rollstream run STAGE --help` lists that stage's options."""


class _Version(argparse.Action):
    """`--version`, looked up only when asked (not on every command)."""

    def __init__(self, option_strings: list[str], dest: str, help: str | None = None) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, help=help)

    def __call__(self, parser: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> None:
        from importlib.metadata import PackageNotFoundError, version

        try:
            found = version("rollstream")
        except PackageNotFoundError:  # a source tree that was not installed
            found = "unknown (not installed)"
        print(f"rollstream {found}")
        parser.exit()


TOOL_BOOTSTRAP = (
    "Kafka bootstrap HOST:PORT (env ROLLSTREAM_BOOTSTRAP; default: the broker of the newest "
    "`rollstream up` run under ./runs that answers)"
)


def _kafka_args(p: argparse.ArgumentParser, bootstrap_help: str = TOOL_BOOTSTRAP) -> None:
    p.add_argument("--bootstrap", default=None, help=bootstrap_help)
    p.add_argument(
        "--namespace",
        default=None,
        help="prefix for every topic and group (env ROLLSTREAM_NAMESPACE)",
    )


def _config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config",
        action="append",
        default=[],
        metavar="FILE",
        help="run YAML layered over the built-in defaults (repeatable; later files win)",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="PATH=VALUE",
        help="override a config field after files and env, e.g. --set target.minutes=5",
    )


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="rollstream",
        description="RL fine-tuning of LLM policies as a stream of rollouts over Kafka.",
    )
    ap.add_argument("--version", action=_Version, help="print the installed version and exit")
    sub = ap.add_subparsers(dest="cmd", metavar="COMMAND")

    p = sub.add_parser("broker", help="run the embedded Kafka-compatible broker (Tansu)")
    p.add_argument("--port", type=int, default=9092, help="port to listen on (default 9092)")
    p.add_argument(
        "--host", default="127.0.0.1", help="address to listen on and advertise (default 127.0.0.1)"
    )

    p = sub.add_parser("topics", help="create or list the registry topics")
    p.add_argument(
        "action",
        choices=["create", "list"],
        help="create: every registry topic, with its partitions and config, where missing; "
        "list: partitions, messages, end offsets and each group's lag",
    )
    p.add_argument(
        "--replication",
        type=int,
        default=None,
        help="replication factor for created topics (default: kafka.replication, 1)",
    )
    _kafka_args(p)

    _topic_tools(sub)
    p = sub.add_parser("run", help="run one stage as a service", add_help=False)
    p.add_argument("stage", choices=STAGES, help="the stage to run")
    p.add_argument("args", nargs=argparse.REMAINDER, help="stage options (see run STAGE --help)")

    _init_model_parser(sub)
    p = sub.add_parser(
        "control", help="change a stage's live knobs: control generator temperature=0.8"
    )
    p.add_argument(
        "stage", help="feed, generator, scorer, filter, replay or learner (the evaluator has none)"
    )
    p.add_argument("params", nargs="*", help="KEY=VALUE (VALUE parsed as YAML)")
    p.add_argument(
        "--unset",
        action="append",
        default=[],
        metavar="KEY",
        help="remove a knob (the stage goes back to its configured value)",
    )
    _kafka_args(p)

    _up_parser(sub)
    p = sub.add_parser(
        "config",
        help="print the resolved run config and where each value came from",
        description="The config `up` starts from, each value with the layer that set it. "
        "What `up` sets at start (the embedded broker's address, partitions, weights.uri, a "
        "namespace on a Kafka of yours) is in runs/NAME/config.yaml, the config that ran.",
    )
    p.add_argument("action", choices=["show"], help="show: print it, each value's source beside it")
    _config_args(p)

    p = sub.add_parser("status", help="the ledger: generated, pending, dropped, trained, expired")
    p.add_argument("run", nargs="?", default=None, help="run folder (default: latest under runs/)")
    _kafka_args(p, "Kafka bootstrap HOST:PORT (default: the run's own broker)")

    p = sub.add_parser("report", help="rebuild a run's plots and print its summary")
    p.add_argument("run", nargs="?", default=None, help="run folder (default: latest under runs/)")
    p.add_argument(
        "--window",
        type=float,
        default=None,
        metavar="S",
        help="seconds a row of the table of where the time went (default: ~8 rows; 0: none)",
    )
    return ap


def _topic_tools(sub: Any) -> None:
    """tap, record, playback: read a topic live, save a range of it, play it back (playback
    was `replay`, the replay stage's name; that spelling still works, with a note)."""
    p = sub.add_parser(
        "tap",
        help="decode a topic live, without joining any consumer group",
        description="Print a topic's messages, decoded. Starts at the newest message (what "
        "arrives from now on, with --follow); --from-beginning starts at the oldest.",
    )
    p.add_argument(
        "topic", help="topic name, without the namespace (rollouts.raw, groups.kept, ...)"
    )
    p.add_argument("--from-beginning", action="store_true", help="start at the oldest message")
    p.add_argument("--follow", "-f", action="store_true", help="keep waiting for new messages")
    p.add_argument("--limit", "-n", type=int, default=None, help="stop after N messages")
    p.add_argument(
        "--where",
        default=None,
        help="safe filter over fields, e.g. 'reward > 0.5 and policy_version >= 3'",
    )
    p.add_argument("--fields", default=None, help="comma-separated fields to show (dotted paths)")
    p.add_argument("--json", action="store_true", help="one JSON object per line (for jq)")
    p.add_argument("--stats", action="store_true", help="rate, sizes and per-field summaries")
    p.add_argument("--tokenizer", default=None, help="model dir to detokenize token ids with")
    _kafka_args(p)

    p = sub.add_parser(
        "record",
        help="save a topic's messages (from its oldest; -n N for the first N) to a file",
        description="Save a topic's messages, from its oldest, to FILE (MessagePack, each "
        "message's bytes as sent), for `rollstream playback`. Stops at the end of the topic "
        "unless --follow.",
    )
    p.add_argument("topic", help="topic name, without the namespace")
    p.add_argument("file", help="file to write")
    p.add_argument("--limit", "-n", type=int, default=None, help="stop after N messages")
    p.add_argument("--follow", "-f", action="store_true", help="keep recording new messages")
    _kafka_args(p)

    p = sub.add_parser(
        "playback", aliases=["replay"], help="play a recorded file back into a topic"
    )
    p.add_argument("file", help="a file `rollstream record` wrote")
    p.add_argument(
        "topic", nargs="?", default=None, help="target topic (default: the recorded one)"
    )
    p.add_argument(
        "--rate",
        type=float,
        default=None,
        help="messages per second (default: as fast as possible)",
    )
    _kafka_args(p)


def _init_model_parser(sub: Any) -> None:
    p = sub.add_parser(
        "init-model",
        help="build a built-in base model (model.size: tiny, small), or one for --tasks",
    )
    p.add_argument("--out", default=None, help="output dir (default: the built-in model's home)")
    p.add_argument("--seed", type=int, default=0, help="seed of its random init and warm-up")
    p.add_argument(
        "--size",
        default="tiny",
        help="shape: tiny (the default run's model, 0.55M parameters) or small (8.4M, 8 layers; "
        "without --out, the one `--set model.size=small` trains)",
    )
    p.add_argument(
        "--device",
        default="cpu",
        help="torch device of the warm-up: cpu (default), cuda, cuda:1, auto (cuda if torch "
        "sees one); small builds in ~15 s on an H100, 3-5 minutes on a CPU (one thread)",
    )
    p.add_argument("--force", action="store_true", help="rebuild even if it exists")
    p.add_argument(
        "--tasks",
        default=None,
        help="warm up on these registered tasks instead: add,sort@4,my_pkg.parity@6 (needs --out)",
    )
    p.add_argument(
        "--dataset", default=None, help="warm up on a JSONL of prompt/answer rows (needs --out)"
    )
    p.add_argument("--prompt-field", default="prompt", help="--dataset: prompt field")
    p.add_argument("--answer-field", default="answer", help="--dataset: answer field")
    p.add_argument(
        "--plugins",
        default=None,
        metavar="DIR",
        help="folder of user task modules, put on the import path (as for `up`)",
    )
    p.add_argument(
        "--gate",
        type=float,
        default=None,
        help="--tasks/--dataset: stop warming a task once its held-out accuracy beats the "
        "best constant answer by this much (default 0.15)",
    )


def _up_parser(sub: Any) -> None:
    p = sub.add_parser("up", help="run the whole pipeline (embedded broker unless --bootstrap)")
    _config_args(p)
    p.add_argument(
        "--mode",
        choices=["stream", "sync"],
        default="stream",
        help="stream: the stages as processes over Kafka (default); sync: one process, "
        "generate then train in lockstep, no Kafka (the baseline to compare with)",
    )
    p.add_argument(
        "--stage",
        action="append",
        default=[],
        help="stage whose replicas to set (feed, generator, scorer, filter, replay, learner, "
        "evaluator)",
    )
    p.add_argument("--replicas", action="append", type=int, default=[], help="replicas for --stage")
    p.add_argument("--name", default=None, help="run name (folder runs/NAME)")
    p.add_argument(
        "--no-view",
        action="store_true",
        help="a progress line every up.progress_every_s instead of the live view",
    )
    p.add_argument(
        "--resume",
        default=None,
        metavar="RUN_DIR",
        help="continue a stopped run (runs/NAME) from its checkpoints and committed offsets",
    )
    p.add_argument(
        "--plugins",
        action="append",
        default=[],
        metavar="DIR",
        help="folder of user tasks/rewards/filters, put on every stage's import path",
    )
    _kafka_args(
        p,
        "use the Kafka at HOST:PORT instead of starting the embedded broker (checked before "
        "the run starts; a new run there gets a namespace of its own unless --namespace or "
        "ROLLSTREAM_NAMESPACE names one)",
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ap = build_parser()
    if argv[:1] == ["run"] and (len(argv) == 1 or argv[1] in ("-h", "--help")):
        # `run` passes everything after STAGE to the stage, so argparse can't answer --help
        print(RUN_HELP)
        return 0 if len(argv) > 1 else 2
    args = ap.parse_args(argv)
    if args.cmd is None:
        ap.print_help()
        return 0
    if args.cmd == "run":
        mod = importlib.import_module(f"rollstream.services.{args.stage}.main")
        return int(mod.main(args.args) or 0)
    if args.cmd == "broker":
        from rollstream.services.runtime.broker import BrokerError, run_foreground

        try:
            return run_foreground(args.port, args.host)
        except BrokerError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    if args.cmd == "init-model":
        from rollstream.services.models.build import init_model_cli

        if args.gate is not None and not (args.tasks or args.dataset):
            print("error: --gate applies to --tasks or --dataset warm-ups only", file=sys.stderr)
            return 2
        if args.plugins:
            if not os.path.isdir(args.plugins):
                print(f"error: --plugins {args.plugins}: no such folder", file=sys.stderr)
                return 2
            sys.path.insert(0, os.path.abspath(args.plugins))

        return init_model_cli(
            args.out,
            args.seed,
            args.force,
            tasks=args.tasks,
            dataset=args.dataset,
            prompt_field=args.prompt_field,
            answer_field=args.answer_field,
            gate=args.gate,
            size=args.size,
            device=args.device,
        )
    commands = {
        "topics": "rollstream.services.tools.commands:topics",
        "tap": "rollstream.services.tools.tap:main",
        "record": "rollstream.services.tools.record:record_main",
        "playback": "rollstream.services.tools.record:replay_main",
        "control": "rollstream.services.tools.commands:control",
        "up": "rollstream.services.up.main:main",
        "config": "rollstream.services.up.main:config_main",
        "status": "rollstream.services.up.status:main",
        "report": "rollstream.services.up.report:main",
    }
    if args.cmd == "replay":
        print("note: `rollstream replay` is now `rollstream playback`", file=sys.stderr)
        args.cmd = "playback"
    mod_name, fn = commands[args.cmd].split(":")
    try:
        return int(getattr(importlib.import_module(mod_name), fn)(args) or 0)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # a clear one-line error for the user, traceback on demand
        if os.environ.get("ROLLSTREAM_DEBUG"):
            raise
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
