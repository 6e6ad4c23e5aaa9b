"""How big is a Rollout on the wire, and how fast does it encode and decode?

For Rollouts of 256, 1,024 and 8,192 tokens in all (an eighth of them prompt, the rest
completion, with a logprob per completion token), three encodings of the same content:
  - rollstream: the msgspec Struct, token ids / logprobs packed little-endian int32 / float32;
    decode includes the zero-copy numpy views (`completion_tokens()`, `token_logprobs()`);
  - json: stdlib json of the same map with ids and logprobs as lists;
  - msgpack-lists: the reference `msgpack` package, ids and logprobs as lists.
Text is one character per token, as the built-in tiny model's tokenizer makes it (a BPE
tokenizer makes ~4 characters per token: the `text_4x` size column shows that case).

Rate = encode + decode round trips per second on one core (one Python thread), the median of
`--repeats` runs. Budget: a 1,024-token Rollout encodes to <= 9 KB (9,216 bytes) and
round-trips at >= 50,000 messages/s.

Prints a table and writes benchmarks/results/codec.json.
Run: .venv/bin/python benchmarks/codec.py [--tokens 256 1024 8192] [--repeats 7]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack
import msgspec
import numpy as np

from rollstream.schemas import Rollout, Sampling, decode, encode, pack_floats, pack_ids

RESULTS = Path(__file__).parent / "results" / "codec.json"
BUDGET_TOKENS = 1024
BUDGET_BYTES = 9 * 1024
BUDGET_RATE = 50_000


def split(tokens: int) -> tuple[int, int]:
    """(prompt, completion) tokens of a rollout of `tokens` in all: 1/8 prompt."""
    prompt = tokens // 8
    return prompt, tokens - prompt


def make_rollout(tokens: int, chars_per_token: int = 1, seed: int = 0) -> Rollout:
    rng = np.random.default_rng(seed)
    prompt_tokens, tokens = split(tokens)
    vocab = 151_000  # a modern BPE vocabulary: ids need the full int32 range anyway
    return Rollout(
        rollout_id="4f3c2a1b-0007",
        group_id="4f3c2a1b",
        task_id="gsm8k-train-01234",
        task="gsm8k",
        sample_index=7,
        group_size=8,
        prompt="Q" * prompt_tokens * chars_per_token,
        completion="a" * tokens * chars_per_token,
        prompt_ids=pack_ids(rng.integers(0, vocab, prompt_tokens)),
        completion_ids=pack_ids(rng.integers(0, vocab, tokens)),
        logprobs=pack_floats(-rng.exponential(0.7, tokens)),
        finish_reason="length",
        policy_version=42,
        sampling=Sampling(n=8, temperature=1.0, top_p=1.0, top_k=-1, max_tokens=tokens, seed=7),
        answer="72",
        reference={},
        generator_id="generator-0",
        queued_s=0.012,
        generate_s=3.5,
        produced_at=1_700_000_000.5,
    )


def as_lists(r: Rollout) -> dict[str, Any]:
    """The same content as a plain map, token ids and logprobs as lists (what a naive wire
    format sends)."""
    d = msgspec.to_builtins(r, builtin_types=(bytes,))
    d["prompt_ids"] = r.prompt_tokens().tolist()
    d["completion_ids"] = r.completion_tokens().tolist()
    d["logprobs"] = r.token_logprobs().tolist()
    return d


def rate(fn: Callable[[], object], repeats: int, min_s: float = 0.2) -> float:
    """Median calls/second over `repeats` runs of at least `min_s` each."""
    n = 1
    while True:  # calibrate the number of calls per run
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        if time.perf_counter() - t0 >= min_s / 4:
            break
        n *= 2
    n *= 4
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        rates.append(n / (time.perf_counter() - t0))
    return statistics.median(rates)


def bench(tokens: int, repeats: int) -> dict[str, Any]:
    r = make_rollout(tokens)
    raw = encode(r)
    plain = as_lists(r)
    js = json.dumps(plain).encode()
    mp = msgpack.packb(plain)

    def rollstream_rt() -> None:
        m = decode(encode(r), Rollout)
        m.completion_tokens(), m.token_logprobs(), m.prompt_tokens()

    def json_rt() -> None:
        json.loads(json.dumps(plain))

    def msgpack_rt() -> None:
        msgpack.unpackb(msgpack.packb(plain), raw=False)

    assert decode(raw, Rollout) == r
    return {
        "tokens": tokens,
        "bytes": {
            "rollstream": len(raw),
            "json": len(js),
            "msgpack_lists": len(mp),
            "rollstream_text_4x": len(encode(make_rollout(tokens, chars_per_token=4))),
            "rollstream_no_text": len(encode(make_rollout(tokens, chars_per_token=0))),
            "token_arrays": len(r.completion_ids) + len(r.logprobs) + len(r.prompt_ids),
            "text": len(r.prompt) + len(r.completion),
        },
        "roundtrips_per_s": {
            "rollstream": rate(rollstream_rt, repeats),
            "json": rate(json_rt, repeats),
            "msgpack_lists": rate(msgpack_rt, repeats),
        },
        "encode_per_s": rate(lambda: encode(r), repeats),
        "decode_per_s": rate(lambda: decode(raw, Rollout), repeats),
    }


def verdict(rows: list[dict[str, Any]]) -> dict[str, Any]:
    row = next((x for x in rows if x["tokens"] == BUDGET_TOKENS), None)
    if row is None:
        return {"checked": False}
    size, rt = row["bytes"]["rollstream"], row["roundtrips_per_s"]["rollstream"]
    return {
        "checked": True,
        "tokens": BUDGET_TOKENS,
        "size_bytes": size,
        "size_budget_bytes": BUDGET_BYTES,
        "size_pass": size <= BUDGET_BYTES,
        "rate": round(rt),
        "rate_budget": BUDGET_RATE,
        "rate_pass": rt >= BUDGET_RATE,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tokens", type=int, nargs="+", default=[256, 1024, 8192])
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    rows = [bench(t, args.repeats) for t in args.tokens]

    print(
        f"{'tokens':>6} | {'bytes: rollstream':>17} {'json':>8} {'msgpack':>8} "
        f"{'(text 4x)':>9} | {'round trips/s: rollstream':>25} {'json':>8} {'msgpack':>8}"
    )
    for x in rows:
        b, r = x["bytes"], x["roundtrips_per_s"]
        print(
            f"{x['tokens']:>6} | {b['rollstream']:>17,} {b['json']:>8,} "
            f"{b['msgpack_lists']:>8,} {b['rollstream_text_4x']:>9,} | "
            f"{r['rollstream']:>25,.0f} {r['json']:>8,.0f} {r['msgpack_lists']:>8,.0f}"
        )
    v = verdict(rows)
    if v["checked"]:
        row = next(x for x in rows if x["tokens"] == BUDGET_TOKENS)
        b = row["bytes"]
        print(f"\nbudget, {BUDGET_TOKENS}-token Rollout:")
        rest = b["rollstream"] - b["token_arrays"] - b["text"]
        size_ok, rate_ok = ("PASS" if v[k] else "FAIL" for k in ("size_pass", "rate_pass"))
        print(
            f"  size {v['size_bytes']:,} B <= {BUDGET_BYTES:,} B: {size_ok}  (token arrays "
            f"{b['token_arrays']:,} B, text {b['text']:,} B, the rest {rest} B; without the "
            f"prompt/completion text {b['rollstream_no_text']:,} B)"
        )
        print(f"  rate {v['rate']:,}/s >= {BUDGET_RATE:,}/s: {rate_ok}")
    result = {
        "machine": {
            "python": platform.python_version(),
            "cpu": _cpu(),
            "msgspec": msgspec.__version__,
            "numpy": np.__version__,
        },
        "repeats": args.repeats,
        "shape": "1/8 prompt, 7/8 completion",
        "rows": rows,
        "budget": v,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {RESULTS}")


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


if __name__ == "__main__":
    main()
