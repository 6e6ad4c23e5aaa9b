"""The transformers backend's decoding paths, one generate call at a time (no broker):
`generate` (growing cache), the static-cache loop without a graph, and the static-cache loop
with each decoding step replayed as a CUDA graph (`generator.cuda_graphs`, the default on a
GPU). Calls of P prompts x 8 samples, 16 new tokens, T=1.0, on the built-in model of
`--size` (or `--model DIR`). Also checks what the graph path samples: with one seed it must
give the tokens and logprobs of the path without a graph (the same kernels), also after a
weight load, and the tokens of `generate`.

Prints a table and writes benchmarks/results/static_decode.json (a GPU run keeps its own
entry beside a CPU run's, one a model). On a CPU there is no graph: the graph column is left out.
Run: python benchmarks/static_decode.py [--size small] [--prompts 16 12 32 5 64] [--repeats 9]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results" / "static_decode.json"


def timed(fn: Any, repeats: int, sync: Any) -> dict[str, float]:
    """First call (a new shape: records its graph) and the median of `repeats` after one more."""
    t0 = time.perf_counter()
    fn()
    sync()
    first = time.perf_counter() - t0
    fn()
    times = []
    for _ in range(repeats):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return {
        "first_ms": round(first * 1e3, 1),
        "median_ms": round(statistics.median(times) * 1e3, 2),
    }


def compare(x: list, y: list) -> dict[str, Any]:
    """Rows with the same tokens, and the largest logprob difference on those rows."""
    pairs = [(a, b) for xa, ya in zip(x, y, strict=True) for a, b in zip(xa, ya, strict=True)]
    same = [(a, b) for a, b in pairs if a.completion_ids == b.completion_ids]
    diff = max(
        (abs(u - v) for a, b in same for u, v in zip(a.logprobs, b.logprobs, strict=True)),
        default=0.0,
    )
    return {"same_rows": len(same), "rows": len(pairs), "max_logprob_diff": diff}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--size", default="small", choices=["tiny", "small"])
    ap.add_argument("--model", default=None, help="a model directory instead of the built-in")
    ap.add_argument("--prompts", nargs="+", type=int, default=[16, 12, 32, 5, 64])
    ap.add_argument("--repeats", type=int, default=9)
    args = ap.parse_args()

    import torch

    from rollstream.services.generator.backend import GenRequest
    from rollstream.services.generator.backend_hf import HFBackend
    from rollstream.services.generator.static_decode import StaticDecoder
    from rollstream.services.models.load import ensure_base_model

    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    model = args.model or str(ensure_base_model(size=args.size, device=device))
    be = HFBackend(model, device=device)  # cuda_graphs on by default: graphs on a GPU
    graph = be.static
    plain = StaticDecoder(be.model, graphs=False, pad_id=be.pad_id)
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    tok = be.tokenizer
    texts = [
        f"count {a} {b}:" for a, b in zip(range(11, 999, 5), range(205, 9999, 41), strict=False)
    ]

    def requests(p: int, temperature: float = 1.0, seed: int | None = None) -> list:
        return [
            GenRequest(f"r{i}", list(tok.encode(t)), 8, temperature=temperature, seed=seed)
            for i, t in enumerate(texts[:p])
        ]

    paths = {"generate": None, "static": plain, **({"static+graph": graph} if graph else {})}
    rows: dict[str, dict[str, Any]] = {}
    for p in args.prompts:
        reqs = requests(p)
        for name, static in paths.items():
            be.static = static
            rows.setdefault(str(p), {})[name] = timed(
                lambda r=reqs: be.generate(r), args.repeats, sync
            )
        print(p * 8, "samples:", rows[str(p)], flush=True)
    checks: dict[str, Any] = {}
    if graph is not None:
        seeded = requests(16, seed=3)
        out = {}
        for name, static in paths.items():
            be.static = static
            out[name] = be.generate(seeded)
        checks["graph_vs_static_seeded"] = compare(out["static+graph"], out["static"])
        checks["graph_vs_generate_seeded"] = compare(out["static+graph"], out["generate"])
        noise = torch.Generator().manual_seed(5)
        state = {
            k: (v.detach().float().cpu() + 0.05 * torch.randn(v.shape, generator=noise)).to(v.dtype)
            for k, v in be.model.state_dict().items()
        }
        be.load_state(state)
        greedy = requests(16, temperature=0.0)
        be.static = graph
        after = be.generate(greedy)
        be.static = plain
        checks["graph_vs_static_after_load"] = compare(after, be.generate(greedy))
        checks["shapes_recorded"] = [[s.rows, s.length] for s in graph._slots]
        print("checks:", json.dumps(checks), flush=True)

    print(f"\n| samples a call | {' | '.join(paths)} |\n|---|{'---|' * len(paths)}")
    for p, r in rows.items():
        cells = [f"{r[n]['median_ms']:.1f} ms (first {r[n]['first_ms']:.0f})" for n in paths]
        print(f"| {int(p) * 8} | {' | '.join(cells)} |")
    where = torch.cuda.get_device_name() if cuda else f"cpu ({platform.machine()})"
    key = f"{where}, {Path(model).name}"
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results[key] = {
        "model": model,
        "dtype": str(be.model.dtype),
        "new_tokens": 16,
        "samples_a_prompt": 8,
        "calls": rows,
        "checks": checks,
        "torch": torch.__version__,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
