"""TrainBatch -> padded tensors, and micro-batches by token budget."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rollstream.services.learner.batching import micro_batches, split_by_tokens


def two_groups(make_batch):
    return make_batch(
        [
            ("g0", [([1, 2], [5, 6, 7], [-0.1, -0.2, -0.3]), ([1], [8], [-0.4])], [1.0, -1.0], 0.5),
            ("g1", [([1, 2, 3], [9, 9], [-0.5, -0.6])], [2.0], 1.0),
        ]
    )


def test_collate_aligns_every_per_token_tensor(make_batch) -> None:
    (mb,), norm, rows = micro_batches(two_groups(make_batch), token_budget=None, pad_id=0)
    # rows come longest first: g0/0 (5 tokens), g1/0 (5), g0/1 (2)
    assert [rows[i].rollout_id for i in mb.rows] == ["g0/0", "g1/0", "g0/1"]
    assert mb.input_ids.tolist() == [[1, 2, 5, 6, 7], [1, 2, 3, 9, 9], [1, 8, 0, 0, 0]]
    assert mb.attention_mask.tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 1, 1], [1, 1, 0, 0, 0]]
    assert mb.completion_mask.tolist() == [[0, 0, 1, 1, 1], [0, 0, 0, 1, 1], [0, 1, 0, 0, 0]]
    want_behav = [[0, 0, -0.1, -0.2, -0.3], [0, 0, 0, -0.5, -0.6], [0, -0.4, 0, 0, 0]]
    assert torch.allclose(mb.behav_logp, torch.tensor(want_behav))
    assert mb.advantages.tolist() == [[0, 0, 1, 1, 1], [0, 0, 0, 2, 2], [0, -1, 0, 0, 0]]
    assert mb.weights.tolist() == [0.5, 1.0, 0.5]
    assert (norm.tokens, norm.seqs) == (6.0, 3.0)


def test_split_by_tokens_by_hand() -> None:
    # sorted by length: 8 (row 2), 7 (row 4), 5 (row 0), 3 (row 1), 2 (row 3)
    # [2, 4]: 2 rows x 8 = 16 <= 16; adding row 0 would make 3 x 8 = 24
    # [0, 1, 3]: 3 rows x 5 = 15
    assert split_by_tokens([5, 3, 8, 2, 7], 16) == [[2, 4], [0, 1, 3]]
    assert split_by_tokens([30, 4], 16) == [[0], [1]]  # a row over budget goes alone


def test_micro_batches_cover_every_sample_exactly_once() -> None:
    rng = np.random.default_rng(0)
    for budget in (8, 50, 200, None):
        lengths = rng.integers(1, 40, size=57).tolist()
        parts = split_by_tokens(lengths, budget)
        flat = sorted(i for p in parts for i in p)
        assert flat == list(range(57))
        if budget is not None:
            assert all(len(p) == 1 or len(p) * max(lengths[i] for i in p) <= budget for p in parts)


def test_rejects_logprobs_that_do_not_match_tokens(make_batch) -> None:
    # A Rollout with mismatched arrays cannot even be built (nor decoded off the bus, see
    # tests/unit/test_schema_faults.py), so batching never sees one.
    with pytest.raises(ValueError, match="2 completion tokens but 1 logprobs"):
        make_batch([("g", [([1], [5, 6], [-0.1])], [1.0], 1.0)])
