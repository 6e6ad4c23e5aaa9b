"""The interface both generation backends implement, and how one is chosen.

A backend turns GenRequests (prompt token ids + resolved sampling parameters) into n samples
each: completion token ids, the behaviour logprob of every sampled token under the
distribution actually sampled from (after temperature / top-k / top-p / constraints), the
decoded text and a finish reason. It can swap its weights in place.
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass, field
from typing import Protocol

log = logging.getLogger(__name__)


class RequestError(ValueError):
    """A request the backend refuses (bad constraint, parameters the engine rejects). The
    generator dead-letters that prompt and goes on with the rest of the batch."""


@dataclass
class GenRequest:
    request_id: str
    prompt_ids: list[int]
    n: int
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1
    max_tokens: int = 16
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    regex: str | None = None
    choice: list[str] | None = None
    json_schema: str | None = None

    def sampling_key(self) -> tuple:
        """Requests with equal keys can share one batched generate call."""
        return (
            self.temperature,
            self.top_p,
            self.top_k,
            self.max_tokens,
            tuple(self.stop),
            self.seed,
            self.regex,
            tuple(self.choice or ()),
            self.json_schema,
        )


@dataclass
class GenSample:
    completion_ids: list[int]
    logprobs: list[float]  # one per completion token
    text: str
    finish_reason: str  # "stop" | "length" | "abort"


class Backend(Protocol):
    name: str

    def generate(self, requests: list[GenRequest]) -> list[list[GenSample]]:
        """One list of `n` samples per request, in request order. RequestError if the
        backend refuses a request (before generating anything)."""
        ...

    def load_weights(self, weights_dir: str) -> float:
        """Load the safetensors in `weights_dir` in place; returns seconds taken."""
        ...

    def close(self) -> None: ...


def vllm_available() -> bool:
    try:
        import vllm  # noqa: F401
    except Exception:
        return False
    return True


def may_fork(kind: str) -> bool:
    """Whether make_backend(kind) may build vLLM, which forks its engine process (a librdkafka
    client must not live across a fork); for "auto" it only asks whether vllm is installed,
    without the seconds of importing it."""
    return kind == "vllm" or (kind == "auto" and importlib.util.find_spec("vllm") is not None)


def make_backend(
    kind: str,
    model_dir: str,
    *,
    seed: int = 0,
    max_model_len: int = 512,
    dtype: str = "auto",
    device: str = "auto",
    share_prompts: bool = True,
    static_cache: bool = True,
    cuda_graphs: bool = True,
    **vllm_args: object,
) -> Backend:
    """`kind`: "vllm", "transformers" or "auto" (vLLM when it imports, else transformers)."""
    if kind == "auto":
        kind = "vllm" if vllm_available() else "transformers"
    if kind == "vllm":
        from rollstream.services.generator.backend_vllm import VLLMBackend

        return VLLMBackend(
            model_dir, seed=seed, max_model_len=max_model_len, dtype=dtype, **vllm_args
        )  # type: ignore[arg-type]
    if kind == "transformers":
        from rollstream.services.generator.backend_hf import HFBackend

        return HFBackend(
            model_dir,
            seed=seed,
            dtype=dtype,
            device=device,
            share_prompts=share_prompts,
            static_cache=static_cache,
            cuda_graphs=cuda_graphs,
        )
    raise ValueError(f"generator.backend: unknown backend {kind!r} (vllm, transformers, auto)")
