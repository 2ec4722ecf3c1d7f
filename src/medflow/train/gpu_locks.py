"""GPU leases: one lock file per visible device, so that concurrent jobs each get GPUs of their own.

Snakemake's ``--resources gpu=3`` only *counts* GPUs: three concurrent jobs that each declared
``gpu=1`` are all started, but none is told which device is its own, so all of them would pick
``cuda:0``. :func:`acquire_devices` closes that gap: a job takes an exclusive ``flock`` on as many
free devices as it needs, and :meth:`DeviceLease.apply` narrows its own ``CUDA_VISIBLE_DEVICES`` to
them. ``flock`` locks belong to the open file and vanish with the process, so a job that crashes
or is killed (SIGKILL included) never leaves a stale lock behind.

The lock folder decides who may take a GPU from whom, so it is checked before use, with
:func:`os.lstat` (a symbolic link is refused, never followed). The per-user default,
``/tmp/medflow-gpu-locks-$UID``, is created with mode 0700 and must be a directory owned by this
user that nobody else can write to: anyone could otherwise create it first and block our jobs or
plant links. A folder given as ``$MEDFLOW_GPU_LOCK_DIR`` (or ``lock_dir=``) may be shared by several
users: it must be owned by this user or be sticky like /tmp (``chmod +t``, so nobody deletes the
lock files of others' jobs); a missing one is created like /tmp, mode 1777. Lock files are opened
without following symbolic links and are created with mode 0666 whatever the umask, so every user
of a shared folder can open and lock them.

torch is imported lazily: taking a lease must stay cheap and must never initialise CUDA, because
``CUDA_VISIBLE_DEVICES`` is read only once, when CUDA starts in a process.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import re
import socket
import stat
import time
from collections.abc import Mapping, MutableMapping
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

LOCK_DIR_ENV = "MEDFLOW_GPU_LOCK_DIR"
BUSY_LOG_EVERY = 30.0  # seconds between "still waiting" messages


class LockDirError(RuntimeError):
    """The GPU lock folder or a lock file in it is unsafe or unusable; the message says what to do."""


# ----------------------------------------------------------------------------------------------
# what may be used


def visible_devices(env: Mapping[str, str] | None = None) -> list[str]:
    """The ids of the devices this process may use, as ``CUDA_VISIBLE_DEVICES`` names them.

    The ids are indices or ``GPU-…``/``MIG-…`` UUIDs; they name the lock files and are written back
    by :meth:`DeviceLease.apply`. An empty value or ``-1`` means no device (CUDA also ignores
    everything after the first negative index). Unset means every device torch counts (via NVML,
    which does not initialise CUDA).
    """
    env = os.environ if env is None else env
    raw = env.get("CUDA_VISIBLE_DEVICES")
    if raw is None:
        import torch

        return [str(i) for i in range(torch.cuda.device_count())]
    ids: list[str] = []
    for token in (t.strip() for t in raw.split(",")):
        if not token:
            continue
        if re.fullmatch(r"-\d+", token):
            break
        if token not in ids:  # a repeated id would make a lease wait for itself
            ids.append(token)
    return ids


# ----------------------------------------------------------------------------------------------
# leases


class DeviceLease:
    """Devices this process holds a lock on; a context manager that releases them on exit.

    The locks are plain file descriptors (not file objects), so dropping the lease without closing
    it keeps the devices until the process ends rather than until the garbage collector runs.
    """

    def __init__(self, devices: list[str], fds: list[int]) -> None:
        self.devices = list(devices)
        self._fds = list(fds)

    def __repr__(self) -> str:
        state = "closed" if self.closed else "held"
        return f"DeviceLease(devices={self.devices!r}, {state})"

    def __enter__(self) -> DeviceLease:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        return not self._fds

    def close(self) -> None:
        """Release the devices. Unlocks explicitly: forked children (DataLoader workers) share the
        open file, and merely closing our descriptor would leave the lock held while they live."""
        _release(self._fds)
        self._fds = []

    def torch_devices(self) -> list[torch.device]:
        """The leased devices as torch sees them *after* :meth:`apply`: ``cuda:0`` … ``cuda:n-1``."""
        import torch

        return [torch.device(f"cuda:{k}") for k in range(len(self.devices))]

    def apply(self, env: MutableMapping[str, str] | None = None) -> None:
        """Narrow ``CUDA_VISIBLE_DEVICES`` in ``env`` (default: this process) to the leased devices.

        CUDA reads the variable once, when it initialises; changing it afterwards would silently
        leave the process on the devices it already sees, so that is refused.
        """
        own = env is None or env is os.environ
        env = os.environ if env is None else env
        value = ",".join(self.devices)
        if own and env.get("CUDA_VISIBLE_DEVICES") != value:
            import torch

            if torch.cuda.is_initialized():
                raise RuntimeError(
                    f"cannot switch this process to GPU(s) {value}: CUDA is already initialised and "
                    "reads CUDA_VISIBLE_DEVICES only once; call select_device()/apply() before any "
                    "CUDA work (tensor.cuda(), torch.cuda.* calls, model.to('cuda'))"
                )
        env["CUDA_VISIBLE_DEVICES"] = value


def default_lock_dir(env: Mapping[str, str] | None = None) -> Path:
    """``$MEDFLOW_GPU_LOCK_DIR``, else a per-user folder in /tmp (local to the machine, like its GPUs)."""
    env = os.environ if env is None else env
    configured = env.get(LOCK_DIR_ENV)
    return Path(configured) if configured else Path(f"/tmp/medflow-gpu-locks-{os.getuid()}")


def lock_path(lock_dir: str | Path, device: str) -> Path:
    """One lock file per device id; UUID/MIG ids may hold ``/`` and ``:``, which are replaced."""
    return Path(lock_dir) / f"gpu-{re.sub(r'[^A-Za-z0-9._-]', '_', device)}.lock"


def acquire_devices(
    n: int,
    *,
    lock_dir: str | Path | None = None,
    timeout: float | None = None,
    poll: float = 0.5,
    env: Mapping[str, str] | None = None,
) -> DeviceLease:
    """Lock ``n`` distinct visible devices, waiting until that many are free.

    All-or-nothing: when fewer than ``n`` are free, whatever was taken is released before waiting,
    so two multi-GPU jobs can never hold half each and wait on one another forever. Devices are
    tried in a rotating order that starts at the PID, so concurrent jobs spread over the devices.
    ``timeout`` (seconds, ``None`` = wait forever) raises :class:`TimeoutError` naming the holders.
    """
    env = os.environ if env is None else env
    devices = visible_devices(env)
    if n < 1:
        raise ValueError(f"a lease needs at least one device, got n={n}")
    if n > len(devices):
        raise ValueError(
            f"{n} GPU(s) requested but {len(devices)} visible "
            f"(CUDA_VISIBLE_DEVICES={env.get('CUDA_VISIBLE_DEVICES', '<unset>')!r})"
        )
    directory = _ensure_lock_dir(lock_dir, env)
    start = time.monotonic()
    last_log = -float("inf")
    while True:
        fds, taken, busy = _try_lock(_rotated(devices, os.getpid()), n, directory)
        if len(fds) == n:
            log.info("leased GPU(s) %s (locks in %s)", ",".join(taken), directory)
            return DeviceLease(taken, fds)
        _release(fds)
        now = time.monotonic()
        if timeout is not None and now - start >= timeout:
            raise TimeoutError(f"no {n} free GPU(s) within {timeout:g} s; busy: {_describe(busy)}")
        if now - last_log >= BUSY_LOG_EVERY:
            log.info("waiting for %d free GPU(s); busy: %s", n, _describe(busy))
            last_log = now
        time.sleep(poll if timeout is None else max(0.0, min(poll, timeout - (now - start))))


def _ensure_lock_dir(lock_dir: str | Path | None, env: Mapping[str, str]) -> Path:
    """The lock folder, created if missing and refused (:class:`LockDirError`) if unsafe; the
    per-user default stays private, a configured folder may be shared by a team on purpose."""
    shared = lock_dir is not None or bool(env.get(LOCK_DIR_ENV))
    directory = Path(lock_dir) if lock_dir is not None else default_lock_dir(env)
    if shared:
        _make_shared_dir(directory)
    else:
        with contextlib.suppress(FileExistsError):
            directory.mkdir(mode=0o700)
    problem = _lock_dir_problem(os.lstat(directory), shared)
    if problem is None:
        return directory
    if shared:
        raise LockDirError(
            f"GPU lock folder {directory} ({LOCK_DIR_ENV}) {problem}: a lock folder must be a directory "
            "that is yours or sticky like /tmp, so nobody can delete or replace the locks of others' "
            f"jobs; make it sticky (chmod +t {directory}) or point {LOCK_DIR_ENV} elsewhere"
        )
    raise LockDirError(
        f"GPU lock folder {directory} {problem}: it must be a directory of your own that nobody else "
        "can write to (someone else may have created it to block or redirect your jobs' GPU locks); "
        f"remove it, or set {LOCK_DIR_ENV} to another folder"
    )


def _make_shared_dir(directory: Path) -> None:
    directory.parent.mkdir(parents=True, exist_ok=True)
    try:
        directory.mkdir()
    except FileExistsError:
        return
    # like /tmp: every user may add lock files, nobody may remove another's (the umask cut mkdir's mode)
    directory.chmod(0o1777)


def _lock_dir_problem(info: os.stat_result, shared: bool) -> str | None:
    """What makes the folder described by ``info`` (an lstat) unsafe, or None."""
    if stat.S_ISLNK(info.st_mode):
        return "is a symbolic link"
    if not stat.S_ISDIR(info.st_mode):
        return "is not a directory"
    mine = info.st_uid == os.getuid()
    if shared:
        return None if mine or info.st_mode & stat.S_ISVTX else f"belongs to uid {info.st_uid} and is not sticky"
    if not mine:
        return f"belongs to uid {info.st_uid}, not to you (uid {os.getuid()})"
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"is writable by others (mode {stat.S_IMODE(info.st_mode):o})"
    return None


def _rotated(devices: list[str], pid: int) -> list[str]:
    """Start at ``pid % len`` (Python's hash of an int is the int): consecutive PIDs, as jobs
    started together tend to get, begin on different devices and rarely collide."""
    k = pid % len(devices)
    return devices[k:] + devices[:k]


def _try_lock(order: list[str], n: int, directory: Path) -> tuple[list[int], list[str], dict[str, str]]:
    """Take free devices in ``order`` until ``n`` are held: (descriptors, devices, busy device → holder)."""
    fds: list[int] = []
    taken: list[str] = []
    busy: dict[str, str] = {}
    for device in order:
        if len(fds) == n:
            break
        try:
            fd = _open_lock(lock_path(directory, device))
        except BaseException:
            _release(fds)  # an unusable lock file must not leave the devices taken so far locked
            raise
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            busy[device] = _read_holder(fd)
            os.close(fd)
            continue
        _write_holder(fd)
        fds.append(fd)
        taken.append(device)
    return fds, taken, busy


def _open_lock(path: Path) -> int:
    """Open the lock file ``path`` for writing, creating it if missing, never through a symbolic link."""
    try:
        fd = _open_or_create(path)
    except OSError as exc:
        raise _lock_file_error(path, exc) from exc
    problem = _lock_file_problem(os.fstat(fd))
    if problem is not None:
        os.close(fd)
        raise LockDirError(f"GPU lock file {path} {problem}; remove it")
    return fd


def _open_or_create(path: Path) -> int:
    """An existing file is opened without ``O_CREAT``: Linux's fs.protected_regular refuses ``O_CREAT``
    on another user's file in a sticky folder, even one every user may write."""
    flags = os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC
    while True:
        with contextlib.suppress(FileNotFoundError):
            return os.open(path, flags)
        try:
            fd = os.open(path, flags | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue  # another job created it a moment ago
        os.fchmod(fd, 0o666)  # the umask cut the mode: other users of a shared folder must open it too
        return fd


def _lock_file_problem(info: os.stat_result) -> str | None:
    if not stat.S_ISREG(info.st_mode):
        return "is not a regular file"
    if info.st_nlink != 1:  # writing the holder would change the other file the link names
        return "is a hard link to another file"
    return None


def _lock_file_error(path: Path, exc: OSError) -> Exception:
    if exc.errno == errno.ELOOP:
        return LockDirError(
            f"GPU lock file {path} is a symbolic link, which medflow never follows (it could make this job "
            "overwrite another file); remove it"
        )
    if not isinstance(exc, PermissionError):
        return exc
    try:
        info = os.lstat(path)
    except OSError:
        return LockDirError(
            f"cannot create GPU lock file {path} ({exc.strerror}): every user of a shared lock folder must be "
            f"able to add files to it; make {path.parent} writable for them and sticky (chmod 1777)"
        )
    return LockDirError(
        f"cannot open GPU lock file {path} for writing ({exc.strerror}); it belongs to uid {info.st_uid} with "
        f"mode {stat.S_IMODE(info.st_mode):o}. Every user of a shared lock folder must be able to write its "
        f"lock files: ask the owner to run chmod 666 {path}, or remove it"
    )


def _write_holder(fd: int) -> None:
    """Record who holds the lock, for the "busy" messages of jobs that wait on it."""
    holder = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "since": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(holder) + "\n").encode(), 0)


def _read_holder(fd: int) -> str:
    try:
        holder = json.loads(os.pread(fd, 4096, 0).decode("utf-8"))
        return f"pid {holder['pid']} on {holder['host']} since {holder['since']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "holder unknown"  # written a moment after locking; may be mid-write


def _describe(busy: dict[str, str]) -> str:
    if not busy:
        return "none (devices freed while checking)"
    return ", ".join(f"{device} ({holder})" for device, holder in busy.items())


def _release(fds: list[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_UN)
        with contextlib.suppress(OSError):
            os.close(fd)
