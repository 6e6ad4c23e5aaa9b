"""Several learner processes under torchrun: DDP, or FSDP2 for models that do not fit one GPU.
Reads WORLD_SIZE, RANK and LOCAL_RANK (set by torchrun); writes nothing.

Roles. Rank 0 alone talks to Kafka, grants credits, sends feedback, checkpoints and publishes;
it drives the other ranks ("followers", `Trainer.serve`) with commands broadcast over the
process group, never pickled: a header tensor (command, payload length), then the payload as a
uint8 tensor: a TrainBatch in its wire encoding (rollstream.schemas.encode), a checkpoint path
in UTF-8, live knobs as JSON (KNOBS: every rank steps with the same lr and micro-batches).
Rank 0 sends IDLE after every empty poll, so a follower never waits in a collective much longer
than a poll (NCCL aborts a collective pending past the process group timeout), and
STOP after its final checkpoint; a follower ignores SIGTERM / SIGINT and stops on STOP, so a
signal to rank 0 alone, or to all ranks (torchrun forwards it), stops every rank cleanly.

Training. Every rank decodes the whole batch and trains its share (batching.plan), with the
loss divided by the whole step's denominators (trained tokens, sequences): these are global
without an all-reduce, since every rank holds every row. DDP / FSDP average gradients over
ranks, so each rank's loss is multiplied by the world size (step.train_on_batch): the update
equals one process's update on the whole batch.

DDP keeps a full replica per rank: rank 0 checkpoints and publishes its own copy. FSDP2 shards
every decoder layer and the rest (embeddings, head) as the root: the full state is gathered
(`get_model_state_dict(full_state_dict=True, cpu_offload=True)`, a collective every rank joins
on rank 0's GATHER / SAVE command) and written by rank 0.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import logging
import os
import signal
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Literal

import torch
import torch.distributed as dist
from torch import Tensor

from rollstream.services.learner.logprobs import LogprobModule

log = logging.getLogger(__name__)

Mode = Literal["ddp", "fsdp"]

# commands from rank 0 to the followers
IDLE, TRAIN, RESUME, GATHER, SAVE, STOP, KNOBS = range(7)
COMMAND_NAMES = ("idle", "train", "resume", "gather", "save", "stop", "knobs")

TIMEOUT = timedelta(minutes=30)  # longest a rank may wait in one collective


def world_from_env() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment; (0, 1, 0) without it."""
    return (
        int(os.environ.get("RANK", "0")),
        int(os.environ.get("WORLD_SIZE", "1")),
        int(os.environ.get("LOCAL_RANK", "0")),
    )


def resolve_mode(parallel: str, world: int) -> str:
    """`learner.parallel` as used: auto is ddp under torchrun with several processes, else
    none; ddp / fsdp with one process is none; none with several processes is an error."""
    if parallel not in ("auto", "none", "ddp", "fsdp"):
        raise ValueError(f"learner.parallel: {parallel!r} is not auto, none, ddp or fsdp")
    if world <= 1:
        return "none"
    if parallel == "none":
        raise ValueError(f"learner.parallel is none but WORLD_SIZE is {world}")
    return "ddp" if parallel == "auto" else parallel


@dataclass
class Parallel:
    """This process's place in a data-parallel learner, and the collectives it uses."""

    mode: Mode
    rank: int
    world: int
    local_rank: int
    device: str  # where this rank trains: "cuda:<local rank>" or "cpu"
    mesh: Any = field(default=None, repr=False)  # FSDP's device mesh

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def fsdp(self) -> bool:
        return self.mode == "fsdp"

    # ---- models -------------------------------------------------------------------------------
    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """The module forward / backward go through: DDP (or FSDP2) of LogprobModule(model).
        `model` keeps its parameters (DDP) or has them sharded in place (FSDP)."""
        module = LogprobModule(model)
        if self.fsdp:
            return self._shard(module)
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.local_rank] if self.device.startswith("cuda") else None
        # buffers (rotary frequencies) are constants: no broadcast in every forward (the
        # keyword is forward_sync_buffers from torch 2.13, broadcast_buffers before)
        params = inspect.signature(DistributedDataParallel).parameters
        key = "forward_sync_buffers" if "forward_sync_buffers" in params else "broadcast_buffers"
        return DistributedDataParallel(module, device_ids=ids, **{key: False})

    def wrap_frozen(self, model: torch.nn.Module) -> torch.nn.Module:
        """A model without gradients (the KL reference): sharded too under FSDP, else as is."""
        return self._shard(LogprobModule(model)) if self.fsdp else model

    def _shard(self, module: LogprobModule) -> torch.nn.Module:
        from torch.distributed.fsdp import fully_shard

        for layer in _blocks(module.model):
            fully_shard(layer, mesh=self.mesh)
        fully_shard(module, mesh=self.mesh)  # the root: embeddings, final norm, head
        return module

    # ---- step.DataParallel --------------------------------------------------------------------
    def accumulate(self, model: Any, sync: bool) -> contextlib.AbstractContextManager[Any]:
        if self.fsdp:
            model.set_requires_gradient_sync(sync)
            return contextlib.nullcontext()
        return contextlib.nullcontext() if sync else model.no_sync()

    def all_sum(self, t: Tensor) -> Tensor:
        x = t.to(self.device)
        dist.all_reduce(x, op=dist.ReduceOp.SUM)
        return x.to(t.device)

    def gather_metrics(self, metrics: dict[str, float]) -> list[dict[str, float]]:
        return [json.loads(b) for b in self.all_gather_bytes(json.dumps(metrics).encode())]

    def all_gather_bytes(self, data: bytes) -> list[bytes]:
        """Every rank's `data`, in rank order (lengths first, then padded uint8 tensors)."""
        size = torch.tensor([len(data)], dtype=torch.int64, device=self.device)
        sizes = [torch.zeros_like(size) for _ in range(self.world)]
        dist.all_gather(sizes, size)
        lengths = [int(s) for s in sizes]
        buf = torch.zeros(max(lengths), dtype=torch.uint8, device=self.device)
        if data:
            buf[: len(data)] = _tensor(data, self.device)
        outs = [torch.empty_like(buf) for _ in range(self.world)]
        dist.all_gather(outs, buf)
        return [_bytes(o[:n]) for o, n in zip(outs, lengths, strict=True)]

    # ---- commands -----------------------------------------------------------------------------
    def send(self, command: int, payload: bytes = b"") -> None:
        """Rank 0: broadcast a command and its payload to the followers."""
        head = torch.tensor([command, len(payload)], dtype=torch.int64, device=self.device)
        dist.broadcast(head, 0)
        if payload:
            dist.broadcast(_tensor(payload, self.device), 0)

    def receive(self) -> tuple[int, bytes]:
        """A follower: wait for rank 0's next command; (command, payload)."""
        head = torch.empty(2, dtype=torch.int64, device=self.device)
        dist.broadcast(head, 0)
        command, n = (int(v) for v in head.tolist())
        if not n:
            return command, b""
        buf = torch.empty(n, dtype=torch.uint8, device=self.device)
        dist.broadcast(buf, 0)
        return command, _bytes(buf)

    # ---- full state (FSDP: collectives every rank joins) ----------------------------------
    def model_state(self, model: torch.nn.Module) -> dict[str, Tensor]:
        """The full model state on CPU on rank 0 (empty on the other ranks under FSDP)."""
        if not self.fsdp:
            return model.state_dict()
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
        return get_model_state_dict(model, options=opts)

    def optimizer_state(self, model: torch.nn.Module, optimizer: Any) -> dict[str, Any]:
        """The full optimizer state, parameters keyed by name, on CPU on rank 0 (FSDP)."""
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            get_optimizer_state_dict,
        )

        opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
        return get_optimizer_state_dict(model, optimizer, options=opts)

    def load_state(
        self,
        model: torch.nn.Module,
        optimizer: Any,
        model_state: dict[str, Tensor],
        optimizer_state: dict[str, Any],
    ) -> None:
        """Shard full states (read by every rank) into `model` and `optimizer` (FSDP)."""
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            set_model_state_dict,
            set_optimizer_state_dict,
        )

        opts = StateDictOptions(full_state_dict=True)
        set_model_state_dict(model, model_state, options=opts)
        set_optimizer_state_dict(model, optimizer, optimizer_state, options=opts)

    def close(self) -> None:
        """Leave the process group together: a rank that destroyed it while another still had
        it open aborted at exit now and then ("terminate called without an active exception",
        gloo, tests/integration/test_learner_torchrun.py)."""
        if not dist.is_initialized():
            return
        try:
            if dist.get_backend() == "gloo":
                dist.monitored_barrier(timeout=timedelta(seconds=30))
            else:
                dist.barrier()
        except Exception as exc:  # a rank already gone: leave anyway
            log.warning("learner: barrier before leaving the process group: %s", exc)
        dist.destroy_process_group()


def setup(parallel: str = "auto", device: str = "auto") -> Parallel | None:
    """Join torchrun's process group (nccl on CUDA, gloo on CPU); None for one process.
    `device` is the learner's setting: auto / cuda* mean this rank's GPU (LOCAL_RANK)."""
    rank, world, local = world_from_env()
    mode = resolve_mode(parallel, world)
    if mode == "none":
        return None
    cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if cuda:
        torch.cuda.set_device(local)
    where = f"cuda:{local}" if cuda else "cpu"
    dist.init_process_group("nccl" if cuda else "gloo", timeout=TIMEOUT)
    mesh = None
    if mode == "fsdp":
        from torch.distributed.device_mesh import init_device_mesh

        mesh = init_device_mesh("cuda" if cuda else "cpu", (world,))
    log.info("learner: rank %d of %d (%s) on %s", rank, world, mode, where)
    return Parallel(mode, rank, world, local, where, mesh)  # type: ignore[arg-type]


def ignore_stop_signals() -> None:
    """Followers: SIGTERM / SIGINT are rank 0's to act on (it sends STOP when done)."""

    def note(signum: int, frame: object) -> None:
        log.info("learner: signal %d on a follower rank; waiting for rank 0 to stop", signum)

    signal.signal(signal.SIGTERM, note)
    signal.signal(signal.SIGINT, note)


class FullModel:
    """A gathered state dict with its model's config: what publish_version needs of a model."""

    def __init__(self, state: dict[str, Tensor], config: Any) -> None:
        self._state = state
        self.config = config

    def state_dict(self) -> dict[str, Tensor]:
        return self._state


def _blocks(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The transformer blocks of a Hugging Face model (its `_no_split_modules` classes), else
    the decoder's `layers`: FSDP's units."""
    names = set(getattr(model, "_no_split_modules", None) or ())
    blocks = [m for m in model.modules() if type(m).__name__ in names]
    if blocks:
        return blocks
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else None
    return list(getattr(decoder, "layers", []))


def _tensor(data: bytes, device: str) -> Tensor:
    return torch.frombuffer(bytearray(data), dtype=torch.uint8).to(device)


def _bytes(t: Tensor) -> bytes:
    return t.cpu().numpy().tobytes()
