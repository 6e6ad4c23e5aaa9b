"""transformers backend: batched sampling with a KV cache, always available: a static cache of
our own (`static_decode`, `generator.static_cache`; on a GPU with CUDA graphs,
`generator.cuda_graphs`), or `model.generate` (constraints, and models the loop cannot run).

Behaviour logprobs are taken from generate's *processed* scores (after temperature, top-k,
top-p and the constraint mask), so they are the log-probabilities of the distribution each
token was actually drawn from. Structured output: regex and choice lists through a logits
processor that allows a token only if the text stays a prefix of some match (and EOS only when
the text is a full match). It checks every vocabulary entry per step, which is cheap for small
vocabularies; use the vLLM backend (xgrammar) for large ones.
"""

from __future__ import annotations

import logging
import re as _re
import time
from collections.abc import Callable
from itertools import groupby

from rollstream.services.generator.backend import GenRequest, GenSample, RequestError
from rollstream.services.generator.static_decode import StaticDecoder, supports_static

log = logging.getLogger(__name__)


def _path_name(static: StaticDecoder | None) -> str:
    if static is None:
        return "generate"
    return "static cache and CUDA graphs" if static.graphs else "static cache"


class HFBackend:
    name = "transformers"

    def __init__(
        self,
        model_dir: str,
        *,
        seed: int = 0,
        dtype: str = "auto",
        device: str = "auto",
        share_prompts: bool = True,
        static_cache: bool = True,
        cuda_graphs: bool = True,
    ) -> None:
        import torch

        from rollstream.services.models.load import (
            describe,
            load_model,
            load_tokenizer,
            resolve_device,
            stop_token_ids,
        )

        self.torch = torch
        self.device = resolve_device(device)
        self.tokenizer = load_tokenizer(model_dir)
        self.model = load_model(
            model_dir, device=self.device, dtype=None if dtype == "auto" else dtype
        )
        self.model.eval()
        self.seed = seed
        self.eos_id = self.tokenizer.eos_token_id
        self.pad_id = (
            self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.eos_id
        )
        self.stop_ids = stop_token_ids(self.model, self.tokenizer)
        self._stop_set = set(self.stop_ids)
        # Sampling is set per request, by our own processors only: a hub model's defaults
        # (top_k=20, repetition_penalty=1.05, ...) would otherwise apply after the recorder, and
        # the logprobs would not be those of the distribution sampled from.
        from transformers import GenerationConfig

        self.model.generation_config = GenerationConfig(
            eos_token_id=self.stop_ids,
            pad_token_id=self.pad_id,
            temperature=1.0,
            top_p=1.0,
            repetition_penalty=1.0,
        )  # top_k: passed per call when sampling (else generate's global default, 50)
        self._vocab_text: list[str] | None = None
        self.share_prompts = share_prompts
        """Run a request's prompt once for its n samples (`_shared_prompts`)."""
        self._plain_cache: bool | None = None  # known after the first shared prompt pass
        self.between_steps: Callable[[], None] | None = None
        """Called between two decoding steps (after a step's forward pass, before the next):
        the generator's in-flight weight swap. Weights loaded there take effect from the next
        token on; the KV cache of the tokens so far is kept."""
        self.static = self._static_decoder(static_cache, cuda_graphs)
        """Sampling without constraints goes through it when set (`static_decode`)."""
        log.info(
            "generator: transformers backend, %s (%s), stop ids %s, %s",
            describe(self.model),
            model_dir,
            self.stop_ids,
            _path_name(self.static),
        )

    def _static_decoder(self, static_cache: bool, cuda_graphs: bool) -> StaticDecoder | None:
        """`generator.static_cache` (on a CUDA device: with `generator.cuda_graphs`), for a
        model that takes a static cache; None: `generate`."""
        cuda = str(self.device).startswith("cuda")
        if not static_cache or (cuda and not cuda_graphs):
            return None
        if not supports_static(self.model):
            log.info("generator: %s takes no static cache: generate", type(self.model).__name__)
            return None
        return StaticDecoder(self.model, graphs=cuda, pad_id=self.pad_id)

    # ---- generation -------------------------------------------------------------------------
    def generate(self, requests: list[GenRequest]) -> list[list[GenSample]]:
        out: dict[str, list[GenSample]] = {}
        keyed = sorted(requests, key=lambda r: repr(r.sampling_key()))
        for _, grp in groupby(keyed, key=lambda r: repr(r.sampling_key())):
            batch = list(grp)
            for req, samples in zip(batch, self._generate_same(batch), strict=True):
                out[req.request_id] = samples
        return [out[r.request_id] for r in requests]

    def _generate_same(self, reqs: list[GenRequest]) -> list[list[GenSample]]:
        torch = self.torch
        from transformers import (
            TemperatureLogitsWarper,
            TopKLogitsWarper,
            TopPLogitsWarper,
        )

        p = reqs[0]
        rows = [r.prompt_ids for r in reqs for _ in range(r.n)]
        width = max(len(x) for x in rows)
        greedy = p.temperature == 0
        pattern = p.regex or (("|".join(_re.escape(c) for c in p.choice)) if p.choice else None)
        if p.json_schema:
            raise RequestError("json_schema constraints need the vLLM backend")
        warpers: list = []
        if not greedy:
            if p.temperature != 1.0:
                warpers.append(TemperatureLogitsWarper(p.temperature))
            if p.top_k and p.top_k > 0:
                warpers.append(TopKLogitsWarper(p.top_k))
            if p.top_p < 1.0:
                warpers.append(TopPLogitsWarper(p.top_p))
        if p.seed is not None:
            torch.manual_seed(p.seed)
        if self.static is not None and not pattern:
            new, lp = self.static.sample(
                [r.prompt_ids for r in reqs],
                [r.n for r in reqs],
                p.max_tokens,
                warpers,
                greedy=greedy,
                stop_ids=self.stop_ids,
                share_prompts=self.share_prompts,
                between_steps=self.between_steps,
            )
        else:
            new, lp = self._generate_with(reqs, rows, width, pattern, greedy, warpers)
        samples = [self._sample(new[i].tolist(), lp[i].tolist(), p.stop) for i in range(len(rows))]
        it = iter(samples)
        return [[next(it) for _ in range(r.n)] for r in reqs]

    def _generate_with(self, reqs, rows, width, pattern, greedy, warpers):  # -> tokens, logprobs
        """`model.generate` over the left-padded rows: (rows, steps) tokens and logprobs."""
        torch = self.torch
        from transformers import LogitsProcessorList

        p = reqs[0]
        input_ids, attn = self._left_pad(rows, width)
        # Every processor is ours, in sampling order, so that the recorder at the end sees the
        # distribution actually sampled from; generate's own warpers stay off (they would run
        # after any processor passed in).
        procs: list = [BetweenSteps(self.between_steps)] if self.between_steps else []
        if pattern:
            procs.append(RegexLogitsProcessor(pattern, self._vocab(), self.eos_id, width))
        recorder = ChosenLogprobs()
        procs += [*warpers, recorder]
        with torch.inference_mode():
            cache = self._shared_prompts(reqs, width) if len(rows) > len(reqs) else None
            seqs = self.model.generate(
                input_ids=input_ids.to(self.device),
                attention_mask=attn.to(self.device),
                **({} if cache is None else {"past_key_values": cache}),
                max_new_tokens=p.max_tokens,
                do_sample=not greedy,
                **({} if greedy else {"top_k": 0}),
                logits_processor=LogitsProcessorList(procs),
                pad_token_id=self.pad_id,
                eos_token_id=self.stop_ids,
            )
            new = seqs[:, width:]
            lp = recorder.finish(new).cpu()  # (rows, steps)
        return new.cpu(), lp

    def _left_pad(self, rows: list[list[int]], width: int):  # -> (input_ids, attention_mask)
        torch = self.torch
        input_ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        attn = torch.zeros((len(rows), width), dtype=torch.long)
        for i, ids in enumerate(rows):
            input_ids[i, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
            attn[i, width - len(ids) :] = 1
        return input_ids, attn

    def _shared_prompts(self, reqs: list[GenRequest], width: int):
        """The KV cache of every prompt but its last token, computed once per request and
        repeated for its n rows, for generate to continue from: a group's n samples share one
        prompt, so the prompt pass is 1/n of what it would be (on the built-in model the
        generate call takes a third less time). Same positions and masks as generate's own
        pass, so the tokens and logprobs are the same (tested). None when there is nothing to
        share or the model's cache is not one plain key/value pair per layer (sliding-window,
        linear-attention and other caches take generate's own path)."""
        from rollstream.services.models.prompt_cache import is_plain, prefix_cache, repeat_rows

        torch = self.torch
        if width < 2 or not self.share_prompts or self._plain_cache is False:
            return None
        ids, attn = self._left_pad([r.prompt_ids for r in reqs], width)
        ids, attn = ids[:, :-1].to(self.device), attn[:, :-1].to(self.device)
        cache = prefix_cache(self.model, ids, attn)
        if self._plain_cache is None:
            self._plain_cache = is_plain(cache)
            if not self._plain_cache:
                log.info("generator: %s cache, prompts are not shared", type(cache).__name__)
        if not self._plain_cache:
            return None
        rows = torch.repeat_interleave(
            torch.arange(len(reqs), device=self.device),
            torch.tensor([r.n for r in reqs], device=self.device),
        )
        return repeat_rows(cache, rows)

    def _sample(self, ids: list[int], lps: list[float], stop: list[str]) -> GenSample:
        finish = "length"
        ends = [k for k, t in enumerate(ids) if t in self._stop_set]
        if ends:
            cut = ends[0] + 1  # keep the stop token: the learner must learn to stop
            ids, lps, finish = ids[:cut], lps[:cut], "stop"
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        if stop:
            hit = [(text.find(s), len(s)) for s in stop if s and s in text]
            if hit:
                end, length = min(hit)
                # shortest token prefix whose text completes the stop string (as vLLM does)
                for k in range(1, len(ids) + 1):
                    got = len(self.tokenizer.decode(ids[:k], skip_special_tokens=True))
                    if got >= end + length:
                        ids, lps = ids[:k], lps[:k]
                        break
                text, finish = text[:end], "stop"
        return GenSample(ids, lps, text, finish)

    def _vocab(self) -> list[str]:
        if self._vocab_text is None:
            n = len(self.tokenizer)
            self._vocab_text = [self.tokenizer.decode([i]) for i in range(n)]
        return self._vocab_text

    # ---- weights ----------------------------------------------------------------------------
    @property
    def pinned(self) -> bool:
        """Whether weights should be read into pinned host memory (a copy to a GPU)."""
        return str(self.device).startswith("cuda")

    def load_weights(self, weights_dir: str) -> float:
        """`load_state` from `<weights_dir>/model.safetensors` (the caller verified it)."""
        from pathlib import Path

        from safetensors.torch import load_file

        return self.load_state(load_file(str(Path(weights_dir) / "model.safetensors")))

    def load_state(self, state: dict) -> float:
        """Copy `state` (CPU tensors, e.g. views of verified bytes) into the live parameters in
        place: strict, except a tied head. Names and shapes are checked before any tensor is
        copied - a file that does not fit raises ValueError and leaves the running weights
        untouched. From pinned memory the copies to a GPU are asynchronous, waited for once."""
        from rollstream.services.models.load import load_in_place

        t0 = time.perf_counter()
        load_in_place(self.model, state)
        return time.perf_counter() - t0

    def close(self) -> None:
        self.model = None


class BetweenSteps:
    """A logits processor that changes nothing and calls `hook` once per decoding step."""

    def __init__(self, hook: Callable[[], None]) -> None:
        self.hook = hook

    def __call__(self, input_ids, scores):  # (B, T) long, (B, V) float -> (B, V)
        self.hook()
        return scores


class ChosenLogprobs:
    """The last logits processor of a generate call: keeps the log-softmax of the scores each
    token is drawn from, one step at a time, and gathers the chosen token's entry on the next
    call (when that token has joined `input_ids`). Memory is one (rows, V) tensor, on the
    model's device, instead of generate's `output_scores` (steps x rows x V)."""

    def __init__(self) -> None:
        self._prev = None
        self._chosen: list = []

    def __call__(self, input_ids, scores):  # (B, T) long, (B, V) float -> (B, V)
        import torch

        if self._prev is not None:
            self._chosen.append(self._prev.gather(1, input_ids[:, -1:]).squeeze(1))
        self._prev = torch.log_softmax(scores.float(), dim=-1)
        return scores

    def finish(self, new_tokens):  # (B, steps) long -> (B, steps) float logprobs
        import torch

        if self._prev is not None and new_tokens.shape[1] > len(self._chosen):
            self._chosen.append(self._prev.gather(1, new_tokens[:, -1:]).squeeze(1))
        self._prev = None
        if not self._chosen:
            return torch.empty((new_tokens.shape[0], 0))
        return torch.stack(self._chosen, dim=1)


class RegexLogitsProcessor:
    """Masks tokens that would take the completion out of the regex's language."""

    def __init__(self, pattern: str, vocab: list[str], eos_id: int, prompt_len: int) -> None:
        import regex

        try:
            self.rx = regex.compile(pattern)
        except regex.error as exc:
            raise RequestError(f"bad regex {pattern!r}: {exc}") from None
        self.vocab = vocab
        self.eos_id = eos_id
        self.prompt_len = prompt_len
        self._cache: dict[str, list[int]] = {}

    def allowed(self, text: str) -> list[int]:
        hit = self._cache.get(text)
        if hit is None:
            hit = [
                i
                for i, s in enumerate(self.vocab)
                if s and i != self.eos_id and self.rx.fullmatch(text + s, partial=True)
            ]
            if self.rx.fullmatch(text):
                hit.append(self.eos_id)
            self._cache[text] = hit
        return hit

    def __call__(self, input_ids, scores):  # (B, T) long, (B, V) float -> (B, V)
        import torch

        mask = torch.full_like(scores, float("-inf"))
        for b in range(input_ids.shape[0]):
            gen = input_ids[b, self.prompt_len :].tolist()
            if self.eos_id in gen:  # finished rows: anything (generate pads them)
                mask[b] = 0
                continue
            text = "".join(self.vocab[t] for t in gen)
            allowed = self.allowed(text) or [self.eos_id]
            mask[b, allowed] = 0
        return scores + mask
