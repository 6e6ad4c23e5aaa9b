"""How long from "the learner publishes a version" to "a generator samples on it"?

A random-init model of Qwen2.5-0.5B's shape (494M parameters, tied embeddings; --size tiny on
a CPU) is held twice on one device, as on a one-host run: the learner's fp32 master copy and
the generator's live bf16 (CUDA) / fp32 (CPU) copy. One swap is timed phase by phase:

  gather      learner state dict (after: cast to bf16 on the device, no copy yet)
  serialise   after: every tensor copied (async, from the GPU into one pinned host buffer laid
              out as the safetensors file), waited for once
  write       before: save_file (serialise the whole file in memory, then write it);
              after: the image's 16 MiB chunks hashed and pwrite()n by one thread per core
              (the digest is the chunked sha256 of rollstream/schemas/control.py WeightUpdate)
  hash        before: a second read of every file to hash it; after: none (hashed on write)
  other       config (and tokenizer) files; after: their hashes, the rename into place
  notify      WeightUpdate encoded and decoded (the Kafka hop itself is not on this host:
              no Kafka clients there; benchmarks/stream.py measures the broker)
  verify      the generator's check: before: read + sha256 of the file; after/full: one
              parallel read into a pinned buffer, each chunk hashed as it lands, the digest
              compared before any tensor is used; after/size: the same read, size + header
  load        before: safetensors load_file to the device + load_state_dict; after: the
              verified bytes copied (async from pinned memory) into the live parameters
  first       the first sampled token on the new weights (a 1-token generate)

"before" is the code path of commit 362c312 (fp32 on the wire, save_file, every file hashed
after writing and again by the reader); "after" is publish_version/fetch_state of this
checkout, bf16 on the wire on a GPU, into --store (default /dev/shm: shared memory on one
host). Median of --repeats swaps each (the first "after" swap also pins the host buffers; it
is in the JSON as first_swap_after_full). Writes JSON (--out, default
benchmarks/results/weight_swap.json) and prints the phase table.

GPU host:   python benchmarks/weight_swap.py                 (about 1-2 minutes)
CPU check:  python benchmarks/weight_swap.py --size tiny --device cpu --repeats 2
CPU figure: python benchmarks/weight_swap.py --size 50m --device cpu --repeats 3
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SHAPE = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
         "num_key_value_heads", "vocab_size")  # fmt: skip
SIZES = {
    name: dict(zip(SHAPE, row, strict=True))
    for name, row in {
        "0.5b": (896, 4864, 24, 14, 2, 151936),  # Qwen2.5-0.5B
        "50m": (512, 1536, 8, 8, 2, 32000),
        "tiny": (64, 128, 2, 2, 1, 1000),
    }.items()
}


def use_checkout() -> None:
    """Import `rollstream` from this checkout when it is not installed."""
    if importlib.util.find_spec("rollstream") is None:
        sys.path.insert(0, str(ROOT))


def sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def qwen2(size: str, device: str, dtype: Any) -> Any:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = AutoConfig.for_model("qwen2", **SIZES[size], tie_word_embeddings=True)
    torch.manual_seed(0)
    with torch.device(device):
        return AutoModelForCausalLM.from_config(cfg, dtype=dtype).eval()


def first_token(model: Any, device: str) -> None:
    import torch

    ids = torch.tensor([[1, 2, 3, 4]], device=device)
    with torch.inference_mode():
        model.generate(input_ids=ids, max_new_tokens=1, do_sample=True, pad_token_id=0)
    sync(device)


def load_into(model: Any, path: Path, device: str) -> None:
    """What the generator's transformers backend does: load_file onto the device, then
    load_state_dict (strict apart from the tied head) into the live parameters."""
    from safetensors.torch import load_file

    state = load_file(str(path), device=device)
    model.load_state_dict(state, strict=False)
    if getattr(model.config, "tie_word_embeddings", False):
        model.tie_weights()
    sync(device)


def swap_before(learner: Any, gen: Any, store: Path, version: int, device: str) -> dict:
    """The publish/verify/load path before this change (commit 362c312), phase by phase."""
    import msgspec
    from safetensors.torch import save_file

    from rollstream.schemas import WeightUpdate
    from rollstream.services.models.weights import _drop_tied, _unshare, sha256_file

    ph: dict[str, float] = {}
    t = time.perf_counter()
    state = learner.state_dict()
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
    _drop_tied(learner, tensors)
    _unshare(tensors)
    ph["gather"] = time.perf_counter() - t
    out = store / f"before-v{version:08d}"
    out.mkdir(parents=True)
    t = time.perf_counter()
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    ph["write"] = time.perf_counter() - t  # serialise in memory, then write
    t = time.perf_counter()
    learner.config.save_pretrained(str(out))
    ph["other"] = time.perf_counter() - t
    t = time.perf_counter()
    files = {p.name: sha256_file(p) for p in sorted(out.iterdir()) if p.is_file()}
    ph["hash"] = time.perf_counter() - t  # the second read: every file hashed after writing
    t = time.perf_counter()
    upd = WeightUpdate(
        policy="p",
        version=version,
        uri=str(out),
        sha256=files["model.safetensors"],
        size_bytes=(out / "model.safetensors").stat().st_size,
        files=files,
        produced_at=time.time(),
    )
    upd = msgspec.msgpack.decode(msgspec.msgpack.encode(upd), type=WeightUpdate)
    ph["notify"] = time.perf_counter() - t
    t = time.perf_counter()
    assert sha256_file(out / "model.safetensors") == upd.sha256
    ph["verify"] = time.perf_counter() - t
    t = time.perf_counter()
    load_into(gen, out / "model.safetensors", device)
    ph["load"] = time.perf_counter() - t
    t = time.perf_counter()
    first_token(gen, device)
    ph["first"] = time.perf_counter() - t
    ph["size_mb"] = upd.size_bytes / 1e6
    shutil.rmtree(out)
    return ph


def swap_after(
    learner: Any,
    gen: Any,
    store: Path,
    version: int,
    device: str,
    wire: str | None,
    verify: str,
    chunk_bytes: int,
) -> dict:
    """This checkout's path: publish_version (cast on the device, one pinned host image, chunks
    hashed and written by parallel threads), fetch_state (`verify`: one parallel read whose
    bytes are hashed and then loaded), load_in_place into the live model."""
    import msgspec

    from rollstream.schemas import WeightUpdate
    from rollstream.services.models.load import load_in_place
    from rollstream.services.models.weights import fetch_update, publish_version

    ph: dict[str, float] = {}
    upd = publish_version(
        learner,
        store=str(store),
        policy="after",
        version=version,
        keep=1,
        wire_dtype=wire,
        phases=ph,
        chunk_bytes=chunk_bytes,
    )
    ph["other"] = ph.pop("other_files") + ph.pop("rename")
    ph["write"] = ph.pop("write_hash")  # hashed while written: no separate hash phase
    t = time.perf_counter()
    upd = msgspec.msgpack.decode(msgspec.msgpack.encode(upd), type=WeightUpdate)
    ph["notify"] = time.perf_counter() - t
    t = time.perf_counter()
    _, state = fetch_update(upd, verify=verify, pinned=device.startswith("cuda"))
    ph["verify"] = time.perf_counter() - t  # read + hash, one pass
    t = time.perf_counter()
    load_in_place(gen, state)
    ph["load"] = time.perf_counter() - t
    t = time.perf_counter()
    first_token(gen, device)
    ph["first"] = time.perf_counter() - t
    ph["size_mb"] = upd.size_bytes / 1e6
    return ph


PHASES = (
    "gather",
    "serialise",
    "write",
    "hash",
    "other",
    "notify",
    "verify",
    "load",
    "first",
)


def median_phases(runs: list[dict]) -> dict:
    keys = sorted({k for r in runs for k in r})
    med = {k: statistics.median(r.get(k, 0.0) for r in runs) for k in keys}
    med["total_s"] = sum(med.get(k, 0.0) for k in PHASES)
    return med


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", choices=sorted(SIZES), default="0.5b")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument(
        "--chunk-mb", type=int, default=16, help="chunk of the parallel digest (0: plain sha256)"
    )
    ap.add_argument("--store", default=None, help="weight store dir (default /dev/shm or tmp)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "weight_swap.json"))
    args = ap.parse_args()
    use_checkout()
    import torch

    from rollstream.services.models.weightfile import threads

    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    gpu = device.startswith("cuda")
    shm = Path("/dev/shm")
    base = (
        Path(args.store) if args.store else (shm if shm.is_dir() else Path(tempfile.gettempdir()))
    )
    store = Path(tempfile.mkdtemp(prefix="rollstream-swap-", dir=base))
    learner = qwen2(args.size, device, torch.float32)
    gen = qwen2(args.size, device, torch.bfloat16 if gpu else torch.float32)
    params = sum(p.numel() for p in learner.parameters())
    print(f"{args.size}: {params / 1e6:.1f}M parameters on {device}; store {store}")
    first_token(gen, device)  # warm the kernels
    wire = "bfloat16" if gpu else None
    cases: dict[str, list[dict]] = {"before": [], "after_full": [], "after_size": []}
    try:
        for i in range(args.repeats):
            cases["before"].append(swap_before(learner, gen, store, i + 1, device))
            for verify in ("full", "size"):
                v = 100 + 2 * i + (verify == "size")
                cases[f"after_{verify}"].append(
                    swap_after(learner, gen, store, v, device, wire, verify, args.chunk_mb << 20)
                )
    finally:
        shutil.rmtree(store, ignore_errors=True)
    result: dict[str, Any] = {
        "benchmark": "weight_swap",
        "size": args.size,
        "params": params,
        "device": device,
        "gpu": torch.cuda.get_device_name(0) if gpu else None,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "store": str(base),
        "wire_dtype_after": wire or "float32",
        "sha256_MBps": _sha_rate(),
        "threads": threads(),
        "chunk_bytes": args.chunk_mb << 20,
        "first_swap_after_full": cases["after_full"][0] if cases["after_full"] else None,
        "repeats": args.repeats,
        "median": {name: median_phases(runs) for name, runs in cases.items()},
        "runs": cases,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"{'phase (s)':12}" + "".join(f"{n:>12}" for n in cases))
    for k in (*PHASES, "total_s", "size_mb"):
        row = [result["median"][n].get(k, 0.0) for n in cases]
        print(f"{k:12}" + "".join(f"{v:12.3f}" for v in row))
    print(f"wrote {args.out}")
    return 0


def _sha_rate() -> float:
    """This host's single-thread sha256 throughput (MB/s), for reading the table."""
    data = b"\0" * (64 << 20)
    t = time.perf_counter()
    hashlib.sha256(data).hexdigest()
    return round(len(data) / (time.perf_counter() - t) / 1e6)


if __name__ == "__main__":
    sys.exit(main())
