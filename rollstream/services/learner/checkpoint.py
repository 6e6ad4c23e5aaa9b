"""Learner checkpoints: model and optimizer tensors in safetensors, everything else in JSON.

Writes `<root>/step-<N>/` = model.safetensors (the model's state, shared tensors handled by
safetensors' save_model), optimizer.safetensors (every tensor of the optimizer state, keyed
`state.<param index>.<name>`) and state.json (optimizer param groups and scalars, scheduler
state, step, weight version, the last batch seq received, consumed offsets, trained batch
ids). A checkpoint is written into a temporary folder and renamed into place, then `LATEST`
(a one-line file) is replaced atomically: a crash leaves the previous checkpoint intact. The
newest `keep` are kept. Nothing is unpickled on load (safetensors and JSON only).

Under FSDP (distributed.py) the trainer passes full states gathered on rank 0 instead of the
model and optimizer: the optimizer's parameters are then keyed by name, not by index, so such
a checkpoint resumes under FSDP only (DDP checkpoints are the single-process ones).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, load_model, save_file, save_model

LATEST = "LATEST"


def _split_optimizer(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, per_param in state["state"].items():
        for name, value in per_param.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{idx}.{name}"] = value.detach().contiguous().cpu()
            else:
                scalars.setdefault(str(idx), {})[name] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _param_key(idx: str) -> int | str:
    return int(idx) if idx.isdigit() else idx  # an index, or a parameter name (FSDP)


def _join_optimizer(tensors: dict[str, torch.Tensor], rest: dict[str, Any]) -> dict[str, Any]:
    state: dict[int | str, dict[str, Any]] = {}
    for key, value in tensors.items():
        idx, name = key.split(".", 1)[1].rsplit(".", 1)  # state.<index or name>.<field>
        state.setdefault(_param_key(idx), {})[name] = value
    for idx, extra in rest["scalars"].items():
        state.setdefault(_param_key(idx), {}).update(extra)
    return {"state": state, "param_groups": rest["param_groups"]}


def _unshared(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """safetensors refuses tensors sharing memory (tied weights): copy the repeats."""
    seen: set[int] = set()
    out = {}
    for key, value in state.items():
        t = value.detach().contiguous().cpu()
        ptr = t.untyped_storage().data_ptr()
        out[key] = t.clone() if ptr in seen else t
        seen.add(ptr)
    return out


def save(
    root: str | Path,
    step: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    info: dict[str, Any],
    scheduler: Any | None = None,
    keep: int = 2,
    *,
    model_state: dict[str, torch.Tensor] | None = None,
    optimizer_state: dict[str, Any] | None = None,
) -> Path:
    """Write checkpoint `step` under `root`, point LATEST at it, prune to `keep`. The model's
    and optimizer's states are read from them, or given (full states gathered under FSDP)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:08d}"
    tmp = root / f".tmp-step-{step:08d}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    if model_state is None:
        save_model(model, str(tmp / "model.safetensors"))
    else:
        save_file(_unshared(model_state), str(tmp / "model.safetensors"))
    opt = optimizer.state_dict() if optimizer_state is None else optimizer_state
    tensors, rest = _split_optimizer(opt)
    save_file(tensors, str(tmp / "optimizer.safetensors"))
    body = {
        **info,
        "step": step,
        "optimizer": rest,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
    }
    (tmp / "state.json").write_text(json.dumps(body))
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    pointer = root / f".{LATEST}.tmp"
    pointer.write_text(final.name + "\n")
    os.replace(pointer, root / LATEST)
    for old in sorted(root.glob("step-*"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest(root: str | Path) -> Path | None:
    """The newest complete checkpoint folder, or None."""
    pointer = Path(root) / LATEST
    if not pointer.exists():
        return None
    path = Path(root) / pointer.read_text().strip()
    return path if (path / "state.json").exists() else None


def load(
    path: str | Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any | None = None,
) -> dict[str, Any]:
    """Load a checkpoint into `model`, `optimizer` (and `scheduler`); returns its info."""
    path = Path(path)
    body = json.loads((path / "state.json").read_text())
    device = next(model.parameters()).device
    load_model(model, str(path / "model.safetensors"), device=str(device))
    tensors = load_file(str(path / "optimizer.safetensors"), device=str(device))
    optimizer.load_state_dict(_join_optimizer(tensors, body.pop("optimizer")))
    sched = body.pop("scheduler")
    if scheduler is not None and sched is not None:
        scheduler.load_state_dict(sched)
    return body


def read(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, Any]]:
    """(model tensors, optimizer state, the rest) of a checkpoint, on CPU, loaded into nothing
    (FSDP shards them itself)."""
    path = Path(path)
    body = json.loads((path / "state.json").read_text())
    model_state = load_file(str(path / "model.safetensors"))
    optimizer = _join_optimizer(
        load_file(str(path / "optimizer.safetensors")), body.pop("optimizer")
    )
    return model_state, optimizer, body
