"""The run file: one YAML that describes a whole run, validated at start.

Top-level fields shared by several stages live here (kafka, model, weight store, target,
replicas). Each stage's own section (`feed:`, `generator:`, ...) is validated by that stage's
pydantic model (`rollstream/services/<stage>/config.py`) through `section()`. Every error names
the field as a dotted path, e.g. `generator.sampling.temperature: Input should be less than or
equal to 10`. Environment variables `ROLLSTREAM_<SECTION>__<FIELD>=value` override fields (for
Kubernetes), e.g. `ROLLSTREAM_LEARNER__LR=1e-5`; `--set path=value` does the same from the
command line.

Layers, lowest first: the built-in defaults (`rollstream/services/up/default.yaml`, for
`rollstream up` and `rollstream config show`), each `--config FILE` in order, the environment,
each `--set`. Mappings merge key by key; lists (e.g. `filter.chain`) and the `target` section
replace.
"""

from __future__ import annotations

import importlib
import logging
import os
import re
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from rollstream.services.runtime.settings import ENV_FIELDS, KafkaSettings, env_kafka

log = logging.getLogger(__name__)

STAGE_NAMES = ("feed", "generator", "scorer", "filter", "replay", "learner", "evaluator")

T = TypeVar("T", bound=BaseModel)


class ConfigError(ValueError):
    """A run file that fails validation; the message names every bad field."""


class ModelSpec(BaseModel):
    """The policy's model: where it comes from, its name, its dtype."""

    model_config = ConfigDict(extra="forbid")

    path: str | None = None
    """Hugging Face model directory. None = the built-in model of `size` (built on first use)."""
    size: Literal["tiny", "small"] = "tiny"
    """The built-in model's size when `path` is None (`rollstream init-model --size`): `tiny`
    (550k parameters, built on a CPU in ~20 s) or `small` (8.4M: 8 layers, hidden 256). On a
    GPU host choose `small`: its steps are long enough next to the pipeline's hops for the
    stream to be first (benchmarks/RESULTS.md: 1.5x sync on one H200), while with `tiny`
    sync is first there. `rollstream up` builds it once before any stage starts, in a child
    process (`small` on the GPU when torch sees one, ~15 s, else 3-5 min; `tiny` on the CPU,
    ~20 s). A stage that finds none builds its own on the CPU (the same bits on like CPUs,
    not across CPU kinds), so on a cluster put it on `modelStore`."""
    policy: str = Field("policy", pattern=r"^[A-Za-z0-9_\-.]+$")
    """Policy name: the key of its WeightUpdates and its folder in the weight store."""
    dtype: str = Field("auto", pattern=r"^(auto|float32|bfloat16|float16)$")
    """Weights dtype in the generator and learner (auto: bf16 on GPU, fp32 on CPU)."""
    template: str = Field("auto", pattern=r"^(auto|plain|chat)$")
    """How prompts are put to the model, in the generator and the evaluator: `chat` wraps each
    prompt as a user turn of the tokenizer's chat template; `plain` sends it as is; `auto` is
    chat for a `path` whose tokenizer has a chat template, plain for the built-in model. A
    PromptTask's own `template` and `generator.template` override it."""
    system_prompt: str | None = None
    """System turn put before every prompt under the chat template (None: none)."""

    @model_validator(mode="after")
    def _size_without_path(self) -> ModelSpec:
        if self.path is not None and self.size != "tiny":
            raise ValueError(
                f"size {self.size!r} names a built-in model, but path is set ({self.path}): "
                "drop one of them (on the command line: --set model.size=tiny keeps the path)"
            )
        return self


class WeightStoreSpec(BaseModel):
    """Where the learner writes weight versions (claim checks on the `weights` topic)."""

    model_config = ConfigDict(extra="forbid")

    uri: str | None = None
    """Where weight versions go: a directory, file:// or s3://bucket/prefix (needs the `s3`
    extra). None = `<run folder>/weights`."""
    keep: int = Field(5, ge=1)
    """How many newest versions to keep in the store."""
    storage_options: dict[str, Any] = {}
    """fsspec options for remote stores (endpoint_url, key, secret, ...)."""
    wire_dtype: str = Field("auto", pattern=r"^(auto|float32|bfloat16|float16)$")
    """dtype of the published weights: auto = bfloat16 when the learner computes in bf16 (GPU),
    else the master weights' float32. bf16 halves the bytes written, read and loaded."""
    verify: str = Field("full", pattern=r"^(full|size)$")
    """How a generator checks a version before loading it: `full` reads and hashes the whole
    weights file against the published sha256; `size` (a local store written by a learner on
    this host, which hashed the bytes as it wrote them) checks size and safetensors header
    only, saving a second read. Remote stores are always checked in full."""

    @field_validator("uri")
    @classmethod
    def _backend_installed(cls, uri: str | None) -> str | None:
        """An s3:// store without s3fs fails here, when the config loads, not at the first
        weight version (the learner would crash, the generators refuse every update)."""
        if uri is None or "://" not in uri or uri.startswith("file://"):
            return uri
        import fsspec

        protocol = uri.split("://", 1)[0]
        try:
            fsspec.get_filesystem_class(protocol)
        except (ImportError, ValueError) as exc:
            raise ValueError(f"no filesystem for {protocol}:// ({exc})") from None
        return uri


class TargetSpec(BaseModel):
    """When `rollstream up` stops (the first target reached; none = until Ctrl-C)."""

    model_config = ConfigDict(extra="forbid")

    steps: int | None = Field(None, ge=1)
    """Stop after this many learner steps."""
    minutes: float | None = Field(None, gt=0)
    """Stop after this much wall time."""
    accuracy: float | None = Field(None, gt=0, le=1)
    """Stop once held-out accuracy reaches this."""


class StalenessSpec(BaseModel):
    """How old a sample may be when it is trained, in policy versions: the one bound every
    stage keeps. A sample's staleness is the learner's version when it trains the sample less
    the version that generated it (the `staleness_versions` histograms of replay and the
    learner)."""

    model_config = ConfigDict(extra="forbid")

    max_versions: int = Field(4, ge=0)
    """Replay never hands out a group more than this many versions behind the learner (it
    expires it: reason "expired" on `groups.dropped`), and a generator whose weights fall more
    than this many versions behind the newest pauses rather than sample what would expire. The
    learner trains a batch up to one version after replay hands it out (`learner.prefetch`),
    so the largest staleness trained is `max_versions + 1`. Live knobs: `rollstream control
    replay max_staleness=N` and `rollstream control generator max_staleness=N`."""
    rollouts_per_version: int = Field(0, ge=0)
    """A generator samples at most this many rollouts on one version, then waits up to
    `generator.version_wait_s` for a newer one (PipelineRL's max_lag; 0 = no budget;
    `generator.ahead_batches` paces by the learner instead)."""


RENAMED = {
    "generator.max_staleness": "staleness.max_versions",
    "replay.max_staleness": "staleness.max_versions",
    "generator.rollouts_per_version": "staleness.rollouts_per_version",
}
"""Run-file names that moved into the `staleness` section: still read, with a warning."""


def _by_stage(renames: dict[str, str]) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for old, new in renames.items():
        stage, field = old.split(".")
        out.setdefault(stage, {})[field] = new.split(".")[1]
    return out


STALENESS_FIELDS = _by_stage(RENAMED)
"""The stage config fields `section()` fills from the `staleness` section (stage -> {field:
staleness field}): RENAMED read the other way."""


def renamed(data: dict[str, Any], origin: str = "run config") -> dict[str, Any]:
    """`data` (one layer of a run file) with the names in RENAMED moved to their new place, a
    warning for each; ConfigError when one layer gives one bound two different values."""
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in data.items()}
    moved: dict[str, tuple[str, Any]] = {}
    for old, new in RENAMED.items():
        sec, key = old.split(".")
        if not isinstance(out.get(sec), dict) or key not in out[sec]:
            continue
        value = out[sec].pop(key)
        if not out[sec]:
            del out[sec]
        log.warning("%s: %s is deprecated; it is %s now", origin, old, new)
        if new in moved and moved[new][1] != value:
            raise ConfigError(
                f"{moved[new][0]} ({moved[new][1]}) and {old} ({value}) are one bound now, "
                f"{new}: set that"
            )
        moved[new] = (old, value)
    for new, (old, value) in moved.items():
        sec, key = new.split(".")
        target = out.setdefault(sec, {})
        if not isinstance(target, dict):
            continue  # the model's validation names the bad section
        if key in target and target[key] != value:
            raise ConfigError(f"{old} ({value}) and {new} ({target[key]}) disagree: set {new}")
        target[key] = value
    return out


class StageSpec(BaseModel):
    """Processes and environment of one stage."""

    model_config = ConfigDict(extra="forbid")

    replicas: int = Field(1, ge=0, le=64)
    """Processes of this stage (`rollstream up`) or pods (Helm)."""
    env: dict[str, str] = {}
    """Extra environment for this stage's processes."""


class UpSpec(BaseModel):
    """How `rollstream up` supervises the stages and reports progress."""

    model_config = ConfigDict(extra="forbid")

    fail_restarts: int = Field(3, ge=1)
    """A stage process that exits with an error this many times within `fail_window_s` stops
    the run: `rollstream up` shows its last error lines and exits 1."""
    fail_window_s: float = Field(300.0, gt=0)
    """The window, in seconds, over which `fail_restarts` failures are counted."""
    progress_every_s: float = Field(10.0, gt=0)
    """Without a terminal (`--no-view` or piped output): one progress line this often."""
    sync_threads: int | None = Field(None, ge=1)
    """`--mode sync`: torch CPU threads of its one process (None: one per core this process
    may use, at most 4). The stage processes of the streaming run keep their own `threads` (1
    in the default run, so stages do not fight over cores). Measured to +30 points: on 4 cores
    + an H100, 72.5 s on 4 threads against 116 s on one; on 2 cores 1.4x the learner steps on
    2; 16 threads on 16 cores no sooner than 4, for 2.2x the CPU (benchmarks/RESULTS.md)."""
    sync_save_every_s: float | None = Field(300.0, gt=0)
    """`--mode sync`: also write the trained policy (and `sync_summary.json`, `finished`
    false) this often while the run goes, so a crash or kill -9 keeps the newest; it is
    always written at the end. None: only at the end."""


class RunConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field("", pattern=r"^[A-Za-z0-9_\-.]*$")
    """Run name: folder `runs/<name>/` and the key of its eval results ("": the model's name,
    `tiny` or `small` for the built-in model, else the model folder's name)."""
    seed: int = 0
    """Seed for every stage (each derives its own)."""
    kafka: KafkaSettings = KafkaSettings()
    model: ModelSpec = ModelSpec()
    weights: WeightStoreSpec = WeightStoreSpec()
    target: TargetSpec = TargetSpec()
    plugins: list[str] = []
    """Folders put first on every stage's `sys.path`, so user tasks, rewards and filters in
    them can be named as "module:object" (`rollstream up --plugins DIR` adds one)."""
    up: UpSpec = UpSpec()
    """How `rollstream up` supervises the stages and reports progress."""
    stages: dict[str, StageSpec] = {}
    """Replicas and env per stage name (feed, generator, scorer, filter, replay, learner,
    evaluator)."""
    staleness: StalenessSpec = StalenessSpec()
    """How old a sample may be when trained: the bound replay and the generators keep."""
    feed: dict[str, Any] = {}
    generator: dict[str, Any] = {}
    scorer: dict[str, Any] = {}
    filter: dict[str, Any] = {}
    replay: dict[str, Any] = {}
    learner: dict[str, Any] = {}
    evaluator: dict[str, Any] = {}

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, data: Any) -> Any:
        return renamed(data) if isinstance(data, dict) else data

    @model_validator(mode="after")
    def _named(self) -> RunConfig:
        if not self.name:
            path = self.model.path
            base = Path(path.rstrip("/")).name if path else self.model.size
            self.name = re.sub(r"[^A-Za-z0-9_\-.]", "-", base).strip(".-") or "run"
        return self

    def replicas(self, stage: str) -> int:
        spec = self.stages.get(stage)
        return spec.replicas if spec else 1


def format_errors(
    exc: ValidationError, prefix: str = "", model: type[BaseModel] | None = None
) -> str:
    """Every error of `exc` on one line, each naming its field (under `prefix`), an unknown
    key with the closest field of `model`: "learner.lr: ...; feed.nn: ... (did you mean n?)"."""
    lines = []
    for err in exc.errors():
        path = ".".join(str(p) for p in (prefix, *err["loc"]) if p != "")
        line = f"{path or '(top)'}: {err['msg']}"
        if err["type"] == "extra_forbidden" and model is not None:
            line += _did_you_mean(model, err["loc"])
        lines.append(line)
    return "; ".join(lines)


def _did_you_mean(model: type[BaseModel], loc: tuple[Any, ...]) -> str:
    """For an unknown key at `loc`: the closest field name of the model it sits in."""
    import difflib

    for key in loc[:-1]:  # down to the model holding the unknown key
        field = model.model_fields.get(str(key))
        inner = field.annotation if field is not None else None
        if not (isinstance(inner, type) and issubclass(inner, BaseModel)):
            return ""
        model = inner
    close = difflib.get_close_matches(str(loc[-1]), list(model.model_fields), n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


def _set_path(data: dict[str, Any], path: str, value: Any) -> None:
    keys = path.split(".")
    cur = data
    for k in keys[:-1]:
        nxt = cur.get(k)
        if not isinstance(nxt, dict):
            nxt = cur[k] = {}
        cur = nxt
    cur[keys[-1]] = value


REPLACED_WHOLE = frozenset({"target"})
"""Sections a run file replaces instead of merging: a run file with `target: {steps: 100}`
means "stop at 100 steps", not "at 100 steps or at the defaults' 10 minutes". (`--set` and
env variables name one field each, and change only that field.)"""


def _merge(
    base: dict[str, Any],
    top: dict[str, Any],
    origin: str,
    sources: dict[str, str],
    prefix: str = "",
    whole: frozenset[str] = frozenset(),
) -> None:
    """Layer `top` over `base` in place: mappings merge key by key, anything else (scalars,
    lists such as `filter.chain`) replaces. `sources` records, per dotted leaf, who set it."""
    for key, value in top.items():
        dotted = f"{prefix}{key}"
        if dotted not in whole and isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value, origin, sources, dotted + ".", whole)
            continue
        base[key] = value
        for k in [k for k in sources if k == dotted or k.startswith(dotted + ".")]:
            del sources[k]
        _record(value, origin, sources, dotted)


def _record(value: Any, origin: str, sources: dict[str, str], dotted: str) -> None:
    if isinstance(value, dict) and value:
        for k, v in value.items():
            _record(v, origin, sources, f"{dotted}.{k}")
    else:
        sources[dotted] = origin


def _nest(dotted: str, value: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    _set_path(out, dotted, value)
    return out


def _read_yaml(p: Path) -> dict[str, Any]:
    if not p.exists():
        raise ConfigError(f"config file {p} does not exist")
    try:
        loaded = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: not valid YAML: {exc}") from None
    if not isinstance(loaded, dict):
        raise ConfigError(f"{p}: the top level must be a mapping")
    return loaded


def load_layers(
    paths: list[str | Path] | None = None,
    overrides: list[str] | None = None,
    env: dict[str, str] | None = None,
) -> tuple[RunConfig, dict[str, str]]:
    """Layer run files (in order), then `ROLLSTREAM_<SECTION>__<FIELD>` environment variables,
    then `--set PATH=VALUE` items, validate the result, and say where every value came from:
    the second element maps each dotted field that a layer set to that layer ("file NAME",
    "env NAME", "--set"); fields no layer set keep the model's default."""
    data: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for path in paths or []:
        p = Path(path)
        origin = f"file {p}"
        _merge(data, renamed(_read_yaml(p), origin), origin, sources, whole=REPLACED_WHOLE)
    env = dict(os.environ) if env is None else env
    for key, value in sorted(env.items()):
        if key.startswith("ROLLSTREAM_") and "__" in key:
            dotted = key[len("ROLLSTREAM_") :].lower().replace("__", ".")
            layer = renamed(_nest(dotted, yaml.safe_load(value)), f"env {key}")
            _merge(data, layer, f"env {key}", sources)
    for item in overrides or []:
        dotted, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--set expects PATH=VALUE, got {item!r}")
        layer = renamed(_nest(dotted.strip(), yaml.safe_load(value)), f"--set {dotted}")
        _merge(data, layer, "--set", sources)
    try:
        cfg = RunConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_errors(exc, model=RunConfig)) from None
    unknown = set(cfg.stages) - set(STAGE_NAMES)
    if unknown:
        raise ConfigError(f"stages: unknown stage(s) {sorted(unknown)}; known: {STAGE_NAMES}")
    changes = env_kafka()
    kafka = kafka_with(cfg.kafka, changes, ", ".join(ENV_FIELDS[k] for k in changes))
    return cfg.model_copy(update={"kafka": kafka}), sources


def kafka_with(kafka: KafkaSettings, changes: dict[str, Any], source: str) -> KafkaSettings:
    """`kafka` with `changes` (flags, environment) validated as a run file's are: a bad value
    is a ConfigError naming the field and `source`."""
    if not changes:
        return kafka
    try:
        return KafkaSettings.model_validate({**kafka.model_dump(), **changes})
    except ValidationError as exc:
        raise ConfigError(f"{format_errors(exc, 'kafka')} ({source})") from None


def load_config(
    path: str | Path | None = None,
    overrides: list[str] | None = None,
    env: dict[str, str] | None = None,
) -> RunConfig:
    """Read one run file (as is, no defaults under it), apply env and `--set` overrides, and
    validate. ConfigError names every bad field. `rollstream up` layers its run files over the
    built-in defaults with `load_layers`."""
    return load_layers([path] if path is not None else [], overrides, env)[0]


def section(cfg: RunConfig, name: str, model: type[T]) -> T:
    """Validate one stage's section with that stage's model; ConfigError names the field. The
    fields the `staleness` section sets (STALENESS_FIELDS) come from there."""
    data = dict(getattr(cfg, name))
    for field, key in STALENESS_FIELDS.get(name, {}).items():
        data[field] = getattr(cfg.staleness, key)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_errors(exc, name, model)) from None


# Each stage section -> its pydantic model, in rollstream.services.<stage>.config
SECTION_MODELS = {
    "feed": "FeedConfig",
    "generator": "GeneratorConfig",
    "scorer": "ScorerConfig",
    "filter": "FilterConfig",
    "replay": "ReplayConfig",
    "learner": "LearnerConfig",
    "evaluator": "EvaluatorConfig",
}


def section_models() -> dict[str, type[BaseModel]]:
    """Each stage's section -> the pydantic model in that stage's config.py (imported now)."""
    return {
        stage: getattr(importlib.import_module(f"rollstream.services.{stage}.config"), name)
        for stage, name in SECTION_MODELS.items()
    }


def dump(cfg: RunConfig) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
