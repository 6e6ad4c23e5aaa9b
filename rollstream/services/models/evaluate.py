"""Held-out accuracy: greedy, batched generation (left padding, KV cache) over task items,
each completion judged by its task's exact checker. Used by init-model, the evaluator service,
the sync baseline and tests."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, TypedDict, Unpack


@dataclass
class Accuracy:
    accuracy: float
    n: int
    per_task: dict[str, float] = field(default_factory=dict)
    completions: list[str] = field(default_factory=list)


class GreedyOptions(TypedDict, total=False):
    """greedy_completions' options, which heldout_accuracy passes on (defaults: there)."""

    max_new_tokens: int
    batch_size: int
    template: str
    system_prompt: str | None


def greedy_completions(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    *,
    max_new_tokens: int = 32,
    batch_size: int = 64,
    template: str = "plain",
    system_prompt: str | None = None,
) -> list[str]:
    """Greedy completions of `prompts` (text after the prompt, special tokens removed), each
    put to the model as is (`plain`) or through its chat template (`chat`); generation stops
    at any of the model's stop tokens."""
    import torch

    from rollstream.services.models.load import encode_prompt, stop_token_ids

    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    stops = stop_token_ids(model, tokenizer)
    out: list[str] = []
    for start in range(0, len(prompts), batch_size):
        chunk = [
            encode_prompt(tokenizer, p, template, system_prompt)
            for p in prompts[start : start + batch_size]
        ]
        width = max(len(ids) for ids in chunk)
        input_ids = torch.full((len(chunk), width), pad, dtype=torch.long)
        attn = torch.zeros_like(input_ids)
        for i, ids in enumerate(chunk):
            input_ids[i, width - len(ids) :] = torch.tensor(ids)
            attn[i, width - len(ids) :] = 1
        with torch.inference_mode():
            gen = model.generate(
                input_ids=input_ids.to(device),
                attention_mask=attn.to(device),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                temperature=None,
                top_p=None,
                top_k=None,
                pad_token_id=pad,
                eos_token_id=stops,
            )
        for row in gen[:, width:].tolist():
            out.append(tokenizer.decode(row, skip_special_tokens=True))
    return out


def heldout_accuracy(
    model: Any, tokenizer: Any, items: Sequence[Any], **options: Unpack[GreedyOptions]
) -> Accuracy:
    """Fraction of `items` (tasks.Item) whose greedy completion passes the task's checker;
    overall and per task. `options` go to greedy_completions."""
    from rollstream.services.tasks import get_task

    was_training = model.training
    model.eval()
    try:
        completions = greedy_completions(model, tokenizer, [it.prompt for it in items], **options)
    finally:
        model.train(was_training)
    right: dict[str, list[bool]] = defaultdict(list)
    for it, comp in zip(items, completions, strict=True):
        right[it.task].append(get_task(it.task).check(comp, it.answer))
    total = sum(sum(v) for v in right.values())
    n = len(items)
    return Accuracy(
        accuracy=total / n if n else 0.0,
        n=n,
        per_task={t: sum(v) / len(v) for t, v in sorted(right.items())},
        completions=completions,
    )
