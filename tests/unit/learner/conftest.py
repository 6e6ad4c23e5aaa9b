"""Builders of small TrainBatches and a tiny causal LM for the learner tests."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytest

from rollstream.schemas import ScoredRollout, TrainBatch
from rollstream.schemas import synthetic as syn

VOCAB = 24


def sample(
    gid: str, i: int, prompt: Sequence[int], completion: Sequence[int], logprobs=None
) -> ScoredRollout:
    lps = logprobs if logprobs is not None else -1.0
    return syn.scored(gid, i, prompt, completion, group_size=2, logprobs=lps, temperature=1.0)


def batch(groups: list[tuple[str, list[tuple], list[float], float]]) -> TrainBatch:
    """groups: (group_id, [(prompt, completion[, logprobs])...], advantages, weight)."""
    built = []
    for gid, seqs, advs, _ in groups:
        samples = [sample(gid, i, *s) for i, s in enumerate(seqs)]
        built.append(syn.group(gid, samples, advs, reward_mean=0, reward_std=0, size=2))
    return syn.train_batch(built, learner_id="L", weights=[w for *_, w in groups])


def tiny_model(seed: int = 0):
    from rollstream.services.models.synthetic import random_llama

    model = random_llama(
        seed,
        vocab_size=VOCAB,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=64,
    )
    return model.double()


@pytest.fixture
def make_batch() -> Callable[..., TrainBatch]:
    return batch


@pytest.fixture
def make_model() -> Callable:
    return tiny_model
