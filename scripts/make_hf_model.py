"""Write a random-init Hugging Face model directory (Qwen2, Llama or Mistral family) with its own
byte-level BPE tokenizer and ChatML template, built offline: the stand-in for a hub model where
there is no network (throughput, not competence: the weights are random).

    python scripts/make_hf_model.py --size 0.5b --out models/qwen2-0.5b   # Qwen2.5-0.5B shape
    python scripts/make_hf_model.py --size tiny --out models/qwen2-tiny   # seconds on a CPU

Then: rollstream up --set model.path=models/qwen2-0.5b ...
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--arch", default="qwen2", choices=("qwen2", "llama", "mistral"))
    ap.add_argument("--size", default="tiny", choices=("tiny", "0.5b"))
    ap.add_argument("--dtype", default="bfloat16", choices=("float32", "bfloat16"))
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if importlib.util.find_spec("rollstream") is None:  # run from a checkout, not installed
        sys.path.insert(0, str(ROOT))
    from rollstream.services.models.synthetic import QWEN2_0_5B_SIZES, TINY_SIZES, build_hf_model

    sizes = QWEN2_0_5B_SIZES if args.size == "0.5b" else TINY_SIZES
    out = build_hf_model(args.out, arch=args.arch, sizes=sizes, seed=args.seed, dtype=args.dtype)
    print(f"wrote {out} ({args.arch}, {args.size}, {args.dtype}, random weights)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
