"""Multi-process training on PyTorch's own distributed engine (``torchrun``).

``torchrun --nproc_per_node N -m sarbridge.app.cli train ...`` starts N processes and sets ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``; :func:`init_distributed`
reads them and joins the process group (NCCL on CUDA, gloo on CPU). Without them it returns a
single-process :class:`DistContext` and creates no process group, so every helper here is a
no-op (or the identity) in an ordinary run.

Helpers: :func:`barrier`, :func:`broadcast_object` (e.g. a model-selection decision),
:func:`shard_range` (contiguous, near-equal shares of N items), :func:`gather_rows` (per-rank
feature rows back in the original order on every rank), :func:`all_reduce_gradients_` (average
gradients of parameters updated outside DistributedDataParallel), :func:`broadcast_buffers_`
and :func:`unwrap_model` (the plain module under DDP / ``torch.compile`` wrappers). A run that
ends well calls :func:`shutdown` (all ranks wait for each other, then leave the group).
"""

from __future__ import annotations

import atexit
import gc
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, cast

import torch
import torch.distributed as dist
from torch import nn

from sarbridge.core.errors import ConfigError, SarbridgeError
from sarbridge.core.utils import resolve_device

_CONTEXT: DistContext | None = None


@dataclass(frozen=True)
class DistContext:
    """Where this process stands in a (possibly single-process) run.

    Attributes:
        rank: global rank (0 in a single-process run).
        world_size: number of processes.
        local_rank: rank on this machine (selects the GPU).
        backend: ``"nccl"``, ``"gloo"`` or None without a process group.
        device: the torch device this process computes on.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        """True on the process that writes files and shows progress (rank 0)."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """True when more than one process takes part."""
        return self.world_size > 1

    @property
    def comm_device(self) -> torch.device:
        """Device of the tensors handed to collectives (CUDA for NCCL, CPU for gloo)."""
        return self.device if self.backend == "nccl" else torch.device("cpu")


def _env_int(name: str, default: int) -> int:

    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"environment variable {name}={raw!r} is not an integer",
                          "launch with torchrun, which sets RANK/WORLD_SIZE/LOCAL_RANK") from None


def init_distributed(device_name: str = "auto") -> DistContext:
    """The run's :class:`DistContext`; joins torchrun's process group when launched by it.

    Without ``WORLD_SIZE > 1`` in the environment this is a single-process context on
    :func:`~sarbridge.core.utils.resolve_device` ``(device_name)`` and no process group is created.
    Under torchrun the device is ``cuda:LOCAL_RANK`` (NCCL) when ``device_name`` allows CUDA and
    CUDA is present, else the CPU (gloo). Calling it again returns the same context; the group is
    destroyed at interpreter exit (or by :func:`cleanup`).

    Args:
        device_name: ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (``N`` is ignored under torchrun:
            each process takes the GPU of its local rank).

    Raises:
        SarbridgeError: CUDA asked for but missing, or more local processes than GPUs.
    """
    global _CONTEXT

    world = _env_int("WORLD_SIZE", 1)
    if world <= 1:
        return DistContext(device=resolve_device(device_name))
    if _CONTEXT is not None and dist.is_initialized():
        return _CONTEXT
    rank, local_rank = _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
    wants_cuda = device_name == "auto" or device_name.startswith("cuda")
    if wants_cuda and torch.cuda.is_available():
        if local_rank >= torch.cuda.device_count():
            raise SarbridgeError(
                f"local rank {local_rank} has no GPU (this machine has {torch.cuda.device_count()})",
                "start at most one process per GPU (torchrun --nproc_per_node)",
            )
        device, backend = torch.device("cuda", local_rank), "nccl"
        torch.cuda.set_device(device)
    else:
        if device_name.startswith("cuda"):
            raise SarbridgeError(f"device '{device_name}' requested but CUDA is not available", "use --device cpu")
        device, backend = torch.device("cpu"), "gloo"
    if not dist.is_initialized():
        kwargs: dict[str, Any] = {"backend": backend, "rank": rank, "world_size": world}
        if backend == "nccl":
            kwargs["device_id"] = device
        dist.init_process_group(**kwargs)
        atexit.register(cleanup)
    _CONTEXT = DistContext(rank=rank, world_size=world, local_rank=local_rank, backend=backend, device=device)
    return _CONTEXT


def current_context() -> DistContext:
    """The context :func:`init_distributed` made, or a single-process CPU context.

    When a process group exists that was not made by :func:`init_distributed` (a test or another
    launcher), its rank and size are used with the CPU device (gloo) or ``cuda:LOCAL_RANK`` (NCCL).
    """
    if _CONTEXT is not None and dist.is_available() and dist.is_initialized():
        return _CONTEXT
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        backend = str(dist.get_backend())
        local = _env_int("LOCAL_RANK", 0)
        device = torch.device("cuda", local) if backend == "nccl" else torch.device("cpu")
        return DistContext(dist.get_rank(), dist.get_world_size(), local, backend, device)
    return DistContext()


def cleanup() -> None:
    """Destroy the process group (if any) and forget the context."""
    global _CONTEXT
    _CONTEXT = None
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def shutdown() -> None:
    """End a successful multi-process run in order: free unreachable objects (DDP reducers hold
    communication buckets), wait until every rank is done, then destroy the process group.

    A rank that tears its group down while another is still communicating, or a group left to
    interpreter finalization, can make the process abort at exit (gloo's ``terminate called
    without an active exception``) after all its work is written. Call this at the end of the
    normal path only: after an error, a barrier would wait for ranks that never arrive, so the
    exit hook (:func:`cleanup`, no barrier) is left to run instead. A no-op without a group.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return
    gc.collect()
    if dist.get_world_size() > 1:
        dist.barrier()
    cleanup()


def _active(ctx: DistContext | None) -> DistContext | None:
    ctx = ctx if ctx is not None else current_context()
    return ctx if ctx.distributed else None


def barrier(ctx: DistContext | None = None) -> None:
    """Wait for every process (no-op in a single-process run)."""
    if _active(ctx) is not None:
        dist.barrier()


def broadcast_object(obj: Any, src: int = 0, ctx: DistContext | None = None) -> Any:
    """``obj`` of rank ``src`` on every rank (picklable objects; identity in a single process)."""
    c = _active(ctx)
    if c is None:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src, device=c.comm_device)
    return box[0]


def shard_range(n: int, rank: int, world_size: int) -> range:
    """Contiguous share of ``range(n)`` for ``rank``: the first ``n % world_size`` ranks take one more.

    Example: ``n=10, world_size=4`` gives ``0-2, 3-5, 6-7, 8-9``.
    """
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} outside a world of {world_size}")
    base, extra = divmod(n, world_size)
    start = rank * base + min(rank, extra)
    return range(start, start + base + (1 if rank < extra else 0))


def gather_rows(local: torch.Tensor, n: int, ctx: DistContext | None = None) -> torch.Tensor:
    """Concatenate every rank's :func:`shard_range` rows in rank order: the ``(n, D)`` whole, everywhere.

    Shards may be uneven (or empty); the result is float32 on the CPU. In a single process this
    returns ``local`` (on the CPU, float32).

    Args:
        local: this rank's rows ``(len(shard_range(n, rank, W)), D)`` (2-D).
        n: total number of rows.
        ctx: the context (default: :func:`current_context`).
    """
    c = _active(ctx)
    local = local.detach().float().cpu()
    if c is None:
        return local
    mine = shard_range(n, c.rank, c.world_size)
    if local.shape[0] != len(mine):
        raise ValueError(f"rank {c.rank} holds {local.shape[0]} rows, its shard has {len(mine)}")
    dim = torch.tensor([local.shape[1] if local.ndim == 2 else 0], device=c.comm_device)
    dist.all_reduce(dim, op=dist.ReduceOp.MAX)
    d = int(dim.item())
    rows = max(len(shard_range(n, r, c.world_size)) for r in range(c.world_size))
    padded = torch.zeros(rows, d, device=c.comm_device)
    if len(mine):
        padded[: len(mine)] = local.reshape(len(mine), d).to(c.comm_device)
    parts = [torch.empty_like(padded) for _ in range(c.world_size)]
    dist.all_gather(parts, padded)
    out = [p[: len(shard_range(n, r, c.world_size))].cpu() for r, p in enumerate(parts)]
    return torch.cat(out) if n else torch.zeros(0, d)


def all_reduce_gradients_(params: Iterable[nn.Parameter], ctx: DistContext | None = None) -> None:
    """Average the ``.grad`` of ``params`` over ranks in place (parameters DDP does not manage,
    e.g. an adversarial critic with its own optimiser), so every rank takes the same step."""
    c = _active(ctx)
    if c is None:
        return
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
        p.grad.div_(c.world_size)


@torch.no_grad()
def broadcast_buffers_(module: nn.Module, src: int = 0, ctx: DistContext | None = None) -> None:
    """Copy ``src``'s buffers (e.g. BatchNorm running statistics) to every rank."""
    if _active(ctx) is None:
        return
    for b in module.buffers():
        dist.broadcast(b, src=src)


def unwrap_model(module: nn.Module) -> nn.Module:
    """The plain module under ``DistributedDataParallel`` and ``torch.compile`` wrappers."""
    while True:
        if isinstance(module, nn.parallel.DistributedDataParallel):
            module = module.module
        elif hasattr(module, "_orig_mod"):
            module = cast(nn.Module, module._orig_mod)  # set by torch.compile (OptimizedModule)
        else:
            return module


__all__ = [
    "DistContext", "all_reduce_gradients_", "barrier", "broadcast_buffers_", "broadcast_object", "cleanup",
    "current_context", "gather_rows", "init_distributed", "shard_range", "unwrap_model",
]
