"""Data parallelism for the one training loop: one process per device, ``torch.distributed`` between them.

The paragon (and the base model) is the one job that cannot be split by compartment, so it
is the one that trains data-parallel.  Every rank holds the same model, optimizer, EMA and
generator (same seed), so every rank draws the *whole* micro-batch (rows, labels, t, ε,
flips) exactly as a single process would, then keeps only its contiguous share
``shard(b, rank, world)``.  Each rank's loss is its share's sum over the global batch size
(or over the global count of kept samples when a hook masks), and after the backward pass
the gradients are summed across ranks (``all_reduce``), so every rank holds the gradient of
the full micro-batch's mean loss, takes the same optimizer step and keeps the same EMA.  A
data-parallel run therefore follows the single-process run up to float rounding.  Hooks see
only their rank's share (an AGC bank per rank).

``launch(fn, world, *args)`` starts ``world`` processes (``torch.multiprocessing.spawn``),
joins them into a process group (NCCL on CUDA, gloo otherwise) on a free local port, and
calls ``fn(rank, world, *args)`` in each; on CUDA rank r uses ``cuda:r``.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist

from ..errors import SilodiffError


def world() -> tuple[int, int]:
    """(rank, world size) of this process; (0, 1) outside a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def shard(b: int, rank: int, size: int) -> slice:
    """Rank ``rank``'s contiguous share of a batch of ``b`` rows (sizes differ by at most one)."""
    return slice(rank * b // size, (rank + 1) * b // size)


def all_sum(t: torch.Tensor) -> torch.Tensor:
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def all_reduce_grads(model: torch.nn.Module) -> None:
    """Sum every parameter's gradient across ranks (one flat buffer per dtype and device)."""
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    all_sum(flat)
    start = 0
    for g in grads:
        g.copy_(flat[start : start + g.numel()].view_as(g))
        start += g.numel()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _entry(rank: int, size: int, port: int, backend: str, fn: Callable[..., Any], args: tuple) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    if backend == "nccl":
        torch.cuda.set_device(rank)
    dist.init_process_group(backend, rank=rank, world_size=size)
    try:
        fn(rank, size, *args)
        dist.barrier()
    finally:
        dist.destroy_process_group()


def launch(fn: Callable[..., Any], size: int, *args: Any, device_type: str = "cpu") -> None:
    """Run ``fn(rank, size, *args)`` in ``size`` processes joined into one process group."""
    if size < 1:
        raise SilodiffError(f"data-parallel size must be ≥ 1, got {size}")
    if device_type == "cuda" and size > torch.cuda.device_count():
        raise SilodiffError(f"{size} data-parallel processes asked for, but this machine has "
                            f"{torch.cuda.device_count()} CUDA GPU(s)")
    backend = "nccl" if device_type == "cuda" else "gloo"
    torch.multiprocessing.spawn(_entry, args=(size, _free_port(), backend, fn, args), nprocs=size, join=True)


def rank_device(device: str, rank: int) -> str:
    """The device of rank ``rank``: ``cuda:rank`` for a CUDA run, the CPU otherwise."""
    return f"cuda:{rank}" if device.startswith("cuda") or (device == "auto" and torch.cuda.is_available()) else device
