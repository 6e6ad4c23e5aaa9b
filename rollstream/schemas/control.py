"""Control plane: weight versions, live knobs, held-out evaluation."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

from rollstream.schemas._base import Message


class WeightUpdate(Message, tag="WeightUpdate", kw_only=True):  # type: ignore[call-arg]
    """learner -> generator, replay, filter. A claim check for one weight version, never the
    tensors. Key: policy. Topic is compacted: the latest version per policy survives.

    `uri` is the version's directory in the weight store (file:// or s3:// ...); `files`
    maps each file in it to its sha256; `sha256` is that of the weights file `weights_file`:
    with `chunk_bytes` 0 the plain sha256 of the file, else its chunked sha256 - the sha256 of
    the line "rollstream-chunked-sha256 <chunk_bytes> <size_bytes>\n" followed by the raw
    sha256 digests of the file's consecutive `chunk_bytes`-byte chunks (hashable in parallel;
    models/weightfile.py)."""

    policy: str
    version: Annotated[int, msgspec.Meta(ge=0)]
    uri: str
    weights_file: str = "model.safetensors"
    sha256: str
    chunk_bytes: Annotated[int, msgspec.Meta(ge=0)] = 0
    size_bytes: Annotated[int, msgspec.Meta(ge=0)]
    files: dict[str, str] = {}
    step: Annotated[int, msgspec.Meta(ge=0)] = 0
    produced_at: float


class ControlUpdate(Message, tag="ControlUpdate", kw_only=True):  # type: ignore[call-arg]
    """CLI/operator -> every stage. The full set of live knobs for one stage. Key: stage.

    Compacted topic: the latest update per stage survives, so `params` always holds every knob
    set so far for that stage (the CLI merges before it publishes). `revision` increases.

    With `applied`, a stage's answer instead (replay, learner -> generator): the value of every
    live knob it runs, after it applied `revision` (0: the run's config); a revision it refused
    gets no answer. Key: `<stage>.applied` (`applied_key`), so that compaction keeps the newest
    request and the newest answer apart. Readers of requests skip answers."""

    stage: str
    params: dict[str, Any]
    revision: Annotated[int, msgspec.Meta(ge=0)] = 0
    issued_by: str = ""
    applied: bool = False
    produced_at: float


def applied_key(stage: str) -> str:
    """The `control` key of `stage`'s answers (ControlUpdate.applied)."""
    return f"{stage}.applied"


class EvalResult(Message, tag="EvalResult", kw_only=True):  # type: ignore[call-arg]
    """evaluator -> UI. Held-out greedy accuracy of one policy version. Key: run."""

    run: str
    policy_version: Annotated[int, msgspec.Meta(ge=0)]
    step: Annotated[int, msgspec.Meta(ge=0)] = 0
    accuracy: Annotated[float, msgspec.Meta(ge=0, le=1)]
    n: Annotated[int, msgspec.Meta(ge=0)]
    per_task: dict[str, float] = {}
    eval_s: float = 0.0
    produced_at: float
