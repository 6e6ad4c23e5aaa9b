"""The transformers backend's own decoding loop: sampling with a fixed-size key/value cache
(transformers' `StaticCache`), on a GPU with the decoding step captured as a CUDA graph.

On a GPU, `model.generate` with its growing cache spends a small model's time launching
kernels one by one from Python: on an H100, 128 rows x 16 tokens of the 8.4M-parameter
built-in model took ~130 ms a call. With the cache at a fixed size, a decoding step's
kernels are recorded once per batch shape (`torch.cuda.CUDAGraph`, as vLLM does) and each
step is one replay, ~30 ms a call (benchmarks/RESULTS.md, twentieth session). Shapes are
bucketed (rows to a power of two, the prompt width and the new tokens to multiples of 16),
and a call reuses a kept shape at most one bucket larger, so a run records a handful.

On the CPU there is no graph and each call gets a cache of its exact shape: the loop does
less per step than `generate` (the built-in tiny model, one thread: 40 samples 52 -> 36 ms).

Sampling is `generate`'s with the same processors and seed: every row is drawn from the
processed scores (temperature, top-k, top-p) as generate draws, and its logprob is read from
the log-softmax of those scores. On the CPU, where the same loop runs without a graph, the
tokens and logprobs are generate's exactly (tested); on a GPU in bf16, the graph gives the
loop's own results exactly, and generate's up to kernel rounding (benchmarks/static_decode.py).
Rows that stopped keep being sampled until every row has stopped; the caller cuts each row at
its first stop token, as it does generate's padding. Weights loaded in place (`load_in_place`)
are what the next replay reads. Only models with SDPA attention and plain static cache layers
(`supports_static`) take this path.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

WIDTH_STEP = 16
"""Prompt widths are left-padded to a multiple of this, and the cache holds a multiple of
this many new tokens: fewer distinct shapes, so fewer graphs to record."""
MIN_ROWS = 8
SLOTS_KEPT = 3
"""Batch shapes kept (a cache and its graph each; a cache is full length, so few). A shape
evicted and needed again is recorded again."""
STOP_CHECK_STEPS = 4
"""Every this many steps the loop asks whether every row has stopped (a wait for the GPU):
in between, the CPU queues the next steps while the GPU runs this one."""


def supports_static(model: Any) -> bool:
    """Whether this loop can run `model`: transformers can give it a static cache of plain
    layers (not sliding-window or other layers, whose length differs from the mask's), and
    its attention is SDPA (the decoding step's mask goes in as 4D booleans, which SDPA takes
    as keep/drop; eager attention would add them as numbers)."""
    from transformers import StaticCache

    if not getattr(model, "_can_compile_fullgraph", False):
        return False
    if getattr(model.config, "_attn_implementation", None) != "sdpa":
        return False
    try:
        probe = StaticCache(config=model.config, max_cache_len=WIDTH_STEP)
    except Exception:  # noqa: BLE001 - a config transformers cannot make one for
        return False
    return bool(probe.layers) and all(type(x).__name__ == "StaticLayer" for x in probe.layers)


def bucket_rows(rows: int) -> int:
    """`rows` rounded up to a power of two, at least MIN_ROWS."""
    b = MIN_ROWS
    while b < rows:
        b *= 2
    return b


def round_up(x: int, step: int = WIDTH_STEP) -> int:
    return -(-x // step) * step


@dataclass
class _Slot:
    """One batch shape: its static cache, and its decoding step's graph once recorded."""

    rows: int
    length: int
    cache: Any
    graph: Any = None
    inputs: dict[str, Any] = field(default_factory=dict)
    logits: Any = None


class StaticDecoder:
    """Samples completions for left-padded prompts with a static cache; each decoding step is
    a CUDA graph replay when `graphs` (a CUDA model), else a plain forward pass."""

    def __init__(
        self, model: Any, *, graphs: bool, pad_id: int, bucketed: bool | None = None
    ) -> None:
        self.model = model
        self.graphs = graphs
        self.bucketed = graphs if bucketed is None else bucketed
        """Shapes rounded up to buckets (a few graphs to record), else each call's exact
        shape (without a graph a padded row or column is only more work)."""
        self.pad_id = pad_id
        self._slots: list[_Slot] = []  # most recently used last
        self._pool: Any = None

    def _slot(self, rows: int, length: int) -> _Slot:
        """The smallest kept shape that holds `rows` x `length` at most one bucket larger
        (a much larger one would cost more a step than recording a new one), else a new
        bucketed one."""
        from transformers import StaticCache

        if self.bucketed:
            most_rows, most_length = 2 * bucket_rows(rows), 2 * round_up(length)
        else:
            most_rows, most_length = rows, length
        fits = [
            s
            for s in self._slots
            if rows <= s.rows <= most_rows and length <= s.length <= most_length
        ]
        if fits:
            slot = min(fits, key=lambda s: s.rows * s.length)
            self._slots.remove(slot)
            slot.cache.reset()
        else:
            if self.bucketed:
                rows, length = bucket_rows(rows), round_up(length)
            slot = _Slot(rows, length, StaticCache(config=self.model.config, max_cache_len=length))
            log.info("generator: static cache for %d rows x %d tokens", rows, length)
        self._slots.append(slot)
        if len(self._slots) > SLOTS_KEPT:
            self._slots.pop(0)
        return slot

    def sample(
        self,
        prompts: Sequence[Sequence[int]],
        counts: Sequence[int],
        max_new: int,
        processors: Sequence[Callable[[Any, Any], Any]],
        *,
        greedy: bool,
        stop_ids: Sequence[int],
        share_prompts: bool = True,
        between_steps: Callable[[], None] | None = None,
    ) -> tuple[Any, Any]:
        """`counts[i]` completions of `prompts[i]`, rows in prompt order: (tokens, logprobs),
        CPU tensors of shape (rows, steps). `processors` turn each step's float scores into
        the distribution sampled from (called as processor(input_ids, scores));
        `between_steps` runs after every step's forward pass (a weight swap in flight)."""
        import torch

        from rollstream.services.models.prompt_cache import left_pad_positions

        with torch.inference_mode():
            device = self.model.device
            rows = sum(counts)
            width = max(len(p) for p in prompts)
            width = round_up(width) if self.bucketed else width
            slot = self._slot(rows, width + max_new)
            padded = slot.rows
            counts = [*counts[:-1], counts[-1] + padded - rows]  # extra rows repeat the last prompt
            ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
            prompt_mask = torch.zeros((len(prompts), width), dtype=torch.long)
            for i, p in enumerate(prompts):
                ids[i, width - len(p) :] = torch.tensor(list(p), dtype=torch.long)
                prompt_mask[i, width - len(p) :] = 1
            which = torch.repeat_interleave(torch.arange(len(prompts)), torch.tensor(counts))
            ids, prompt_mask, which = ids.to(device), prompt_mask.to(device), which.to(device)
            mask = torch.zeros((padded, slot.length), dtype=torch.long, device=device)
            mask[:, :width] = prompt_mask.index_select(0, which)
            # the last prompt token is the first decoding step's input; the rest is the prefill
            self._prefill(ids, prompt_mask, which, slot.cache, share_prompts)
            position = left_pad_positions(mask[:, :width])[:, -1:]
            token = ids.index_select(0, which)[:, -1:]
            stop = torch.tensor(list(stop_ids), dtype=torch.long, device=device)
            done = torch.zeros(rows, dtype=torch.bool, device=device)
            tokens, logprobs = [], []
            for k in range(max_new):
                at = width - 1 + k
                mask[:, at] = 1
                logits = self._step(slot, token, mask, position + k, at)[:rows]
                scores = logits.to(dtype=torch.float32, copy=True)  # a graph's output is reused
                if between_steps is not None:
                    between_steps()
                for proc in processors:
                    scores = proc(token[:rows], scores)
                if greedy:
                    chosen = scores.argmax(dim=-1, keepdim=True)
                else:  # as generate samples: the same draws, so a seed gives generate's tokens
                    chosen = torch.multinomial(torch.softmax(scores, dim=-1), num_samples=1)
                tokens.append(chosen)
                logprobs.append(torch.log_softmax(scores, dim=-1).gather(1, chosen))
                if padded > rows:  # the extra rows follow the last real one
                    chosen = torch.cat([chosen, chosen[-1:].expand(padded - rows, 1)])
                token = chosen
                if len(stop):
                    done |= torch.isin(tokens[-1].squeeze(1), stop)
                    if (k + 1) % STOP_CHECK_STEPS == 0 and k + 1 < max_new and bool(done.all()):
                        break  # (steps after a row's stop are cut by the caller)
            return torch.cat(tokens, dim=1).cpu(), torch.cat(logprobs, dim=1).cpu()

    def _step(self, slot: _Slot, token: Any, mask: Any, position: Any, at: int) -> Any:
        """The last position's logits (rows, V) for `token` at cache position `at`: a replay
        of the slot's graph (recorded on first use), or a forward pass. Either way the mask
        goes in as (rows, 1, 1, length) booleans, which the model takes as is."""
        import torch

        inputs = {
            "input_ids": token,
            "attention_mask": mask[:, None, None, :].bool(),
            "position_ids": position,
            "cache_position": torch.full((1,), at, dtype=torch.long, device=token.device),
        }
        if self.graphs and slot.graph is None:
            self._record(slot, inputs)
        if not slot.graph:
            out = self.model(**inputs, past_key_values=slot.cache, use_cache=True)
            return out.logits[:, -1, :]
        for name, value in inputs.items():
            slot.inputs[name].copy_(value)
        slot.graph.replay()
        return slot.logits

    def _record(self, slot: _Slot, inputs: dict[str, Any]) -> None:
        """Record the slot's decoding step as a CUDA graph (a model whose forward pass cannot
        be recorded runs without one, said once in the log). The cache's contents and write
        position are kept across the warm-up runs and the recording."""
        import torch

        cache = slot.cache
        # the two warm-up runs write the step's column and the next one: keep those
        at = [x.cumulative_length.clone() for x in cache.layers]
        first = int(at[0])
        span = slice(first, first + 2)
        kept = [
            (x.keys[:, :, span].clone(), x.values[:, :, span].clone()) if x.is_initialized else None
            for x in cache.layers
        ]
        slot.inputs = {name: value.clone() for name, value in inputs.items()}
        try:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(2):  # warm-up: lazy allocations happen outside the graph
                    self.model(**slot.inputs, past_key_values=cache, use_cache=True)
            torch.cuda.current_stream().wait_stream(side)
            if self._pool is None:
                self._pool = torch.cuda.graph_pool_handle()
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=self._pool, capture_error_mode="thread_local"):
                out = self.model(**slot.inputs, past_key_values=cache, use_cache=True)
            slot.graph, slot.logits = graph, out.logits[:, -1, :]
            log.info("generator: decoding step recorded for %d x %d", slot.rows, slot.length)
        except Exception as exc:  # noqa: BLE001 - any failure: run without graphs
            log.warning("generator: decoding without CUDA graphs (%s: %s)", type(exc).__name__, exc)
            self.graphs, slot.graph = False, False
        for layer, saved in zip(cache.layers, kept, strict=True):
            if saved is not None:
                layer.keys[:, :, span], layer.values[:, :, span] = saved
        for layer, n in zip(cache.layers, at, strict=True):
            layer.cumulative_length.copy_(n)

    def _prefill(self, ids: Any, mask: Any, which: Any, cache: Any, share: bool) -> None:
        """Every prompt token but the last into `cache`: once per prompt and then repeated
        for its rows (`share`), else once per row."""
        from rollstream.services.models.prompt_cache import prefix_cache

        if ids.shape[1] < 2:
            return
        ids, mask = ids[:, :-1], mask[:, :-1]
        if not share:
            prefix_cache(self.model, ids.index_select(0, which), mask.index_select(0, which), cache)
            return
        once = prefix_cache(self.model, ids, mask)
        for layer, src in zip(cache.layers, once.layers, strict=True):
            layer.update(src.keys.index_select(0, which), src.values.index_select(0, which))
