"""The weight store: versions round-trip bit for bit, bad files are refused, old ones pruned."""

from __future__ import annotations

import json
import uuid

import pytest
import torch

from rollstream.services.models.weights import (
    WeightError,
    fetch_state,
    fetch_version,
    publish_version,
    sha256_file,
)


def state(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"a.weight": torch.randn(4, 3, generator=g), "b.bias": torch.randn(5, generator=g)}


def load(path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


def test_a_published_version_round_trips_with_its_checksums(tmp_path):
    store = tmp_path / "store"
    upd = publish_version(state(0), store=str(store), policy="pi", version=3, step=7)
    assert (upd.policy, upd.version, upd.step) == ("pi", 3, 7)
    assert upd.uri.endswith("pi/v00000003")
    assert not list((store / "pi").glob("*.tmp"))  # staged, then renamed
    local = fetch_version(upd.uri, upd.sha256, upd.weights_file, chunk_bytes=upd.chunk_bytes)
    got = load(local / upd.weights_file)
    for k, v in state(0).items():
        assert torch.equal(got[k], v)
    assert upd.files[upd.weights_file] == upd.sha256
    assert upd.size_bytes == (local / upd.weights_file).stat().st_size
    # a file:// URI names the same version
    assert fetch_version("file://" + upd.uri, upd.sha256, chunk_bytes=upd.chunk_bytes) == local


def test_config_and_tokenizer_travel_with_the_version(tmp_path, tiny_model_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    upd = publish_version(
        model, store=str(tmp_path), policy="pi", version=1, model_dir=tiny_model_dir
    )
    names = set(upd.files)
    assert {"model.safetensors", "config.json", "tokenizer.json", "tokenizer_config.json"} <= names
    config = json.loads(
        (
            fetch_version(upd.uri, upd.sha256, chunk_bytes=upd.chunk_bytes) / "config.json"
        ).read_text()
    )
    assert config["hidden_size"] == model.config.hidden_size


def test_a_corrupt_or_truncated_or_missing_file_is_refused(tmp_path):
    upd = publish_version(state(1), store=str(tmp_path), policy="pi", version=1)
    path = tmp_path / "pi" / "v00000001" / upd.weights_file
    data = path.read_bytes()

    path.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))  # one bit flipped
    with pytest.raises(WeightError, match="does not match"):
        fetch_version(upd.uri, upd.sha256, upd.weights_file, chunk_bytes=upd.chunk_bytes)
    path.write_bytes(data[: len(data) // 2])  # truncated
    with pytest.raises(WeightError, match="corrupt or truncated"):
        fetch_version(upd.uri, upd.sha256, upd.weights_file, chunk_bytes=upd.chunk_bytes)
    path.unlink()
    with pytest.raises(WeightError, match="missing"):
        fetch_version(upd.uri, upd.sha256, upd.weights_file, chunk_bytes=upd.chunk_bytes)
    with pytest.raises(WeightError, match="missing"):
        fetch_version(str(tmp_path / "pi" / "v00000009"), upd.sha256)


def test_only_the_newest_versions_are_kept(tmp_path):
    (tmp_path / "pi").mkdir()
    (tmp_path / "pi" / "notes").mkdir()  # not a version: never touched
    for v in range(1, 6):
        publish_version(state(v), store=str(tmp_path), policy="pi", version=v, keep=2)
    left = sorted(p.name for p in (tmp_path / "pi").iterdir())
    assert left == ["notes", "v00000004", "v00000005"]


def test_tied_tensors_in_a_plain_state_dict_are_saved(tmp_path):
    shared = torch.randn(6, 2)
    upd = publish_version(
        {"embed.weight": shared, "head.weight": shared}, store=str(tmp_path), policy="pi", version=1
    )
    got = load(fetch_version(upd.uri, upd.sha256, chunk_bytes=upd.chunk_bytes) / upd.weights_file)
    assert torch.equal(got["embed.weight"], shared) and torch.equal(got["head.weight"], shared)


def test_an_fsspec_store_round_trips_and_prunes(tmp_path):
    import fsspec

    root = f"memory://store-{uuid.uuid4().hex[:8]}"
    fs = fsspec.filesystem("memory")
    try:
        for v in (1, 2, 3):
            upd = publish_version(state(v), store=root, policy="pi", version=v, keep=2)
        assert upd.uri == f"{root}/pi/v00000003"
        names = sorted(
            p.rsplit("/", 1)[-1] for p in fs.ls(root.removeprefix("memory:/") + "/pi", detail=False)
        )
        assert names == ["v00000002", "v00000003"]
        local = fetch_version(
            upd.uri, upd.sha256, cache=tmp_path / "cache", chunk_bytes=upd.chunk_bytes
        )
        assert torch.equal(load(local / upd.weights_file)["a.weight"], state(3)["a.weight"])
        # version 2 is there but is not what the digest names; version 1 was pruned
        for version, why in (("v00000002", "does not match"), ("v00000001", "not found")):
            with pytest.raises(WeightError, match=why):
                fetch_version(
                    f"{root}/pi/{version}",
                    upd.sha256,
                    cache=tmp_path / "cache",
                    chunk_bytes=upd.chunk_bytes,
                )
    finally:
        fs.rm(root.removeprefix("memory:/"), recursive=True)


def test_every_file_a_loader_reads_is_verified(tmp_path):
    """issue 16 D5: an update naming config.json as its weights file (whose digest is right)
    must not get model.safetensors loaded unverified; a tampered config.json is refused."""
    upd = publish_version(state(0), store=str(tmp_path), policy="pi", version=1)
    local = fetch_version(
        upd.uri, upd.sha256, files=upd.files, store=str(tmp_path), chunk_bytes=upd.chunk_bytes
    )
    cfg = local / "config.json"
    cfg.write_text('{"model_type": "llama"}')
    files = {**upd.files, "config.json": sha256_file(cfg)}
    assert fetch_version(upd.uri, upd.sha256, files=files, chunk_bytes=upd.chunk_bytes) == local
    (local / "model.safetensors").write_bytes(b"forged")
    with pytest.raises(WeightError, match="is not 'model.safetensors'"):
        fetch_version(upd.uri, files["config.json"], "config.json", files=files)
    upd = publish_version(state(0), store=str(tmp_path), policy="pi", version=2)
    local = fetch_version(upd.uri, upd.sha256, chunk_bytes=upd.chunk_bytes)
    cfg = local / "config.json"
    cfg.write_text('{"model_type": "llama"}')
    files = {**upd.files, "config.json": sha256_file(cfg)}
    cfg.write_text('{"model_type": "llama", "forged": 1}')
    with pytest.raises(WeightError, match="config.json: sha256"):
        fetch_version(upd.uri, upd.sha256, files=files, chunk_bytes=upd.chunk_bytes)


def test_a_version_outside_the_weight_store_is_refused(tmp_path):
    elsewhere = publish_version(state(0), store=str(tmp_path / "other"), policy="pi", version=1)
    store = tmp_path / "store"
    store.mkdir()
    with pytest.raises(WeightError, match="not inside the weight store"):
        fetch_version(elsewhere.uri, elsewhere.sha256, store=str(store))
    with pytest.raises(WeightError, match="not inside the weight store"):
        fetch_version(f"{store}/../other/pi/v00000001", elsewhere.sha256, store=str(store))
    with pytest.raises(WeightError, match="not inside the weight store"):
        fetch_version("memory://x/pi/v1", elsewhere.sha256, store=str(store))


def test_a_uri_without_a_filesystem_is_refused_not_a_crash(tmp_path):
    """gs:// needs gcsfs, which the dev install leaves out (s3fs is in it, for the chart's
    s3:// run files): a store whose filesystem package is missing."""
    pytest.importorskip("fsspec")
    with pytest.raises(ImportError):
        import gcsfs  # noqa: F401
    with pytest.raises(WeightError, match="no filesystem"):
        fetch_version("gs://bucket/pi/v00000001", "ab" * 32, cache=tmp_path)
    from rollstream.services.runtime.config import WeightStoreSpec

    with pytest.raises(ValueError, match="no filesystem for gs://"):
        WeightStoreSpec(uri="gs://bucket/weights")


@pytest.mark.parametrize("chunk_bytes", [0, 16, 1 << 24])
def test_fetch_state_returns_the_verified_bytes_of_one_read(tmp_path, chunk_bytes):
    upd = publish_version(
        state(4), store=str(tmp_path), policy="pi", version=1, chunk_bytes=chunk_bytes
    )
    assert upd.chunk_bytes == chunk_bytes
    _, got = fetch_state(
        upd.uri, upd.sha256, size_bytes=upd.size_bytes, chunk_bytes=upd.chunk_bytes
    )
    assert set(got) == set(state(4))
    assert all(torch.equal(got[k], v) for k, v in state(4).items())
    # any byte changed, in any chunk, is caught by the one read that loads
    path = tmp_path / "pi" / "v00000001" / upd.weights_file
    data = path.read_bytes()
    for at in (len(data) // 3, len(data) - 1):
        path.write_bytes(data[:at] + bytes([data[at] ^ 1]) + data[at + 1 :])
        with pytest.raises(WeightError, match="does not match"):
            fetch_state(upd.uri, upd.sha256, size_bytes=upd.size_bytes, chunk_bytes=upd.chunk_bytes)
    path.write_bytes(data + b"\0")  # grown (or replaced by a file of another size)
    with pytest.raises(WeightError, match="bytes"):
        fetch_state(upd.uri, upd.sha256, size_bytes=upd.size_bytes, chunk_bytes=upd.chunk_bytes)
    # verify=size checks size and header only: a flipped data byte passes, a cut file does not
    path.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    _, got = fetch_state(
        upd.uri, upd.sha256, size_bytes=upd.size_bytes, verify="size", chunk_bytes=chunk_bytes
    )
    assert set(got) == set(state(4))
    path.write_bytes(data[:-4])
    with pytest.raises(WeightError):
        fetch_state(
            upd.uri, upd.sha256, size_bytes=len(data) - 4, verify="size", chunk_bytes=chunk_bytes
        )


def test_fetch_state_refuses_a_digest_of_the_other_scheme(tmp_path):
    """A chunked digest is not the plain sha256 of the file, nor the other way round."""
    upd = publish_version(state(5), store=str(tmp_path), policy="pi", version=1)
    assert upd.chunk_bytes > 0
    with pytest.raises(WeightError, match="does not match"):
        fetch_state(upd.uri, upd.sha256, size_bytes=upd.size_bytes, chunk_bytes=0)
    plain = sha256_file(tmp_path / "pi" / "v00000001" / upd.weights_file)
    with pytest.raises(WeightError, match="does not match"):
        fetch_state(upd.uri, plain, size_bytes=upd.size_bytes, chunk_bytes=upd.chunk_bytes)
