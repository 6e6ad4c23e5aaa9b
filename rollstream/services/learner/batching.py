"""TrainBatch -> padded tensors, split into micro-batches by a token budget. No I/O.

Every sample (prompt + completion) becomes one right-padded row. Per-token tensors are aligned
to tokens: column t holds the quantity of token t, so `completion_mask[i, t]` is 1 exactly on
sample i's completion tokens and `behav_logp[i, t]` is the behaviour log-prob the generator
recorded for that token (the wire's `logprobs`, one per completion token). A sample's prompt
must hold at least one token (the built-in tokenizer prepends <bos>), since the first
completion token is predicted from the position before it.

Micro-batches: rows sorted by length (longest first) are packed greedily while
rows x longest-row <= `token_budget` (the padded size, what memory scales with); a row longer
than the budget gets a micro-batch to itself. Every row lands in exactly one micro-batch. The
loss of each micro-batch is normalised with the *whole* batch's `Norm` (trained tokens and
sequences), so the micro-batch losses add up to the full-batch loss (see losses.py).

Several processes (data parallel, see distributed.py): `plan` first forms each optimizer
step's rows exactly as one process would, then deals them to the ranks balanced by tokens,
then splits each rank's share by the token budget. Every rank runs the same number of
micro-batches (DDP and FSDP need every rank in every forward / backward): a rank with fewer
gets padding micro-batches (`Planned.pad`, one short row whose loss is multiplied by 0).
Every rank holds the whole batch, so it plans every rank's share itself, without messages.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import torch
from torch import Tensor

from rollstream.schemas import TrainBatch, floats, ids
from rollstream.services.learner.losses import Norm


@dataclass
class Row:
    """One sample of a batch, unpadded."""

    tokens: np.ndarray  # (P + C,) int32: prompt then completion
    prompt_len: int
    behav_logp: np.ndarray  # (C,) float32
    advantage: float
    weight: float  # the replay importance weight of its group (BatchItem.weight)
    policy_version: int
    group_id: str
    rollout_id: str
    temperature: float = 1.0  # the sampling temperature of its behaviour log-probs

    @property
    def completion_len(self) -> int:
        return len(self.tokens) - self.prompt_len


@dataclass
class TensorBatch:
    """Padded tensors of some rows; (B, T) unless noted."""

    input_ids: Tensor  # long, pad_id after each row's end
    attention_mask: Tensor  # long, 1 on real tokens
    completion_mask: Tensor  # float, 1 on completion tokens
    behav_logp: Tensor  # float, 0 outside completions
    advantages: Tensor  # float, the row's advantage on its completion tokens, 0 elsewhere
    weights: Tensor  # (B,) float, replay importance weights
    versions: Tensor  # (B,) long, policy version of each row
    temperatures: Tensor  # (B,) float, sampling temperature of each row
    rows: list[int]  # index of each row in the batch's row list

    def to(self, device: torch.device | str) -> TensorBatch:
        moved = {
            f.name: getattr(self, f.name).to(device)
            for f in fields(self)
            if isinstance(getattr(self, f.name), Tensor)
        }
        return TensorBatch(**moved, rows=self.rows)


def rows_of(batch: TrainBatch) -> list[Row]:
    """One Row per sample, in item then sample order; checks per-token lengths agree."""
    out = []
    for item in batch.items:
        g = item.group
        for sample, adv in zip(g.samples, g.advantages, strict=True):
            r = sample.rollout
            prompt, completion, lp = ids(r.prompt_ids), ids(r.completion_ids), floats(r.logprobs)
            if len(lp) != len(completion):
                raise ValueError(f"{r.rollout_id}: {len(lp)} logprobs for {len(completion)} tokens")
            if len(prompt) == 0 and len(completion) > 0:
                raise ValueError(f"{r.rollout_id}: empty prompt (nothing predicts token 0)")
            out.append(
                Row(
                    tokens=np.concatenate([prompt, completion]),
                    prompt_len=len(prompt),
                    behav_logp=lp,
                    advantage=float(adv),
                    weight=float(item.weight),
                    policy_version=r.policy_version,
                    group_id=g.group_id,
                    rollout_id=r.rollout_id,
                    temperature=_temperature(r.sampling.temperature),
                )
            )
    return out


def _temperature(t: float | None) -> float:
    """The temperature that scaled the behaviour log-probs; greedy (0) and unset count as 1."""
    return float(t) if t else 1.0


def norm_of(rows: list[Row]) -> Norm:
    """Denominators of the whole batch: trained completion tokens and sequences."""
    return Norm(
        tokens=max(1.0, float(sum(r.completion_len for r in rows))),
        seqs=max(1.0, float(len(rows))),
    )


def collate(rows: list[Row], index: list[int], pad_id: int = 0) -> TensorBatch:
    """Right-padded tensors of `rows[i] for i in index`."""
    sel = [rows[i] for i in index]
    b, t = len(sel), max((len(r.tokens) for r in sel), default=0)
    input_ids = torch.full((b, t), pad_id, dtype=torch.long)
    attention = torch.zeros((b, t), dtype=torch.long)
    comp = torch.zeros((b, t), dtype=torch.float32)
    behav = torch.zeros((b, t), dtype=torch.float32)
    adv = torch.zeros((b, t), dtype=torch.float32)
    for i, r in enumerate(sel):
        n, p = len(r.tokens), r.prompt_len
        input_ids[i, :n] = torch.from_numpy(r.tokens.astype(np.int64))
        attention[i, :n] = 1
        comp[i, p:n] = 1.0
        behav[i, p:n] = torch.from_numpy(np.array(r.behav_logp, dtype=np.float32))
        adv[i, p:n] = r.advantage
    return TensorBatch(
        input_ids=input_ids,
        attention_mask=attention,
        completion_mask=comp,
        behav_logp=behav,
        advantages=adv,
        weights=torch.tensor([r.weight for r in sel], dtype=torch.float32),
        versions=torch.tensor([r.policy_version for r in sel], dtype=torch.long),
        temperatures=torch.tensor([r.temperature for r in sel], dtype=torch.float32),
        rows=list(index),
    )


def split_by_tokens(lengths: list[int], token_budget: int | None) -> list[list[int]]:
    """Row indices per micro-batch: longest first, rows x longest <= budget (module doc)."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    if token_budget is None:
        return [order] if order else []
    out: list[list[int]] = []
    current: list[int] = []
    for i in order:
        longest = lengths[current[0]] if current else lengths[i]
        if current and (len(current) + 1) * longest > token_budget:
            out.append(current)
            current = []
        current.append(i)
    if current:
        out.append(current)
    return out


@dataclass
class Planned:
    """One micro-batch of one rank: row indices (rows_of order); `pad`: run it with loss x 0
    only so that every rank runs as many micro-batches."""

    rows: list[int]
    pad: bool = False


def shard_rows(lengths: list[int], world: int) -> list[list[int]]:
    """Indices of `lengths` per rank: longest first, each to the rank with the fewest tokens
    so far (the lowest rank on a tie). Deterministic, so every rank computes the same deal."""
    shards: list[list[int]] = [[] for _ in range(world)]
    load = [0] * world
    for i in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
        r = min(range(world), key=lambda k: (load[k], k))
        shards[r].append(i)
        load[r] += lengths[i]
    return shards


def plan(
    lengths: list[int],
    token_budget: int | None,
    mini_steps: int = 1,
    rank: int = 0,
    world: int = 1,
    empty: set[int] | frozenset[int] = frozenset(),
) -> list[tuple[list[int], list[Planned]]]:
    """Per optimizer step: (every row of the step, over all ranks; this rank's micro-batches).

    The steps are those of one process: micro-batches of the whole batch by token budget,
    step i taking micro-batches i, i + mini_steps, ... With `world` > 1 each step's rows are
    dealt to the ranks (shard_rows), split again by the budget, and padded to the largest
    rank's count with `Planned(pad=True)` micro-batches of the step's shortest row. Rows in
    `empty` (no completion token: nothing to train) count in their step's rows but are in no
    micro-batch (a forward pass without a completion token would leave the head unused)."""
    groups = split_by_tokens(lengths, token_budget)
    out: list[tuple[list[int], list[Planned]]] = []
    for i in range(min(mini_steps, len(groups))):
        step = groups[i::mini_steps]
        members = [r for g in step for r in g]
        if world == 1:
            kept = ([r for r in g if r not in empty] for g in step)
            out.append((members, [Planned(g) for g in kept if g]))
            continue
        trained = [r for r in members if r not in empty]
        per_rank = []
        for share in shard_rows([lengths[r] for r in trained], world):
            rows = [trained[j] for j in share]
            split = split_by_tokens([lengths[r] for r in rows], token_budget)
            per_rank.append([Planned([rows[j] for j in g]) for g in split])
        count = max(len(p) for p in per_rank)
        mine = per_rank[rank]
        if len(mine) < count:
            shortest = min(trained, key=lambda r: (lengths[r], r))
            mine = mine + [Planned([shortest], pad=True)] * (count - len(mine))
        out.append((members, mine))
    return out


def micro_batches(
    batch: TrainBatch, token_budget: int | None, pad_id: int = 0
) -> tuple[list[TensorBatch], Norm, list[Row]]:
    """The batch as micro-batches of padded tensors, the whole batch's Norm, and its rows."""
    rows = rows_of(batch)
    groups = split_by_tokens([len(r.tokens) for r in rows], token_budget)
    return [collate(rows, g, pad_id) for g in groups], norm_of(rows), rows
