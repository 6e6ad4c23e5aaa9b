"""transformers backend: batched sampling with a KV cache (`model.generate`), always available.

Behaviour logprobs are taken from generate's *processed* scores (after temperature, top-k,
top-p and the constraint mask), so they are the log-probabilities of the distribution each
token was actually drawn from. Structured output: regex and choice lists through a logits
processor that allows a token only if the text stays a prefix of some match (and EOS only when
the text is a full match). It checks every vocabulary entry per step, which is cheap for small
vocabularies; use the vLLM backend (xgrammar) for large ones.
"""

from __future__ import annotations

import re as _re
import time
from itertools import groupby

from rollstream.services.generator.backend import GenRequest, GenSample, RequestError


class HFBackend:
    name = "transformers"

    def __init__(
        self, model_dir: str, *, seed: int = 0, dtype: str = "auto", device: str = "auto"
    ) -> None:
        import torch

        from rollstream.services.models.load import load_model, load_tokenizer

        self.torch = torch
        self.device = (
            ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
        )
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
        self._vocab_text: list[str] | None = None

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
        from transformers import LogitsProcessorList

        p = reqs[0]
        rows = [r.prompt_ids for r in reqs for _ in range(r.n)]
        width = max(len(x) for x in rows)
        input_ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        attn = torch.zeros((len(rows), width), dtype=torch.long)
        for i, ids in enumerate(rows):  # left padding
            input_ids[i, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
            attn[i, width - len(ids) :] = 1
        greedy = p.temperature == 0
        kwargs: dict = dict(
            max_new_tokens=p.max_tokens,
            do_sample=not greedy,
            output_scores=True,
            return_dict_in_generate=True,
            pad_token_id=self.pad_id,
            eos_token_id=self.eos_id,
        )
        if not greedy:
            kwargs.update(
                temperature=p.temperature,
                top_p=p.top_p,
                top_k=p.top_k if p.top_k and p.top_k > 0 else 0,
            )
        else:
            kwargs.update(temperature=None, top_p=None, top_k=None)
        pattern = p.regex or (("|".join(_re.escape(c) for c in p.choice)) if p.choice else None)
        if p.json_schema:
            raise RequestError("json_schema constraints need the vLLM backend")
        if pattern:
            kwargs["logits_processor"] = LogitsProcessorList(
                [RegexLogitsProcessor(pattern, self._vocab(), self.eos_id, width)]
            )
        if p.seed is not None:
            torch.manual_seed(p.seed)
        with torch.inference_mode():
            res = self.model.generate(
                input_ids=input_ids.to(self.device), attention_mask=attn.to(self.device), **kwargs
            )
        seqs = res.sequences[:, width:].cpu()
        # (steps, rows, V) processed scores -> logprob of each chosen token
        steps = len(res.scores)
        lp = torch.empty((len(rows), steps))
        for t, sc in enumerate(res.scores):
            logp = torch.log_softmax(sc.float(), dim=-1).cpu()
            lp[:, t] = logp.gather(1, seqs[:, t : t + 1]).squeeze(1)
        samples = [self._sample(seqs[i].tolist(), lp[i].tolist(), p.stop) for i in range(len(rows))]
        it = iter(samples)
        return [[next(it) for _ in range(r.n)] for r in reqs]

    def _sample(self, ids: list[int], lps: list[float], stop: list[str]) -> GenSample:
        finish = "length"
        if self.eos_id in ids:
            cut = ids.index(self.eos_id) + 1  # keep EOS: the learner must learn to stop
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
    def load_weights(self, weights_dir: str) -> float:
        """load_state_dict from `<weights_dir>/model.safetensors` (strict, except a tied head).

        Names and shapes are checked before any tensor is copied: a file that does not fit
        raises ValueError and leaves the running weights untouched."""
        from pathlib import Path

        from safetensors.torch import load_file

        t0 = time.perf_counter()
        state = load_file(str(Path(weights_dir) / "model.safetensors"), device=str(self.device))
        have = {k: tuple(v.shape) for k, v in self.model.state_dict().items()}
        tied = getattr(self.model.config, "tie_word_embeddings", False)
        missing = [
            k for k in have if k not in state and not (tied and k.endswith("lm_head.weight"))
        ]
        unexpected = [k for k in state if k not in have]
        wrong = [k for k in state if k in have and tuple(state[k].shape) != have[k]]
        if missing or unexpected or wrong:
            raise ValueError(
                f"weights do not fit the model: missing {missing[:3]}, "
                f"unexpected {unexpected[:3]}, wrong shape {wrong[:3]}"
            )
        self.model.load_state_dict(state, strict=False)
        if tied:
            self.model.tie_weights()
        return time.perf_counter() - t0

    def close(self) -> None:
        self.model = None


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
