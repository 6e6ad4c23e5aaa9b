"""Builders of small TrainBatches and a tiny causal LM for the learner tests."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytest

from rollstream.schemas import (
    BatchItem,
    Group,
    GroupStats,
    Rollout,
    Sampling,
    ScoredRollout,
    TrainBatch,
    pack_floats,
    pack_ids,
)

VOCAB = 24


def sample(gid: str, i: int, prompt: Sequence[int], completion: Sequence[int], logprobs=None):
    r = Rollout(
        rollout_id=f"{gid}/{i}",
        group_id=gid,
        task_id="t",
        task="toy",
        sample_index=i,
        group_size=2,
        prompt="p",
        completion="c",
        prompt_ids=pack_ids(prompt),
        completion_ids=pack_ids(completion),
        logprobs=pack_floats(logprobs if logprobs is not None else [-1.0] * len(completion)),
        finish_reason="stop",
        policy_version=0,
        sampling=Sampling(n=2, temperature=1.0),
        produced_at=0.0,
    )
    return ScoredRollout(rollout=r, reward=0.0, produced_at=0.0)


def batch(groups: list[tuple[str, list[tuple], list[float], float]]) -> TrainBatch:
    """groups: (group_id, [(prompt, completion[, logprobs])...], advantages, weight)."""
    items = []
    for gid, seqs, advs, weight in groups:
        samples = [sample(gid, i, *s) for i, s in enumerate(seqs)]
        stats = GroupStats(reward_mean=0, reward_std=0, pass_rate=0.5, generated=2, kept=2)
        g = Group(
            group_id=gid,
            task_id="t",
            task="toy",
            samples=samples,
            advantages=list(advs),
            stats=stats,
            policy_version=0,
            produced_at=0.0,
        )
        items.append(BatchItem(group=g, weight=weight))
    return TrainBatch(
        batch_id="b1", learner_id="L", seq=1, items=items, learner_version=0, produced_at=0.0
    )


def tiny_model(seed: int = 0):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=64,
        tie_word_embeddings=False,
    )
    return LlamaForCausalLM(cfg).double()


@pytest.fixture
def make_batch() -> Callable[..., TrainBatch]:
    return batch


@pytest.fixture
def make_model() -> Callable:
    return tiny_model
