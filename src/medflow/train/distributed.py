"""Data-parallel training with torch's own DistributedDataParallel, on one machine.

:func:`launch` runs a function on ``world_size`` ranks started by torchrun (one per leased GPU, or
several on the CPU with gloo), each with its process group set up; the helpers below are no-ops
without a group, so the same training code runs unchanged in a single process.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from medflow.train.devices import available_cores

T = TypeVar("T")

JOB_FILE = "job.pkl"
RESULT_FILE = "rank0-result.pkl"


class RankFailed(RuntimeError):
    """A rank of a data-parallel run raised; the message holds its traceback."""


@dataclass(frozen=True)
class RankJob:
    """What every rank runs, handed to the ranks pickled (so ``fn`` must be importable)."""

    fn: Callable[..., Any]
    args: tuple[Any, ...]
    backend: str | None
    threads: int


def launch(
    fn: Callable[..., T],
    world_size: int,
    *args: Any,
    backend: str | None = None,
    threads_per_rank: int | None = None,
) -> T:
    """Run ``fn(rank, world_size, *args)`` on ``world_size`` ranks and return rank 0's result.

    ``world_size == 1`` calls ``fn`` in this process without a process group (no start-up cost, and
    debuggers work). Otherwise torchrun (``torch.distributed.run --standalone``) starts the ranks as
    fresh processes, so ``fn`` must be a module-level function and ``args`` picklable. The backend
    defaults to nccl with CUDA and gloo without; each rank uses ``cuda:LOCAL_RANK``.
    ``threads_per_rank`` (default: the available cores split evenly) keeps CPU ranks from
    oversubscribing the cores. When a rank fails, torchrun stops the others and the failing rank's
    traceback is raised here as :class:`RankFailed`. Return CPU objects: rank 0's result travels
    back pickled through a temporary file. The ranks' output goes where this process's stderr goes
    (a rule's log).
    """
    if world_size < 1:
        raise ValueError(f"world_size must be >= 1, got {world_size}")
    if world_size == 1:
        return fn(0, 1, *args)
    threads = threads_per_rank or max(1, available_cores() // world_size)
    with tempfile.TemporaryDirectory(prefix="medflow-ddp-") as tmp:
        job_dir = Path(tmp)
        with (job_dir / JOB_FILE).open("wb") as stream:
            pickle.dump(RankJob(fn, tuple(args), backend, threads), stream)
        command = [
            sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1",
            f"--nproc-per-node={world_size}", "--max-restarts=0", "-m", "medflow.train.rank", str(job_dir),
        ]
        # the ranks must import fn the way this process did (tests, scripts outside the package)
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p),
                   OMP_NUM_THREADS=str(threads))
        output = _file_or_none(sys.stderr)
        completed = subprocess.run(command, env=env, stdout=output, stderr=output, check=False)
        if completed.returncode != 0:
            raise RankFailed(_first_failure(job_dir) or f"torchrun exited with status {completed.returncode}")
        with (job_dir / RESULT_FILE).open("rb") as stream:
            return pickle.load(stream)


def _file_or_none(stream: Any) -> Any:
    """``stream`` when it is backed by a file descriptor the ranks can inherit, else None (inherit)."""
    try:
        stream.flush()
        stream.fileno()
    except (AttributeError, OSError, ValueError):
        return None
    return stream


def _first_failure(job_dir: Path) -> str | None:
    """The traceback of the rank that failed first (torchrun then stops the others)."""
    errors = sorted(job_dir.glob("rank*.error"), key=lambda p: p.stat().st_mtime_ns)
    return errors[0].read_text(encoding="utf-8") if errors else None


def run_rank(job_dir: Path) -> None:
    """One rank under torchrun: join the group, run the job, leave the group; rank 0 writes the
    result, and a failing rank writes its traceback for :func:`launch` to raise."""
    import traceback

    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    with (job_dir / JOB_FILE).open("rb") as stream:
        job: RankJob = pickle.load(stream)
    torch.set_num_threads(job.threads)
    cuda = torch.cuda.is_available()
    try:
        if cuda:
            if local_rank >= torch.cuda.device_count():
                raise ValueError(f"rank {rank} has no GPU: {torch.cuda.device_count()} visible")
            torch.cuda.set_device(local_rank)
        dist.init_process_group(job.backend or ("nccl" if cuda else "gloo"))
        try:
            value = job.fn(rank, world_size, *job.args)
        finally:
            dist.destroy_process_group()
        if rank == 0:
            partial = job_dir / (RESULT_FILE + ".partial")
            with partial.open("wb") as stream:
                pickle.dump(value, stream)
            partial.replace(job_dir / RESULT_FILE)
    except BaseException:
        (job_dir / f"rank{rank}.error").write_text(
            f"rank {rank} of {world_size} failed:\n{traceback.format_exc()}", encoding="utf-8"
        )
        raise


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
