"""From a PromptTask to a GenRequest, and from its samples to Rollouts: the generator's pure
steps around the engine, shared by the generator stage and `rollstream up --mode sync`."""

from __future__ import annotations

from typing import Any

import msgspec

from rollstream.schemas import PromptTask, Rollout, Sampling, pack_floats, pack_ids
from rollstream.services.generator.backend import GenRequest, GenSample
from rollstream.services.generator.config import SamplingDefaults
from rollstream.services.models.load import encode_prompt


def request_of(
    task: PromptTask,
    request_id: str,
    defaults: SamplingDefaults,
    tokenizer: Any,
    template: str,
    system_prompt: str | None = None,
) -> GenRequest:
    """The engine request for `task`: the generator's sampling defaults with the task's own
    overrides on top, the prompt under `template` (the task's own template wins)."""
    s = defaults.model_dump()
    if task.sampling is not None:
        own = msgspec.structs.asdict(task.sampling)
        s.update({k: v for k, v in own.items() if v is not None and k != "n"})
    ids = encode_prompt(tokenizer, task.prompt, task.template or template, system_prompt)
    return GenRequest(request_id=request_id, prompt_ids=list(ids), n=task.n, **s)


def sampling_of(req: GenRequest) -> Sampling:
    """What a rollout says it was sampled with."""
    return Sampling(
        n=req.n,
        temperature=req.temperature,
        top_p=req.top_p,
        top_k=req.top_k,
        max_tokens=req.max_tokens,
        stop=req.stop or None,
        seed=req.seed,
        regex=req.regex,
        choice=req.choice,
        json_schema=req.json_schema,
    )


def rollouts_of(
    task: PromptTask,
    req: GenRequest,
    samples: list[GenSample],
    version: int,
    now: float,
    *,
    generator_id: str = "",
    queued_s: float = 0.0,
    generate_s: float = 0.0,
) -> list[Rollout]:
    """One Rollout per sample of the group `req.request_id`, stamped with the policy `version`
    it was sampled on."""
    sampling, prompt_ids = sampling_of(req), pack_ids(req.prompt_ids)
    return [
        Rollout(
            rollout_id=f"{req.request_id}#{i}",
            group_id=req.request_id,
            task_id=task.task_id,
            task=task.task,
            sample_index=i,
            group_size=req.n,
            prompt=task.prompt,
            completion=s.text,
            prompt_ids=prompt_ids,
            completion_ids=pack_ids(s.completion_ids),
            logprobs=pack_floats(s.logprobs),
            finish_reason=s.finish_reason,  # type: ignore[arg-type]
            policy_version=version,
            sampling=sampling,
            answer=task.answer,
            reference=task.reference,
            generator_id=generator_id,
            queued_s=queued_s,
            generate_s=generate_s,
            produced_at=now,
        )
        for i, s in enumerate(samples)
    ]
