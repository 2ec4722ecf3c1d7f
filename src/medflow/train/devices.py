"""Which device a training job runs on and how many CPU threads it uses; and whether the workflow's
jobs request GPUs at all (:func:`gpu_requests_enabled`, read by the Snakefile).

GPUs are leased through :mod:`medflow.train.gpu_locks`, so concurrent jobs never share a device.
torch is imported lazily: the Snakefile imports this module, and :func:`select_device` must run
before anything initialises CUDA.
"""

from __future__ import annotations

import logging
import os
from collections.abc import MutableMapping
from pathlib import Path
from typing import TYPE_CHECKING

from medflow.train.gpu_locks import DeviceLease, acquire_devices, visible_devices

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

DEVICE_ENV = "MEDFLOW_DEVICE"
DEVICE_CHOICES = ("auto", "cpu", "cuda")
THREAD_ENV_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


# ----------------------------------------------------------------------------------------------
# the device of a job


def select_device(
    gpus: int,
    *,
    lock_dir: str | Path | None = None,
    timeout: float | None = None,
    poll: float = 0.5,
    env: MutableMapping[str, str] | None = None,
) -> tuple[torch.device, DeviceLease | None]:
    """The device a job trains on: lease ``gpus`` devices and return ``cuda:0``, or the CPU.

    Call it first thing, before anything touches CUDA. Keep the returned lease for the whole job
    (or just let the process end; the locks go with it). ``MEDFLOW_DEVICE=cpu`` forces the CPU,
    ``cuda`` fails instead of falling back when no GPU is visible, ``auto`` (default) decides.
    """
    import torch

    env = os.environ if env is None else env
    choice = env.get(DEVICE_ENV, "auto").strip().lower() or "auto"
    if choice not in DEVICE_CHOICES:
        raise ValueError(f"{DEVICE_ENV}={choice!r}; expected one of {', '.join(DEVICE_CHOICES)}")
    if choice == "cpu" or gpus == 0:
        reason = f"{DEVICE_ENV}=cpu" if choice == "cpu" else "the rule asks for no GPU"
        log.info("training on the CPU (%s)", reason)
        return torch.device("cpu"), None
    if not visible_devices(env):
        message = (
            f"{gpus} GPU(s) requested but none visible "
            f"(CUDA_VISIBLE_DEVICES={env.get('CUDA_VISIBLE_DEVICES', '<unset>')!r})"
        )
        if choice == "cuda":
            raise RuntimeError(f"{message} and {DEVICE_ENV}=cuda")
        log.warning("%s; training on the CPU", message)
        return torch.device("cpu"), None
    lease = acquire_devices(gpus, lock_dir=lock_dir, timeout=timeout, poll=poll, env=env)
    try:
        lease.apply(env)
        if env is os.environ and not torch.cuda.is_available():
            # e.g. a scheduler granted GPUs that this torch build or driver cannot open
            message = f"leased GPU(s) {','.join(lease.devices)} but CUDA cannot use them"
            if choice == "cuda":
                raise RuntimeError(f"{message} and {DEVICE_ENV}=cuda")
            log.warning("%s; training on the CPU", message)
            lease.close()
            return torch.device("cpu"), None
    except BaseException:
        lease.close()
        raise
    return lease.torch_devices()[0], lease


def data_parallel_ranks(requested: int, lease: DeviceLease | None) -> int:
    """How many data-parallel ranks a job with ``gpus: requested`` runs: one per leased GPU, or, on
    the CPU, ``requested`` gloo ranks (the same run as on N GPUs, so results do not depend on where
    it ran; each rank gets its share of the job's threads)."""
    if lease is not None:
        return len(lease.devices)
    return max(1, int(requested))


# ----------------------------------------------------------------------------------------------
# CPU threads


def available_cores() -> int:
    """Cores this process may run on (its affinity mask, which cgroups and taskset narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def loader_workers(requested: int | None, device_type: str) -> int:
    """DataLoader workers of a training job: ``train.workers`` when set; on a GPU every thread the
    job was given but the training loop's (a GPU waits on decoding and augmentation, so they follow
    the cores: ``threads_per_gpu`` in the config); on the CPU 2, as the job's threads do the compute
    (and CPU runs stay identical to earlier ones)."""
    if requested is not None:
        return int(requested)
    if device_type != "cuda":
        return 2
    import torch

    return max(2, torch.get_num_threads() - 1)


def set_threads(n: int, env: MutableMapping[str, str] | None = None) -> None:
    """Use ``n`` threads in torch and tell child processes (OpenMP/MKL read these at start)."""
    import torch

    n = max(1, int(n))
    torch.set_num_threads(n)
    env = os.environ if env is None else env
    for name in THREAD_ENV_VARS:
        env[name] = str(n)


# ----------------------------------------------------------------------------------------------
# whether jobs request GPUs


def gpus_on_this_machine() -> bool:
    """Whether this host has an NVIDIA GPU, without importing torch or initialising CUDA."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    return Path("/proc/driver/nvidia/gpus").is_dir() or any(Path("/dev").glob("nvidia[0-9]*"))


def gpu_requests_enabled(mode: str) -> bool:
    """``always``: jobs request their GPUs (cluster profiles: the submitting host may have none);
    ``never``: no job requests one; ``auto``: request them only where this machine has a GPU."""
    if mode not in ("auto", "always", "never"):
        raise ValueError(f"gpu_requests = {mode!r}; use auto, always or never")
    return mode == "always" or (mode == "auto" and gpus_on_this_machine())
