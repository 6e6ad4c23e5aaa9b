"""Hostile records a consumer must turn into a dead letter with a reason, never a crash or a
silent acceptance (issue 16: D2 tombstones, D3 inconsistent arrays, D4 non-finite numbers)."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import msgspec
import pytest

from rollstream.schemas import (
    MESSAGE_TYPES,
    Group,
    Rollout,
    SchemaError,
    ScoredRollout,
    TrainBatch,
    decode,
    decode_any,
    encode,
    to_builtins,
)

sys.path.insert(0, str(Path(__file__).parents[1] / "golden"))
import make_golden  # noqa: E402


def forged(msg: Any, **path_values: Any) -> bytes:
    """`msg` re-encoded by hand with fields replaced (`a__b=x` sets msg["a"]["b"]), the way
    a hostile producer writes it: no __post_init__ runs on this side."""
    d = to_builtins(msg)
    for path, value in path_values.items():
        *parents, last = path.split("__")
        node = d
        for p in parents:
            node = node[int(p)] if isinstance(node, list) else node[p]
        node[last] = value
    return msgspec.msgpack.encode(d)


@pytest.mark.parametrize("name", sorted(MESSAGE_TYPES))
def test_a_null_value_is_a_schema_error_for_every_message_type(name: str) -> None:
    with pytest.raises(SchemaError, match="null value"):
        decode(None, MESSAGE_TYPES[name])  # type: ignore[arg-type]
    with pytest.raises(SchemaError, match="null value"):
        decode_any(None)  # type: ignore[arg-type]


def test_rollout_arrays_must_agree() -> None:
    r = make_golden.rollout()
    assert decode(encode(r), Rollout) == r
    three_ids = bytes(12)  # 3 tokens, 2 logprobs
    with pytest.raises(SchemaError, match="3 completion tokens but 2 logprobs"):
        decode(forged(r, completion_ids=three_ids), Rollout)
    with pytest.raises(SchemaError, match="`logprobs` has 7 bytes"):
        decode(forged(r, logprobs=bytes(7)), Rollout)
    with pytest.raises(SchemaError, match="`prompt_ids` has 5 bytes"):
        decode(forged(r, prompt_ids=bytes(5)), Rollout)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_numbers_are_refused(bad: float) -> None:
    import numpy as np

    r = make_golden.rollout()
    lp = np.array([-0.25, bad], dtype="<f4").tobytes()
    with pytest.raises(SchemaError, match="logprobs"):
        decode(forged(r, logprobs=lp), Rollout)
    s = make_golden.scored()
    with pytest.raises(SchemaError, match="`reward` is not finite"):
        decode(forged(s, reward=bad), ScoredRollout)
    with pytest.raises(SchemaError, match="`rewards.format` is not finite"):
        decode(forged(s, rewards={"correct": 1.0, "format": bad}), ScoredRollout)
    g = make_golden.group()
    advantages = [bad] + [0.0] * (len(g.samples) - 1)
    with pytest.raises(SchemaError, match="`advantages` is not finite"):
        decode(forged(g, advantages=advantages), Group)
    b = make_golden.examples()["TrainBatch"]
    with pytest.raises(SchemaError, match="`weight` is not finite"):
        decode(forged(b, items__0__weight=bad), TrainBatch)


def test_a_train_batch_with_a_bad_row_is_refused_where_it_is_decoded() -> None:
    b = make_golden.examples()["TrainBatch"]
    with pytest.raises(SchemaError, match="completion tokens but"):
        decode(forged(b, items__0__group__samples__0__rollout__logprobs=bytes(4)), TrainBatch)
    g = make_golden.group()
    with pytest.raises(SchemaError, match="advantages for"):
        decode(forged(g, advantages=[]), Group)


def test_the_filter_dead_letters_tombstones_and_infinite_rewards_instead_of_crashing() -> None:
    from rollstream.services.filter.app import FilterStage
    from rollstream.services.filter.core import FilterCore

    stage = FilterStage(FilterCore(track_pass_rates=False))
    assert stage.add(None, now=1.0) == (None, "ScoredRollout: null value (tombstone)")  # type: ignore[arg-type]
    for bad in (math.inf, math.nan):
        outcome, error = stage.add(forged(make_golden.scored(), reward=bad), now=1.0)
        assert outcome is None and "`reward` is not finite" in error
    assert stage.core.assembler.pending == {}  # nothing half-assembled from a bad sample
