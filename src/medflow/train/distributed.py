"""Data-parallel training with torch's own DistributedDataParallel, on one machine.

:func:`launch` runs a function on ``world_size`` ranks started by torchrun (one per leased GPU, or
several on the CPU with gloo), each with its process group set up; with one rank it runs in this
process, without a group.

The ranks use the job's GPUs, which the job's lease (:mod:`medflow.train.gpu_locks`) holds only as long
as the job process lives, so no rank may outlive the job. torchrun runs in a session of its own; a
SIGTERM (Snakemake, SLURM) or SIGINT to the job stops torchrun and waits for it and its ranks before
the job, and with it the lease, ends. A job killed outright (SIGKILL) can clean nothing up: there the
kernel kills torchrun when the job dies and each rank when torchrun dies (Linux's
``PR_SET_PDEATHSIG``), and each rank also watches the job's pid.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import pickle
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from medflow.train.devices import available_cores

T = TypeVar("T")

log = logging.getLogger(__name__)

JOB_FILE = "job.pkl"
RESULT_FILE = "rank0-result.pkl"
JOB_PID_ENV = "MEDFLOW_JOB_PID"  # the process whose death must end every rank
PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
STOP_GRACE = 40.0  # seconds torchrun gets to stop its ranks (it gives them 30) before SIGKILL
RANKS_GONE_WITHIN = 10.0  # seconds to wait for ranks the kernel kills after torchrun's SIGKILL
WATCH_EVERY = 0.5  # seconds between a rank's checks that its job still runs


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
                   OMP_NUM_THREADS=str(threads), **{JOB_PID_ENV: str(os.getpid())})
        returncode = _run_torchrun(command, env, job_dir)
        if returncode != 0:
            raise RankFailed(_first_failure(job_dir) or f"torchrun exited with status {returncode}")
        with (job_dir / RESULT_FILE).open("rb") as stream:
            return pickle.load(stream)


def _run_torchrun(command: list[str], env: dict[str, str], job_dir: Path) -> int:
    """Run torchrun to its end and return its exit status; when this job is interrupted (SIGTERM,
    SIGINT) stop torchrun and its ranks before passing the interruption on."""
    output = _file_or_none(sys.stderr)
    with _signal_handlers({signal.SIGTERM: _exit_on_signal}):
        # own session: a terminal's Ctrl-C reaches the job alone, which then stops torchrun in order
        proc = subprocess.Popen(command, env=env, stdout=output, stderr=output, start_new_session=True,
                                preexec_fn=_die_with_parent(os.getpid()))
        try:
            return proc.wait()
        except BaseException:
            _stop(proc, job_dir)
            raise


def _exit_on_signal(signum: int, frame: object) -> None:
    """SIGTERM's default would end the job at once, before its ranks; exit as a shell reports it."""
    raise SystemExit(128 + signum)


@contextlib.contextmanager
def _signal_handlers(handlers: dict[signal.Signals, Any]) -> Iterator[None]:
    """Set ``handlers`` while the block runs (only the main thread can: elsewhere a signal keeps
    its default, and the kernel's parent-death signal still ends torchrun with the job)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.signal(signum, handler) for signum, handler in handlers.items()}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)


def _stop(proc: subprocess.Popen[bytes], job_dir: Path) -> None:
    """Stop torchrun and make sure no rank outlives it. SIGTERM to torchrun's group makes torchrun
    stop its ranks (each in a session of its own) and wait for them; SIGKILL after a grace period.
    Further SIGTERM/SIGINT are ignored meanwhile: a second signal must not cut the clean-up short."""
    with _signal_handlers({signal.SIGTERM: signal.SIG_IGN, signal.SIGINT: signal.SIG_IGN}):
        log.warning("interrupted: stopping torchrun and its ranks before this job lets its GPU(s) go")
        _signal_group(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=STOP_GRACE)
        except subprocess.TimeoutExpired:
            _signal_group(proc.pid, signal.SIGKILL)
            proc.wait()
        _wait_for_ranks(job_dir)


def _signal_group(pgid: int, signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signum)


def _wait_for_ranks(job_dir: Path) -> None:
    """Ranks torchrun could not stop (it was SIGKILLed) die by their parent-death signal a moment
    later; wait for that, so the job's GPUs are released only once nothing uses them."""
    pids = [int(path.read_text()) for path in job_dir.glob("rank*.pid")]
    deadline = time.monotonic() + RANKS_GONE_WITHIN
    while any(_running(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)


def _running(pid: int) -> bool:
    """Whether process ``pid`` still runs; a zombie (dead, not yet reaped by its parent) does not."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True  # no /proc: kill(pid, 0) is all there is to go on
    return state not in ("Z", "X")


def _die_with_parent(parent: int) -> Callable[[], None]:
    """The ``preexec_fn`` of torchrun: it is SIGKILLed when ``parent`` (the job) dies, even by SIGKILL."""
    arm = _parent_death_signal()

    def preexec() -> None:
        arm()
        if os.getppid() != parent:  # the job died before arm(): no signal would ever come
            os._exit(1)

    return preexec


def _parent_death_signal() -> Callable[[], None]:
    """A function that has the kernel SIGKILL the calling process when its parent dies (Linux's
    ``PR_SET_PDEATHSIG``; a no-op elsewhere). libc is looked up here, before any fork: a child
    between fork and exec should only call into it."""
    if not sys.platform.startswith("linux"):
        return lambda: None
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    kill = int(signal.SIGKILL)

    def arm() -> None:
        if prctl(PR_SET_PDEATHSIG, kill, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")

    return arm


def _die_with_job() -> None:
    """Tie this rank's life to the job's: SIGKILL when torchrun dies (which dies with the job), and
    a watchdog on the job's pid for what that signal misses: a torchrun that died before this rank
    armed it (while torch was being imported), or a system without it."""
    _parent_death_signal()()
    job = os.environ.get(JOB_PID_ENV)
    if job:
        threading.Thread(target=_kill_self_when_gone, args=(int(job),), name="job-watchdog", daemon=True).start()


def _kill_self_when_gone(pid: int) -> None:
    while _running(pid):
        time.sleep(WATCH_EVERY)
    os.kill(os.getpid(), signal.SIGKILL)


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
    _die_with_job()
    pid_file = job_dir / f"rank{rank}.pid"  # for _wait_for_ranks, which must never read half of it
    pid_file.with_suffix(".tmp").write_text(str(os.getpid()), encoding="utf-8")
    pid_file.with_suffix(".tmp").replace(pid_file)
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
            # leave together: a rank that tears the group down while a peer is still in its last
            # exchange can make gloo abort that peer ("terminate called without an active exception")
            dist.barrier()
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
