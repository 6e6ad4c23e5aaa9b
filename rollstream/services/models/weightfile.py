"""One weights file, written and read fast with every byte verified: a safetensors image in
one host buffer, hashed in fixed-size chunks by parallel threads.

The digest of a file is its *chunked sha256*: the sha256 of a short domain line (chunk size,
file size) followed by the sha256 digests of the file's consecutive `chunk_bytes`-byte chunks
(the last one shorter). It is as binding as a plain sha256 of the file (the chunk size and
the length are in it, so no other split of other bytes gives the same digest), but each chunk
can be hashed on its own core: hashlib releases the GIL on large buffers, so N threads hash
N chunks at once. `chunk_bytes=0` means the plain sha256 of the whole file (versions published
before this scheme).

Writing (`stage_image` + `write_image`): tensors, still on their device, are copied into one
host buffer laid out as the file (pinned when they are on a GPU, so the copies are DMA without
a bounce), then each chunk is hashed and written with `os.pwrite` by a pool of threads.
Reading (`read_verified`): each chunk is read with `os.preadv` into one host buffer and hashed
by the same thread; the tensors handed to the caller are views of those verified bytes, so
what is loaded is exactly what was checked (no second read, no window between check and use).
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

CHUNK_BYTES = 16 << 20  # 16 MiB: ~60 chunks for a 1 GB file, a few ms of sha256 each

_ST_DTYPES = {
    "float64": "F64",
    "float32": "F32",
    "float16": "F16",
    "bfloat16": "BF16",
    "int64": "I64",
    "int32": "I32",
    "int16": "I16",
    "int8": "I8",
    "uint8": "U8",
    "bool": "BOOL",
}
_TORCH_DTYPES = {v: k for k, v in _ST_DTYPES.items()}


class DigestMismatch(ValueError):
    """The bytes read are not those published (corrupt, truncated or replaced file)."""


def threads() -> int:
    """Hashing/IO threads: one per core, at most 16."""
    return max(1, min(16, os.cpu_count() or 1))


def combine(digests: list[bytes], chunk_bytes: int, size: int) -> str:
    """The chunked sha256 of a file of `size` bytes from its chunks' digests, in order."""
    h = hashlib.sha256(f"rollstream-chunked-sha256 {chunk_bytes} {size}\n".encode())
    for d in digests:
        h.update(d)
    return h.hexdigest()


def _chunks(size: int, chunk_bytes: int) -> list[tuple[int, int]]:
    return [(a, min(a + chunk_bytes, size)) for a in range(0, size, chunk_bytes)] or [(0, 0)]


def digest_buffer(buf: memoryview, chunk_bytes: int) -> str:
    """The digest of an in-memory file image (chunk_bytes=0: the plain sha256)."""
    if chunk_bytes <= 0:
        return hashlib.sha256(buf).hexdigest()
    spans = _chunks(len(buf), chunk_bytes)
    with ThreadPoolExecutor(threads(), thread_name_prefix="sha256") as pool:
        digests = list(pool.map(lambda s: hashlib.sha256(buf[s[0] : s[1]]).digest(), spans))
    return combine(digests, chunk_bytes, len(buf))


def digest_file(path: str | Path, chunk_bytes: int) -> str:
    """The digest of a file on disk, chunks read and hashed in parallel (a second read: for
    consumers that hand the file to another loader, such as vLLM)."""
    if chunk_bytes <= 0:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            while block := f.read(1 << 20):
                h.update(block)
        return h.hexdigest()
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size

        def one(span: tuple[int, int]) -> bytes:
            return hashlib.sha256(os.pread(fd, span[1] - span[0], span[0])).digest()

        with ThreadPoolExecutor(threads(), thread_name_prefix="sha256") as pool:
            digests = list(pool.map(one, _chunks(size, chunk_bytes)))
    finally:
        os.close(fd)
    return combine(digests, chunk_bytes, size)


# ---- host buffers --------------------------------------------------------------------------
_buffers: dict[tuple[str, bool], Any] = {}


def host_buffer(nbytes: int, *, pinned: bool, role: str) -> Any:
    """A uint8 CPU tensor of `nbytes`, reused across calls of the same `role` (pinning 1 GB
    costs a few hundred ms; a publisher or reader pays it once). The previous contents of the
    role's buffer are gone after the next call."""
    import torch

    key = (role, pinned)
    buf = _buffers.get(key)
    if buf is None or buf.numel() < nbytes:
        _buffers.pop(key, None)
        buf = torch.empty(max(nbytes, 1), dtype=torch.uint8, pin_memory=pinned)
        _buffers[key] = buf
    return buf[:nbytes]


# ---- write ---------------------------------------------------------------------------------
def layout(
    tensors: dict[str, Any], metadata: dict[str, str] | None
) -> tuple[bytes, list[tuple[str, int, int]]]:
    """(header bytes incl. its 8-byte length, [(name, start, end) of each tensor's data in the
    file]). Tensors go widest dtype first, so every one starts aligned to its element size
    (the data start is 8-byte aligned) and can be viewed in place."""
    header: dict[str, Any] = {"__metadata__": dict(metadata)} if metadata else {}
    names = sorted(tensors, key=lambda k: (-tensors[k].element_size(), k))
    spans = []
    offset = 0
    for name in names:
        t = tensors[name]
        kind = _ST_DTYPES.get(str(t.dtype).removeprefix("torch."))
        if kind is None:
            raise ValueError(f"{name}: dtype {t.dtype} cannot be written as safetensors")
        n = t.numel() * t.element_size()
        header[name] = {"dtype": kind, "shape": list(t.shape), "data_offsets": [offset, offset + n]}
        spans.append((name, offset, offset + n))
        offset += n
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # the data starts 8-byte aligned
    head = struct.pack("<Q", len(raw)) + raw
    return head, [(k, len(head) + a, len(head) + b) for k, a, b in spans]


def stage_image(tensors: dict[str, Any], metadata: dict[str, str] | None = None) -> Any:
    """The whole safetensors file as one uint8 CPU tensor (a reused host buffer: valid until
    the next call). Tensors may be on any device; GPU ones are copied asynchronously into
    pinned memory, then waited for once."""
    import torch

    head, spans = layout(tensors, metadata)
    size = spans[-1][2] if spans else len(head)
    cuda = any(t.device.type == "cuda" for t in tensors.values())
    buf = host_buffer(size, pinned=cuda, role="write")
    buf[: len(head)] = torch.frombuffer(bytearray(head), dtype=torch.uint8)
    for name, a, b in spans:
        t = tensors[name]
        if b > a:
            buf[a:b].view(t.dtype).copy_(t.reshape(-1), non_blocking=True)
    if cuda:
        torch.cuda.synchronize()
    return buf


def write_image(buf: Any, path: str | Path, chunk_bytes: int = CHUNK_BYTES) -> str:
    """Write a file image (uint8 CPU tensor) to `path` and return its digest: each chunk is
    hashed and `pwrite`n by one of `threads()` threads."""
    mv = memoryview(buf.numpy()).cast("B")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.ftruncate(fd, len(mv))

        def one(span: tuple[int, int]) -> bytes:
            a, b = span
            part = mv[a:b]
            d = hashlib.sha256(part).digest()
            while part:
                n = os.pwrite(fd, part, a)
                part, a = part[n:], a + n
            return d

        if chunk_bytes <= 0:
            one((0, len(mv)))
            return hashlib.sha256(mv).hexdigest()
        with ThreadPoolExecutor(threads(), thread_name_prefix="write") as pool:
            digests = list(pool.map(one, _chunks(len(mv), chunk_bytes)))
    finally:
        os.close(fd)
    return combine(digests, chunk_bytes, len(mv))


# ---- read ----------------------------------------------------------------------------------
def read_verified(
    path: str | Path,
    digest: str | None,
    *,
    size: int,
    chunk_bytes: int,
    pinned: bool = False,
) -> dict[str, Any]:
    """The tensors of the safetensors file at `path`, as views of one host buffer holding
    exactly the bytes that were hashed (valid until the next call). `size` is the published
    size (checked first); `digest` the published digest (None: size and header only - the
    `weights.verify: size` mode). DigestMismatch / ValueError if anything does not match."""
    fd = os.open(path, os.O_RDONLY)
    try:
        got = os.fstat(fd).st_size
        if got != size:
            raise DigestMismatch(f"{path}: {got} bytes, the published version has {size}")
        buf = host_buffer(size, pinned=pinned, role="read")
        mv = memoryview(buf.numpy()).cast("B")

        def one(span: tuple[int, int]) -> bytes:
            a, b = span
            view = mv[a:b]
            while view:
                n = os.preadv(fd, [view], a)
                if n <= 0:
                    raise DigestMismatch(f"{path}: shorter than {size} bytes while read")
                view, a = view[n:], a + n
            return hashlib.sha256(mv[span[0] : b]).digest() if digest and chunk_bytes else b""

        with ThreadPoolExecutor(threads(), thread_name_prefix="read") as pool:
            digests = list(pool.map(one, _chunks(size, chunk_bytes or CHUNK_BYTES)))
    finally:
        os.close(fd)
    if digest is not None:
        have = (
            combine(digests, chunk_bytes, size) if chunk_bytes else hashlib.sha256(mv).hexdigest()
        )
        if have != digest:
            raise DigestMismatch(
                f"{path}: sha256 {have[:12]}… does not match the published {digest[:12]}… "
                "(corrupt or replaced file)"
            )
    return parse_image(buf, str(path))


def parse_image(buf: Any, where: str = "weights") -> dict[str, Any]:
    """Tensors viewing a safetensors image (uint8 CPU tensor); ValueError if malformed."""
    import torch

    size = buf.numel()
    (n,) = struct.unpack("<Q", bytes(buf[:8].numpy()))
    if not 0 < n <= size - 8:
        raise ValueError(f"{where}: not a safetensors file")
    try:
        header = json.loads(bytes(buf[8 : 8 + n].numpy()))
    except ValueError:
        raise ValueError(f"{where}: bad safetensors header") from None
    start = 8 + n
    out: dict[str, Any] = {}
    end = 0
    for name, spec in header.items():
        if name == "__metadata__":
            continue
        dtype = getattr(torch, _TORCH_DTYPES.get(spec.get("dtype"), ""), None)
        a, b = spec["data_offsets"]
        shape = [int(x) for x in spec["shape"]]
        count = 1
        for x in shape:
            count *= x
        if dtype is None or not 0 <= a <= b <= size - start:
            raise ValueError(f"{where}: {name}: bad dtype or offsets")
        raw = buf[start + a : start + b]
        if count * torch.empty((), dtype=dtype).element_size() != b - a:
            raise ValueError(f"{where}: {name}: shape {shape} does not fit {b - a} bytes")
        if (start + a) % torch.empty((), dtype=dtype).element_size():
            raw = raw.clone()  # a foreign file may not align its tensors
        out[name] = raw.view(dtype).view(shape) if count else torch.empty(shape, dtype=dtype)
        end = max(end, b)
    if start + end != size:
        raise ValueError(f"{where}: not a whole safetensors file")
    return out
