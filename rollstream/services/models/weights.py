"""The weight store: versions of a policy as safetensors, with sha256, in a directory or any
fsspec URI (s3://... with the `s3` extra). Tensors never go through Kafka: the learner writes a
version here and publishes a small WeightUpdate (uri, sha256) on `weights`.

Layout: `<store>/<policy>/v<version:08d>/` holding `model.safetensors`, `config.json`, and
(from the first version on, copied) the tokenizer files. A version is written into a `.tmp`
directory and renamed when complete, so a reader never sees half a version. The newest `keep`
versions stay; older ones are deleted.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rollstream.services.models.weightfile import (
    CHUNK_BYTES,
    DigestMismatch,
    digest_file,
    read_verified,
    stage_image,
    write_image,
)

WEIGHTS_FILE = "model.safetensors"
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "generation_config.json",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
    "chat_template.jinja",
    "added_tokens.json",
)


class WeightError(RuntimeError):
    """A weight version that cannot be used: missing, truncated, or a sha256 mismatch."""


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _is_local(uri: str) -> bool:
    return "://" not in uri or uri.startswith("file://")


def _local_path(uri: str) -> Path:
    return Path(uri[len("file://") :] if uri.startswith("file://") else uri)


def version_dir_name(version: int) -> str:
    return f"v{version:08d}"


def publish_version(
    model: Any,
    *,
    store: str,
    policy: str,
    version: int,
    step: int = 0,
    model_dir: str | Path | None = None,
    keep: int = 5,
    storage_options: dict[str, Any] | None = None,
    wire_dtype: str | None = None,
    phases: dict[str, float] | None = None,
    chunk_bytes: int = CHUNK_BYTES,
) -> Any:
    """Write `model` (a transformers model or a state dict) as version `version`; return the
    WeightUpdate to publish. config.json comes from the model; tokenizer files from
    `model_dir` (the model's original directory).

    `wire_dtype` ("bfloat16", "float16", "float32"; None = as the model holds them): floating
    tensors are cast to it on their own device before the copy to the host - bf16 halves the
    bytes of fp32 master weights. The weights file is hashed while it is written, in
    `chunk_bytes` chunks by parallel threads (weightfile's chunked sha256; 0: plain sha256).
    `phases`, if given, receives the seconds of each phase (gather, serialise, write_hash,
    other_files, rename)."""
    from rollstream.schemas import WeightUpdate

    clock = _Clock(phases)
    staging = (
        _local_path(store)
        if _is_local(store)
        else Path(tempfile.gettempdir()) / f"rollstream-publish-{os.getpid()}"
    )
    final_local = staging / policy / version_dir_name(version)
    tmp = final_local.with_name(final_local.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    with clock("gather"):
        tensors = gather_state(model, wire_dtype)
    weights_digest = write_safetensors(
        tensors, tmp / WEIGHTS_FILE, {"format": "pt"}, chunk_bytes, phases
    )
    del tensors
    with clock("other_files"):
        _write_config_and_tokenizer(model, tmp, model_dir, wire_dtype)
        files = {
            p.name: weights_digest if p.name == WEIGHTS_FILE else sha256_file(p)
            for p in sorted(tmp.iterdir())
            if p.is_file()
        }
        size = (tmp / WEIGHTS_FILE).stat().st_size
    with clock("rename"):
        if final_local.exists():
            shutil.rmtree(final_local)
        tmp.rename(final_local)  # atomic on one filesystem: readers see all or nothing
    uri = _place_in_store(final_local, store, policy, version, storage_options or {}, keep)
    return WeightUpdate(
        policy=policy,
        version=version,
        uri=uri,
        weights_file=WEIGHTS_FILE,
        sha256=files[WEIGHTS_FILE],
        chunk_bytes=chunk_bytes,
        size_bytes=size,
        files=files,
        step=step,
        produced_at=time.time(),
    )


def _write_config_and_tokenizer(
    model: Any, out: Path, model_dir: str | Path | None, wire_dtype: str | None
) -> None:
    """config.json from `model` (if it has a config; its dtype set to `wire_dtype` when the
    weights are cast), and the tokenizer files found in `model_dir`, into `out`."""
    if hasattr(model, "config"):
        cfg = model.config
        if wire_dtype is not None:  # say what the file holds: loaders default to it
            cfg = type(cfg).from_dict(cfg.to_dict())
            cfg.dtype = wire_dtype
        cfg.save_pretrained(str(out))
    if model_dir is not None:
        for name in TOKENIZER_FILES:
            src = Path(model_dir) / name
            if src.exists():
                shutil.copy2(src, out / name)


def _place_in_store(
    local: Path, store: str, policy: str, version: int, storage_options: dict[str, Any], keep: int
) -> str:
    """The URI of the finished version directory `local`: in a local store it is already in
    place (older versions past `keep` pruned); else it is uploaded and the local copy removed."""
    if _is_local(store):
        uri = str(local.resolve())
        _prune_local(local.parent, keep)
        return uri
    uri = _upload(
        local, f"{store.rstrip('/')}/{policy}/{version_dir_name(version)}", storage_options, keep
    )
    shutil.rmtree(local)
    return uri


class _Clock:
    """`with clock("phase"):` adds the block's seconds to phases["phase"] (if phases)."""

    def __init__(self, phases: dict[str, float] | None) -> None:
        self.phases = phases

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            if self.phases is not None:
                self.phases[name] = self.phases.get(name, 0.0) + time.perf_counter() - t0


WIRE_DTYPES = ("float32", "bfloat16", "float16")


def gather_state(model: Any, wire_dtype: str | None = None) -> dict[str, Any]:
    """The tensors to publish, still on their device: the model's state dict (one copy of
    tied weights), floating tensors cast to `wire_dtype` there (a GPU casts 1 GB in
    microseconds; the copy to the host then moves half the bytes of fp32 weights)."""
    import torch

    if wire_dtype is not None and wire_dtype not in WIRE_DTYPES:
        raise ValueError(f"weights.wire_dtype: unknown {wire_dtype!r}; one of {WIRE_DTYPES}")
    dtype = getattr(torch, wire_dtype) if wire_dtype else None
    state = model.state_dict() if hasattr(model, "state_dict") else model
    tensors: dict[str, Any] = {}
    for k, v in state.items():
        t = v.detach()
        if dtype is not None and t.is_floating_point() and t.dtype != dtype:
            t = t.to(dtype)
        tensors[k] = t
    _drop_tied(model, tensors)
    return tensors


def write_safetensors(
    tensors: dict[str, Any],
    path: str | Path,
    metadata: dict[str, str] | None = None,
    chunk_bytes: int = CHUNK_BYTES,
    phases: dict[str, float] | None = None,
) -> str:
    """Write `tensors` (any device) to `path` as a safetensors file and return its digest
    (weightfile's chunked sha256 over `chunk_bytes` chunks; 0: plain sha256): the file is
    staged in one host buffer (pinned for GPU tensors), then every chunk is hashed and written
    by its own thread - no serialised copy, no second read. `safetensors.torch.load_file`
    reads the result. `phases` gets "serialise" (device -> host image) and "write_hash"."""
    clock = _Clock(phases)
    with clock("serialise"):
        image = stage_image(tensors, metadata)
    with clock("write_hash"):
        return write_image(image, path, chunk_bytes)


def _drop_tied(model: Any, tensors: dict[str, Any]) -> None:
    """safetensors refuses shared storage: keep one copy of tied embeddings."""
    cfg = getattr(model, "config", None)
    if cfg is not None and getattr(cfg, "tie_word_embeddings", False):
        tensors.pop("lm_head.weight", None)


def _unshare(tensors: dict[str, Any]) -> None:
    """safetensors refuses tensors that share memory (e.g. tied weights in a plain state
    dict): give every later alias its own copy."""
    seen: set[tuple[int, int]] = set()
    for name, t in tensors.items():
        key = (t.untyped_storage().data_ptr(), t.storage_offset())
        if key in seen:
            tensors[name] = t.clone()
        seen.add(key)


def _is_version_name(name: str) -> bool:
    return len(name) == 9 and name[0] == "v" and name[1:].isdigit()


def _prune_local(policy_dir: Path, keep: int) -> None:
    """Delete all but the newest `keep` version directories (nothing else is touched)."""
    versions = sorted(p for p in policy_dir.iterdir() if p.is_dir() and _is_version_name(p.name))
    for old in versions[: -max(1, keep)]:
        shutil.rmtree(old, ignore_errors=True)


def _prune_remote(fs: Any, policy_path: str, keep: int) -> None:
    names = sorted(
        p.rstrip("/").rsplit("/", 1)[-1]
        for p in fs.ls(policy_path, detail=False)
        if _is_version_name(p.rstrip("/").rsplit("/", 1)[-1])
    )
    for old in names[: -max(1, keep)]:
        fs.rm(f"{policy_path}/{old}", recursive=True)


def _upload(local: Path, uri: str, storage_options: dict[str, Any], keep: int) -> str:
    """Copy the finished version to `uri` (via `<uri>.tmp`, then a move: an object store has
    no atomic rename, but the WeightUpdate naming it is only sent after this returns)."""
    import fsspec

    fs, path = fsspec.core.url_to_fs(uri, **storage_options)
    tmp = path + ".tmp"
    if fs.exists(tmp):
        fs.rm(tmp, recursive=True)
    if fs.exists(path):
        fs.rm(path, recursive=True)
    fs.put(str(local) + "/", tmp + "/", recursive=True)
    fs.mv(tmp, path, recursive=True)
    _prune_remote(fs, path.rsplit("/", 1)[0], keep)
    return uri


def fetch_version(
    uri: str,
    expected_sha256: str,
    weights_file: str = WEIGHTS_FILE,
    storage_options: dict[str, Any] | None = None,
    cache: str | Path | None = None,
    *,
    files: dict[str, str] | None = None,
    store: str | None = None,
    verify: str = "full",
    expected_size: int | None = None,
    chunk_bytes: int = 0,
    _weights_read_by_caller: bool = False,
) -> Path:
    """A local directory holding the version at `uri`, every file a loader reads verified;
    WeightError if missing, truncated, different, or not where it may be.

    Checked: `weights_file` is the one file loaders read (model.safetensors; a WeightUpdate
    naming config.json would otherwise pass the check while the weights load unverified), its
    sha256 is `expected_sha256`, every file of the `files` manifest (config.json, tokenizer)
    matches its digest, and with `store` the version lies inside the weight store. A missing
    fsspec backend (s3:// without s3fs) is a WeightError too, never a crash of the caller.

    `verify="size"` - only for a local store written by a trusted learner on this host, which
    hashed the bytes as it wrote them - checks the weights file's exact `expected_size` and a
    whole safetensors header instead of hashing it again (the small manifest files are still
    hashed); `verify="full"` hashes everything (the weights file in parallel chunks when
    `chunk_bytes` > 0, as published). A loader that can take tensors should use `fetch_state`
    instead: it reads the weights file once and verifies the very bytes it returns."""
    if verify not in ("full", "size"):
        raise ValueError(f"weights.verify: unknown {verify!r} (full, size)")
    if weights_file != WEIGHTS_FILE:
        raise WeightError(f"{uri}: weights_file {weights_file!r} is not {WEIGHTS_FILE!r}")
    if files is not None and files.get(WEIGHTS_FILE, expected_sha256) != expected_sha256:
        raise WeightError(f"{uri}: the manifest's {WEIGHTS_FILE} digest is not sha256")
    if store is not None:
        check_in_store(uri, store)
    if _is_local(uri):
        local = _local_path(uri)
    else:
        local = Path(cache or "/tmp/rollstream-weights") / hashlib.sha1(uri.encode()).hexdigest()
        if not (local / weights_file).exists():
            try:
                import fsspec

                fs, path = fsspec.core.url_to_fs(uri, **(storage_options or {}))
                fs.get(path.rstrip("/") + "/", str(local) + "/", recursive=True)
            except FileNotFoundError:
                raise WeightError(f"{uri}: not found in the weight store") from None
            except ImportError as exc:
                raise WeightError(f"{uri}: no filesystem for this URI ({exc})") from None
    expected = {**(files or {}), WEIGHTS_FILE: expected_sha256}
    for name, digest in sorted(expected.items()):
        path = local / name
        if "/" in name or name.startswith(".") or not path.is_file():
            raise WeightError(f"{path}: file missing")
        if name == WEIGHTS_FILE and _weights_read_by_caller:
            continue
        if name == WEIGHTS_FILE and verify == "size" and _is_local(uri) and expected_size:
            _check_size_and_header(path, expected_size)
            continue
        got = digest_file(path, chunk_bytes) if name == WEIGHTS_FILE else sha256_file(path)
        if got != digest:
            if not _is_local(uri):
                shutil.rmtree(local, ignore_errors=True)  # a later try downloads it again
            raise WeightError(
                f"{path}: sha256 {got[:12]}… does not match the published "
                f"{digest[:12]}… (corrupt or truncated file)"
            )
    return local


def fetch_update(upd: Any, **kw: Any) -> tuple[Path, dict[str, Any]]:
    """`fetch_state` of a WeightUpdate `upd`: its uri, digest, weights file, size, chunking and
    manifest; `kw` as fetch_state's (store, verify, pinned, ...)."""
    return fetch_state(
        upd.uri,
        upd.sha256,
        upd.weights_file,
        size_bytes=upd.size_bytes,
        chunk_bytes=upd.chunk_bytes,
        files=upd.files,
        **kw,
    )


def fetch_state(
    uri: str,
    expected_sha256: str,
    weights_file: str = WEIGHTS_FILE,
    *,
    size_bytes: int,
    chunk_bytes: int = 0,
    files: dict[str, str] | None = None,
    store: str | None = None,
    verify: str = "full",
    storage_options: dict[str, Any] | None = None,
    cache: str | Path | None = None,
    pinned: bool = False,
) -> tuple[Path, dict[str, Any]]:
    """(the version's local directory, its tensors): every manifest file checked as in
    `fetch_version`, and the weights file read once, in parallel chunks, into one host buffer
    (pinned: for a copy to a GPU) whose bytes are hashed as they arrive and compared with the
    published digest before any tensor is returned - the tensors are views of the verified
    bytes (valid until the next call in this process). `verify="size"` (local store only)
    checks size and header instead of the digest. WeightError on any mismatch."""
    local = fetch_version(
        uri,
        expected_sha256,
        weights_file,
        files=files,
        store=store,
        verify=verify,
        storage_options=storage_options,
        cache=cache,
        chunk_bytes=chunk_bytes,
        _weights_read_by_caller=True,
    )
    digest = None if (verify == "size" and _is_local(uri)) else expected_sha256
    try:
        tensors = read_verified(
            local / WEIGHTS_FILE, digest, size=size_bytes, chunk_bytes=chunk_bytes, pinned=pinned
        )
    except (DigestMismatch, ValueError) as exc:
        if not _is_local(uri):
            shutil.rmtree(local, ignore_errors=True)  # a later try downloads it again
        raise WeightError(str(exc)) from None
    return local, tensors


def check_in_store(uri: str, store: str) -> None:
    """WeightError unless `uri` names a place inside the weight store `store` (a directory or
    an fsspec URI): an update must not make a stage read files from anywhere else."""
    if _is_local(uri) != _is_local(store):
        raise WeightError(f"{uri}: not inside the weight store {store}")
    if _is_local(uri):
        inside = _local_path(uri).resolve().is_relative_to(_local_path(store).resolve())
    else:
        root = store.rstrip("/") + "/"
        inside = uri.startswith(root) and ".." not in uri[len(root) :].split("/")
    if not inside:
        raise WeightError(f"{uri}: not inside the weight store {store}")


def check_store_backend(store: str, storage_options: dict[str, Any] | None = None) -> None:
    """ValueError at config time when no filesystem can open `store` (s3:// without s3fs)."""
    if _is_local(store):
        return
    try:
        import fsspec

        fsspec.core.url_to_fs(store, **(storage_options or {}))
    except ImportError as exc:
        raise ValueError(f"weights.uri {store!r}: {exc}") from None


def default_store(uri: str | None, run_dir: str | None) -> str | None:
    """The run's weight store: `weights.uri`, else `<run folder>/weights` (the learner's
    default), else None when neither is known to this process."""
    if uri:
        return uri
    return str(Path(run_dir) / "weights") if run_dir else None


def _check_size_and_header(path: Path, expected_size: int) -> None:
    """The cheap check of `verify="size"`: exact size, and a safetensors header whose last
    data offset ends exactly at the end of the file."""
    size = path.stat().st_size
    if size != expected_size:
        raise WeightError(
            f"{path}: {size} bytes, the published version has {expected_size} "
            "(truncated or replaced file)"
        )
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        try:
            header = json.loads(f.read(n)) if 0 < n < size else None
        except ValueError:
            header = None
    ends = [v["data_offsets"][1] for k, v in (header or {}).items() if k != "__metadata__"]
    if header is None or 8 + n + max(ends, default=0) != size:
        raise WeightError(f"{path}: not a whole safetensors file")
