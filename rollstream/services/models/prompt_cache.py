"""A prompt's key/value cache computed once and repeated for the rows that share it: the
generator's (`backend_hf`) and the learner's (`learner/logprobs`) prompt sharing. Pure torch."""

from __future__ import annotations

import functools
import inspect
from typing import Any

from torch import Tensor


def left_pad_positions(mask: Tensor) -> Tensor:
    """Position ids of left-padded rows, as transformers' generate makes them: 0, 1, ... from
    each row's first real token, 0 on the padding."""
    return (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)


def prefix_cache(model: Any, ids: Tensor, mask: Tensor, cache: Any = None) -> Any:
    """The key/value cache of left-padded `ids` under `mask`, with generate's positions
    (`left_pad_positions`): written into `cache` (a static one) or a new one, returned. A model
    with a head computes the last position's logits only (`last_logits_only`)."""
    return model(
        input_ids=ids,
        attention_mask=mask,
        position_ids=left_pad_positions(mask),
        **({} if cache is None else {"past_key_values": cache}),
        use_cache=True,
        **last_logits_only(model),
    ).past_key_values


def last_logits_only(model: Any) -> dict[str, int]:
    """Forward arguments that make a pass whose cache is all that is wanted compute the last
    position's logits only (rows x prompt x vocabulary would be gigabytes for a large
    vocabulary), for a model that takes `logits_to_keep`."""
    return {"logits_to_keep": 1} if _takes_logits_to_keep(type(model)) else {}


@functools.cache
def _takes_logits_to_keep(cls: type) -> bool:
    return "logits_to_keep" in inspect.signature(cls.forward).parameters


def is_plain(cache: Any) -> bool:
    """Whether `cache` is one plain key/value pair per layer, whose batch rows can be repeated
    (not a sliding-window, linear-attention or other cache)."""
    layers = list(getattr(cache, "layers", None) or [])
    return bool(layers) and all(type(x).__name__ == "DynamicLayer" for x in layers)


def repeat_rows(cache: Any, rows: Tensor) -> Any:
    """`cache` (a plain one, `is_plain`) with batch row rows[i] as its row i, in place."""
    for layer in cache.layers:
        layer.keys = layer.keys.index_select(0, rows)
        layer.values = layer.values.index_select(0, rows)
    return cache
