"""Data-parallel training with torch's own DistributedDataParallel, on one machine.

:func:`launch` runs a function in ``world_size`` processes (one per leased GPU, or several on the
CPU with gloo), each with its process group set up; the helpers below are no-ops without a group,
so the same training code runs unchanged in a single process.
"""

from __future__ import annotations

import os
import pickle
import socket
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from medflow.train.devices import available_cores

T = TypeVar("T")

RESULT_FILE = "rank0-result.pkl"


def launch(
    fn: Callable[..., T],
    world_size: int,
    *args: Any,
    backend: str | None = None,
    threads_per_rank: int | None = None,
) -> T:
    """Run ``fn(rank, world_size, *args)`` on ``world_size`` ranks and return rank 0's result.

    ``world_size == 1`` calls ``fn`` in this process without a process group (no spawn cost, and
    debuggers work). Otherwise the ranks are fresh ``spawn`` processes (CUDA cannot be forked), so
    ``fn`` and ``args`` must be picklable: a module-level function. The backend defaults to nccl
    with CUDA and gloo without; each rank uses ``cuda:rank``. ``threads_per_rank`` (default: the
    available cores split evenly) keeps CPU ranks from oversubscribing the cores. An exception in
    any rank stops all of them and is raised here with the rank's traceback text. Return CPU
    objects: rank 0's result travels back pickled through a temporary file.
    """
    if world_size < 1:
        raise ValueError(f"world_size must be >= 1, got {world_size}")
    if world_size == 1:
        return fn(0, 1, *args)
    threads = threads_per_rank or max(1, available_cores() // world_size)
    with tempfile.TemporaryDirectory(prefix="medflow-ddp-") as tmp:
        result = Path(tmp) / RESULT_FILE
        mp.start_processes(
            _run_rank,
            args=(fn, world_size, _free_port(), backend, threads, str(result), args),
            nprocs=world_size,
            join=True,
            start_method="spawn",
        )
        with result.open("rb") as stream:
            return pickle.load(stream)


def _free_port() -> int:
    """A port nobody listens on right now (the OS picks it); rank 0 binds it a moment later."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _run_rank(
    rank: int,
    fn: Callable[..., Any],
    world_size: int,
    port: int,
    backend: str | None,
    threads: int,
    result_path: str,
    args: tuple[Any, ...],
) -> None:
    """One rank: join the group, run ``fn``, leave the group; rank 0 writes the result."""
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world_size),
        OMP_NUM_THREADS=str(threads),
    )
    torch.set_num_threads(threads)
    cuda = torch.cuda.is_available()
    backend = backend or ("nccl" if cuda else "gloo")
    if cuda:
        if rank >= torch.cuda.device_count():
            raise ValueError(f"rank {rank} has no GPU: {torch.cuda.device_count()} visible")
        torch.cuda.set_device(rank)
    dist.init_process_group(backend, rank=rank, world_size=world_size)
    try:
        value = fn(rank, world_size, *args)
        if rank == 0:
            with open(result_path, "wb") as stream:
                pickle.dump(value, stream)
    finally:
        dist.destroy_process_group()


def _group_active() -> bool:
    return dist.is_available() and dist.is_initialized()


def is_main(rank: int | None = None) -> bool:
    """Whether this is the rank that writes checkpoints, logs and reports (rank 0).

    Without ``rank`` it asks the process group; without a group the process is the only rank.
    """
    if rank is None:
        rank = dist.get_rank() if _group_active() else 0
    return rank == 0


def barrier() -> None:
    """Wait for all ranks (e.g. until rank 0 has written a file the others read); no-op alone."""
    if _group_active():
        dist.barrier()


def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """Average ``tensor`` over the ranks in place (metrics, losses) and return it; no-op alone."""
    if _group_active():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        tensor /= dist.get_world_size()
    return tensor


def wrap_ddp(model: nn.Module, device: torch.device) -> nn.Module:
    """Move ``model`` to ``device`` and wrap it in DDP when a process group runs.

    Alone, the bare model is returned, so one training loop serves 1 and N ranks.
    """
    model = model.to(device)
    if not _group_active():
        return model
    if device.type == "cuda":
        index = torch.cuda.current_device() if device.index is None else device.index
        return DistributedDataParallel(model, device_ids=[index])
    return DistributedDataParallel(model)


def unwrap(model: nn.Module) -> nn.Module:
    """The bare model inside a DDP/DataParallel wrapper, e.g. to save a checkpoint that loads
    without the ``module.`` prefix."""
    if isinstance(model, DistributedDataParallel | nn.DataParallel):
        return model.module
    return model
