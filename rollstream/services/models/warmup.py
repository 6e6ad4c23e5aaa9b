"""Brief supervised warm-up that leaves a model *partly* competent on every task of a mixture.

Reads and writes nothing: it trains the model it is given, in place, and returns a report.

Why "gated": on these tasks a small model learns each family suddenly, and at very different
times (sorting first, addition last). Stopping at a fixed step leaves some families perfect and
others at zero - and RL cannot improve a family whose samples are never right. So every
`check_every` steps each family still in training is scored (greedy, on training-split
validation items, with an exponential moving average of the weights, whose accuracy moves
smoothly where the raw weights' jumps about). A family whose accuracy beats the best constant
answer by `gate` is *held*: from then on it gets only `hold_weight` of the batch, enough not to
forget it, too little to finish learning it. Training stops when every family is held.

Each family is also trained on the `spread` difficulties below the evaluated one, so the
model meets every mechanism on easy items first and is still unsure at the evaluated
difficulty, where its accuracy then rises gradually rather than in one jump. The result is
right some of the time on every family, with samples at temperature 1 that are right often
enough for RL to learn from (build.py has the measured numbers).
"""

from __future__ import annotations

import copy
import random
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from rollstream.services.tasks import DEFAULT_MIXTURE, Item, MixtureEntry, get_task


@dataclass(frozen=True)
class WarmupSettings:
    """How the base model is warmed up (defaults: the built-in model, 20-60 s on a CPU)."""

    mixture: Sequence[MixtureEntry] = DEFAULT_MIXTURE
    # Share of each batch per task while it is still learning (others: 1.0); addition and
    # counting learn slowest, so they start with more.
    sft_weights: Mapping[str, float] = field(default_factory=lambda: {"add": 4.0, "count": 2.0})
    batch_size: int = 64
    lr: float = 1e-3
    warmup_steps: int = 50
    max_steps: int = 1500
    ema_decay: float = 0.95
    gate: float = 0.15  # accuracy above the best constant answer at which a task is held
    gates: Mapping[str, float] = field(default_factory=dict)  # per-task gate, else `gate`
    # Also train on the `spread` difficulties below each entry's, uniformly mixed with it: the
    # model learns each mechanism on easier items and is still unsure at the evaluated one.
    spread: int = 3
    hold_weight: float = 0.1
    check_every: int = 10
    val_size: int = 100
    max_new_tokens: int = 12


@dataclass
class WarmupReport:
    steps: int
    held_at: dict[str, int]  # task (or "task:difficulty") -> step at which it was held
    loss: float
    seconds: float


def _chance(items: list[Item]) -> float:
    """Accuracy of always giving the most common answer."""
    return max(Counter(i.answer for i in items).values()) / len(items)


def _batch(tokenizer: Any, items: list[Item], eos_id: int, pad_id: int) -> tuple[Any, Any, Any]:
    """Right-padded (ids, attention mask, labels); labels only on the answer and EOS."""
    import torch

    prompts = tokenizer([i.prompt for i in items])["input_ids"]
    answers = tokenizer([i.answer for i in items], add_special_tokens=False)["input_ids"]
    seqs = [p + a + [eos_id] for p, a in zip(prompts, answers, strict=True)]
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)  # (B, T)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)  # (B, T)
    labels = torch.full((len(seqs), width), -100, dtype=torch.long)  # (B, T)
    for row, (seq, prompt) in enumerate(zip(seqs, prompts, strict=True)):
        ids[row, : len(seq)] = torch.tensor(seq)
        mask[row, : len(seq)] = 1
        labels[row, len(prompt) : len(seq)] = torch.tensor(seq[len(prompt) :])
    return ids, mask, labels


def _spread_stream(name: str, difficulty: int, spread: int, seed: int) -> Iterator[Item]:
    task = get_task(name)
    levels = range(max(task.min_difficulty, difficulty - spread), difficulty + 1)
    streams = [task.iter_train(seed, d) for d in levels]
    rng = random.Random(f"spread/{name}/{difficulty}/{seed}")
    while True:
        yield next(rng.choice(streams))


def _accuracy(model: Any, tokenizer: Any, items: list[Item], settings: WarmupSettings) -> float:
    from rollstream.services.models.evaluate import greedy_completions

    said = greedy_completions(
        model,
        tokenizer,
        [i.prompt for i in items],
        max_new_tokens=settings.max_new_tokens,
        batch_size=256,
    )
    right = [get_task(i.task).check(c, i.answer) for i, c in zip(items, said, strict=True)]
    return sum(right) / len(right)


def warm_up(
    model: Any,
    tokenizer: Any,
    settings: WarmupSettings,
    seed: int,
    log: Callable[[str], None] = print,
) -> tuple[Any, WarmupReport]:
    """Train `model` on the mixture until every task is held (or `max_steps`), on the device
    its weights are on; returns the moving-average model (the one to save) and a report.
    Deterministic for a seed under build._deterministic on a CPU (on a GPU nearly so)."""
    import torch

    start = time.perf_counter()
    device = next(model.parameters()).device
    entries = [(str(n), int(d)) for n, d, *_ in settings.mixture]
    names = [n if [e[0] for e in entries].count(n) == 1 else f"{n}:{d}" for n, d in entries]
    streams = [_spread_stream(n, d, settings.spread, seed) for n, d in entries]
    val = [get_task(n).sample(seed + 10_007, settings.val_size, d) for n, d in entries]
    chance = [_chance(v) for v in val]
    weights = [float(settings.sft_weights.get(n, 1.0)) for n, _ in entries]
    held_at: dict[str, int] = {}
    rng = random.Random(f"warmup/{seed}")
    eos_id, pad_id = tokenizer.eos_token_id, tokenizer.pad_token_id

    ema = copy.deepcopy(model).eval()
    for p in ema.parameters():
        p.requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=settings.lr, betas=(0.9, 0.98), weight_decay=0)
    model.train()
    step, loss_value = 0, float("nan")
    while step < settings.max_steps and len(held_at) < len(entries):
        step += 1
        picks = rng.choices(range(len(entries)), weights=weights, k=settings.batch_size)
        ids, mask, labels = (
            t.to(device)
            for t in _batch(tokenizer, [next(streams[i]) for i in picks], eos_id, pad_id)
        )
        for group in opt.param_groups:
            group["lr"] = settings.lr * min(1.0, step / max(1, settings.warmup_steps))
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        loss_value = loss.item()
        with torch.no_grad():
            for p_ema, p in zip(ema.parameters(), model.parameters(), strict=True):
                p_ema.lerp_(p, 1.0 - settings.ema_decay)
        if step % settings.check_every:
            continue
        for i, name in enumerate(names):
            if name in held_at:
                continue
            acc = _accuracy(ema, tokenizer, val[i], settings)
            if acc - chance[i] >= settings.gates.get(entries[i][0], settings.gate):
                held_at[name] = step
                weights[i] = settings.hold_weight
                log(
                    f"  step {step:4d}: {name} at {acc:.0%} on validation (constant answer: "
                    f"{chance[i]:.0%}) -> held"
                )
        if step % (settings.check_every * 10) == 0:
            log(
                f"  step {step:4d}: loss {loss_value:.3f}, held {len(held_at)}/{len(entries)}, "
                f"{time.perf_counter() - start:.0f}s"
            )
    model.eval()
    return ema, WarmupReport(step, held_at, loss_value, time.perf_counter() - start)


def dataset_task(
    path: str,
    name: str | None = None,
    prompt_field: str = "prompt",
    answer_field: str = "answer",
) -> Any:
    """A JSONL file of prompt/answer rows as a registered task (name: the file's stem), so the
    warm-up can train on it like on any task: items are rows drawn at random, the held-out
    split is the task's usual hashed 10 %, and a completion is right when its first line equals
    the answer's first line (a GSM8K answer's `#### N` line counts as its answer: `N`)."""
    import json
    from pathlib import Path

    from rollstream.services.tasks import Task, TaskError, register

    file = Path(path).expanduser()
    rows: list[tuple[str, str]] = []
    try:
        lines = file.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise TaskError(f"--dataset {path}: {exc.strerror or exc}") from None
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            prompt, answer = row[prompt_field], row[answer_field]
        except (ValueError, KeyError, TypeError):
            raise TaskError(
                f"{file}:{lineno}: not a JSON object with {prompt_field!r} and {answer_field!r}"
            ) from None
        answer = str(answer)
        if "####" in answer:
            answer = answer.rsplit("####", 1)[1].strip().replace(",", "")
        rows.append((str(prompt), answer.strip().split("\n", 1)[0]))
    if not rows:
        raise TaskError(f"--dataset {path}: no rows")

    def make(rng: random.Random, difficulty: int) -> tuple[str, str]:
        return rows[rng.randrange(len(rows))]

    task = Task(
        name=name or file.stem,
        make=make,
        description=f"rows of {file}",
        default_difficulty=1,
        min_difficulty=1,
        max_difficulty=1,
    )
    return register(task, replace=True)
