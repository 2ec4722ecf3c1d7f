"""GPU leases: distinct devices for concurrent jobs, waiting, no stale locks; CPU fallbacks; threads."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from medflow.train import devices, gpu_locks
from medflow.train.devices import available_cores, select_device, set_threads
from medflow.train.gpu_locks import (
    DeviceLease,
    LockDirError,
    acquire_devices,
    default_lock_dir,
    lock_path,
    visible_devices,
)

# A job in miniature: lease one device, report it, hold it until told to stop.
HOLDER = """
import os, sys, time
from pathlib import Path
from medflow.train.gpu_locks import acquire_devices
lock_dir, visible, out, release = sys.argv[1:5]
lease = acquire_devices(1, lock_dir=lock_dir, poll=0.05, env={"CUDA_VISIBLE_DEVICES": visible})
Path(out + ".tmp").write_text(",".join(lease.devices))
os.replace(out + ".tmp", out)
while not Path(release).exists():
    time.sleep(0.02)
lease.close()
"""


class Holder:
    """A subprocess that holds a lease on one of ``visible`` until :meth:`release`."""

    def __init__(self, tmp: Path, name: str, lock_dir: Path, visible: str) -> None:
        self.out = tmp / f"{name}.device"
        self.release_file = tmp / f"{name}.release"
        self.proc = subprocess.Popen(
            [sys.executable, "-c", HOLDER, str(lock_dir), visible, str(self.out), str(self.release_file)]
        )

    def device(self, timeout: float = 30.0) -> str:
        deadline = time.monotonic() + timeout
        while not self.out.exists():
            assert self.proc.poll() is None, f"holder exited with {self.proc.returncode}"
            assert time.monotonic() < deadline, "holder got no device in time"
            time.sleep(0.02)
        return self.out.read_text()

    def release(self) -> None:
        self.release_file.touch()
        assert self.proc.wait(timeout=30) == 0

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)


@pytest.fixture
def lock_dir(tmp_path: Path) -> Path:
    return tmp_path / "locks"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0,1,2", ["0", "1", "2"]),
        (" 0 , 2 ,", ["0", "2"]),
        ("GPU-aaaa,GPU-bbbb", ["GPU-aaaa", "GPU-bbbb"]),
        ("MIG-GPU-aaaa/1/0", ["MIG-GPU-aaaa/1/0"]),
        ("", []),
        ("-1", []),
        ("1,-1,2", ["1"]),  # CUDA ignores everything after an invalid index
        ("0,0,1", ["0", "1"]),
    ],
)
def test_visible_devices_parses_cuda_visible_devices(value: str, expected: list[str]) -> None:
    assert visible_devices({"CUDA_VISIBLE_DEVICES": value}) == expected


def test_visible_devices_unset_counts_torch_devices() -> None:
    assert visible_devices({}) == [str(i) for i in range(torch.cuda.device_count())]


def test_lock_files_are_named_by_sanitised_id(lock_dir: Path) -> None:
    assert lock_path(lock_dir, "0").name == "gpu-0.lock"
    assert lock_path(lock_dir, "MIG-GPU-aa:bb/1/0").name == "gpu-MIG-GPU-aa_bb_1_0.lock"
    assert default_lock_dir({}) == Path(f"/tmp/medflow-gpu-locks-{os.getuid()}")
    assert default_lock_dir({"MEDFLOW_GPU_LOCK_DIR": str(lock_dir)}) == lock_dir


def test_start_rotates_with_pid() -> None:
    starts = {gpu_locks._rotated(["0", "1", "2"], pid)[0] for pid in (100, 101, 102)}
    assert starts == {"0", "1", "2"}


def test_concurrent_jobs_get_distinct_devices_and_wait_for_a_free_one(
    tmp_path: Path, lock_dir: Path
) -> None:
    holders = [Holder(tmp_path, f"job{i}", lock_dir, "0,1,2") for i in range(3)]
    try:
        taken = [h.device() for h in holders]
        assert sorted(taken) == ["0", "1", "2"]

        with pytest.raises(TimeoutError) as busy:
            acquire_devices(1, lock_dir=lock_dir, timeout=0.2, poll=0.05, env={"CUDA_VISIBLE_DEVICES": "0,1,2"})
        for h, device in zip(holders, taken, strict=True):
            assert f"{device} (pid {h.proc.pid} on " in str(busy.value)

        waiter = Holder(tmp_path, "job3", lock_dir, "0,1,2")
        holders.append(waiter)
        time.sleep(1.0)
        assert not waiter.out.exists(), "a fourth job got a device while three were held"
        holders[1].release()
        assert waiter.device() == taken[1]

        # SIGKILL gives the process no chance to clean up; the kernel drops its flock anyway
        holders[2].kill()
        with acquire_devices(
            1, lock_dir=lock_dir, timeout=10, poll=0.05, env={"CUDA_VISIBLE_DEVICES": "0,1,2"}
        ) as lease:
            assert lease.devices == [taken[2]]
    finally:
        for h in holders:
            h.kill()


def test_lease_of_two_takes_distinct_devices_and_releases_them(lock_dir: Path) -> None:
    env = {"CUDA_VISIBLE_DEVICES": "GPU-aaaa,GPU-bbbb"}
    with acquire_devices(2, lock_dir=lock_dir, env=env) as lease:
        assert sorted(lease.devices) == ["GPU-aaaa", "GPU-bbbb"]
        assert (lock_dir / "gpu-GPU-aaaa.lock").exists()
        with pytest.raises(TimeoutError):
            acquire_devices(1, lock_dir=lock_dir, timeout=0, env=env)
    assert lease.closed
    with acquire_devices(2, lock_dir=lock_dir, timeout=0, env=env) as again:
        assert sorted(again.devices) == ["GPU-aaaa", "GPU-bbbb"]


def test_lease_is_all_or_nothing(lock_dir: Path) -> None:
    env = {"CUDA_VISIBLE_DEVICES": "0,1"}
    with acquire_devices(1, lock_dir=lock_dir, env=env) as one:
        with pytest.raises(TimeoutError):
            acquire_devices(2, lock_dir=lock_dir, timeout=0.1, poll=0.02, env=env)
        free = ({"0", "1"} - set(one.devices)).pop()
        # the failed 2-device attempt let go of the device it had taken
        with acquire_devices(1, lock_dir=lock_dir, timeout=0, env=env) as other:
            assert other.devices == [free]


def test_more_devices_than_visible_is_an_error(lock_dir: Path) -> None:
    with pytest.raises(ValueError, match=r"3 GPU\(s\) requested but 2 visible \(CUDA_VISIBLE_DEVICES='0,1'\)"):
        acquire_devices(3, lock_dir=lock_dir, env={"CUDA_VISIBLE_DEVICES": "0,1"})
    with pytest.raises(ValueError, match="0 visible"):
        acquire_devices(1, lock_dir=lock_dir, env={"CUDA_VISIBLE_DEVICES": "-1"})


def test_timeout_names_busy_device_and_holder(lock_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    env = {"CUDA_VISIBLE_DEVICES": "7"}
    with (
        acquire_devices(1, lock_dir=lock_dir, env=env),
        caplog.at_level(logging.INFO, gpu_locks.__name__),
        pytest.raises(TimeoutError, match=rf"busy: 7 \(pid {os.getpid()} on "),
    ):
        acquire_devices(1, lock_dir=lock_dir, timeout=0.2, poll=0.05, env=env)
    assert sum("waiting for 1 free GPU" in r.getMessage() for r in caplog.records) == 1


def test_apply_narrows_cuda_visible_devices(lock_dir: Path) -> None:
    env = {"CUDA_VISIBLE_DEVICES": "0,1,2"}
    with acquire_devices(2, lock_dir=lock_dir, env=env) as lease:
        lease.apply(env)
        assert env["CUDA_VISIBLE_DEVICES"] == ",".join(lease.devices)
        assert lease.torch_devices() == [torch.device("cuda:0"), torch.device("cuda:1")]


def test_apply_refuses_after_cuda_initialised(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    with pytest.raises(RuntimeError, match="already initialised"):
        DeviceLease(["1"], []).apply()
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "0,1"


def test_select_device_cpu_cases(lock_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    assert select_device(0, lock_dir=lock_dir, env={"CUDA_VISIBLE_DEVICES": "0"}) == (torch.device("cpu"), None)
    forced = {"CUDA_VISIBLE_DEVICES": "0", "MEDFLOW_DEVICE": "cpu"}
    assert select_device(1, lock_dir=lock_dir, env=forced) == (torch.device("cpu"), None)
    with caplog.at_level(logging.WARNING, devices.__name__):
        assert select_device(1, lock_dir=lock_dir, env={"CUDA_VISIBLE_DEVICES": ""}) == (torch.device("cpu"), None)
    assert "none visible" in caplog.text
    with pytest.raises(RuntimeError, match="none visible"):
        select_device(1, lock_dir=lock_dir, env={"CUDA_VISIBLE_DEVICES": "", "MEDFLOW_DEVICE": "cuda"})
    with pytest.raises(ValueError, match="MEDFLOW_DEVICE"):
        select_device(1, lock_dir=lock_dir, env={"MEDFLOW_DEVICE": "tpu"})
    assert not lock_dir.exists(), "a CPU job must not touch the GPU locks"


def test_select_device_leases_and_applies(lock_dir: Path) -> None:
    env = {"CUDA_VISIBLE_DEVICES": "3,5"}
    device, lease = select_device(1, lock_dir=lock_dir, env=env)
    assert lease is not None
    try:
        assert device == torch.device("cuda:0")
        assert lease.devices[0] in {"3", "5"}
        assert env["CUDA_VISIBLE_DEVICES"] == lease.devices[0]
    finally:
        lease.close()


def test_select_device_falls_back_to_cpu_when_granted_gpus_are_unusable(
    lock_dir: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A scheduler (SLURM's gres) may expose a device this torch cannot open: auto trains on the CPU
    and frees the lock; MEDFLOW_DEVICE=cuda refuses."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    monkeypatch.delenv("MEDFLOW_DEVICE", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with caplog.at_level(logging.WARNING, devices.__name__):
        assert select_device(1, lock_dir=lock_dir) == (torch.device("cpu"), None)
    assert "CUDA cannot use them" in caplog.text
    again = acquire_devices(1, lock_dir=lock_dir, timeout=0)  # the fallback released its lock
    again.close()
    monkeypatch.setenv("MEDFLOW_DEVICE", "cuda")
    with pytest.raises(RuntimeError, match="CUDA cannot use them"):
        select_device(1, lock_dir=lock_dir)


def test_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    assert 1 <= available_cores() <= (os.cpu_count() or 1)
    saved = torch.get_num_threads()
    env: dict[str, str] = {}
    try:
        set_threads(1, env)
        assert torch.get_num_threads() == 1
        assert env == {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    finally:
        torch.set_num_threads(saved)


def test_gpu_requests_follow_the_mode_and_the_machine(monkeypatch):
    from medflow.train import devices

    monkeypatch.setattr(devices, "gpus_on_this_machine", lambda: False)
    assert not devices.gpu_requests_enabled("auto") and devices.gpu_requests_enabled("always")
    monkeypatch.setattr(devices, "gpus_on_this_machine", lambda: True)
    assert devices.gpu_requests_enabled("auto") and not devices.gpu_requests_enabled("never")
    with pytest.raises(ValueError, match="gpu_requests"):
        devices.gpu_requests_enabled("sometimes")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    monkeypatch.undo()
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "-1")
    assert not devices.gpus_on_this_machine()


# ----------------------------------------------------------------------------------------------
# the lock folder and its files on a shared machine

OTHER_UID = 4242  # a second user, for the tests that can act as one (as root)
AS_ROOT = os.geteuid() == 0
ONE = {"CUDA_VISIBLE_DEVICES": "0"}

def lease_as_other_user(lock_dir: Path) -> str:
    """What a second user's job sees when it asks for a GPU in ``lock_dir`` (root only): a forked
    child that drops to another uid (the interpreter's own folder may be closed to other users)."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(read)
            os.setgroups([])
            os.setgid(OTHER_UID)
            os.setuid(OTHER_UID)
            try:
                with acquire_devices(1, lock_dir=lock_dir, timeout=0.3, poll=0.05, env=ONE):
                    seen = "leased"
            except Exception as exc:
                seen = f"{type(exc).__name__} {exc}"
            os.write(write, seen.encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as stream:
        seen = stream.read().decode()
    os.waitpid(pid, 0)
    return seen


@pytest.fixture
def default_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The per-user default folder, moved to a test's own place (no MEDFLOW_GPU_LOCK_DIR set)."""
    path = tmp_path / "medflow-gpu-locks"
    monkeypatch.setattr(gpu_locks, "default_lock_dir", lambda env=None: path)
    return path


@pytest.fixture
def umask_077() -> Iterator[None]:
    previous = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(previous)


@pytest.fixture
def public_dir() -> Iterator[Path]:
    """A folder under /tmp that every user can reach (pytest's tmp_path is private to its user)."""
    path = Path(tempfile.mkdtemp(prefix="medflow-test-", dir="/tmp"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path)


def give_away(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``path`` someone else's: really as root, else by pretending to be another user."""
    if AS_ROOT:
        os.chown(path, OTHER_UID, OTHER_UID, follow_symlinks=False)
    else:
        uid = os.getuid()
        monkeypatch.setattr(os, "getuid", lambda: uid + 1)


def test_the_default_lock_dir_is_created_private(default_dir: Path) -> None:
    previous = os.umask(0)
    try:
        acquire_devices(1, env=ONE).close()
    finally:
        os.umask(previous)
    assert stat.S_IMODE(default_dir.lstat().st_mode) == 0o700


@pytest.mark.parametrize("plant", ["symlink", "foreign", "group_writable", "world_writable", "file"])
def test_a_default_lock_dir_someone_else_could_control_is_refused(
    tmp_path: Path, default_dir: Path, monkeypatch: pytest.MonkeyPatch, plant: str
) -> None:
    """Another user who creates /tmp/medflow-gpu-locks-$UID first must not get our lock files (or
    block our jobs with locks of their own) without us noticing."""
    elsewhere = tmp_path / "attacker"
    elsewhere.mkdir()
    if plant == "symlink":
        default_dir.symlink_to(elsewhere)
    elif plant == "file":
        default_dir.write_text("")
    else:
        default_dir.mkdir(mode=0o700)
        mode = {"group_writable": 0o770, "world_writable": 0o777}.get(plant)
        if mode is None:
            give_away(default_dir, monkeypatch)
        else:
            default_dir.chmod(mode)
    with pytest.raises(LockDirError, match=rf"GPU lock folder {default_dir} .*remove it, or set MEDFLOW_GPU_LOCK_DIR"):
        acquire_devices(1, env=ONE)
    assert list(elsewhere.iterdir()) == []
    if default_dir.is_dir():
        assert list(default_dir.iterdir()) == []


@pytest.mark.parametrize("target_exists", [True, False])
def test_a_symlink_planted_as_a_lock_file_is_not_followed(tmp_path: Path, lock_dir: Path, target_exists: bool) -> None:
    lock_dir.mkdir()
    victim = tmp_path / "victim.txt"
    if target_exists:
        victim.write_text("precious\n")
    lock_path(lock_dir, "0").symlink_to(victim)
    with pytest.raises(LockDirError, match="is a symbolic link"):
        acquire_devices(1, lock_dir=lock_dir, env=ONE)
    assert victim.read_text() == "precious\n" if target_exists else not victim.exists()


def test_a_hard_link_planted_as_a_lock_file_is_refused(tmp_path: Path, lock_dir: Path) -> None:
    lock_dir.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    os.link(victim, lock_path(lock_dir, "0"))
    with pytest.raises(LockDirError, match="hard link"):
        acquire_devices(1, lock_dir=lock_dir, env=ONE)
    assert victim.read_text() == "precious\n"


def test_an_unusable_lock_file_releases_the_devices_taken_before_it(lock_dir: Path) -> None:
    lock_dir.mkdir()
    lock_path(lock_dir, "1").symlink_to(lock_dir / "elsewhere")
    env = {"CUDA_VISIBLE_DEVICES": "0,1"}
    with pytest.raises(LockDirError):
        acquire_devices(2, lock_dir=lock_dir, env=env)
    with acquire_devices(1, lock_dir=lock_dir, timeout=0, env={"CUDA_VISIBLE_DEVICES": "0"}) as lease:
        assert lease.devices == ["0"]


def test_lock_files_and_a_created_shared_folder_are_open_to_every_user_whatever_the_umask(
    lock_dir: Path, umask_077: None
) -> None:
    with acquire_devices(1, lock_dir=lock_dir, env=ONE):
        pass
    assert stat.S_IMODE(lock_dir.lstat().st_mode) == 0o1777
    assert stat.S_IMODE(lock_path(lock_dir, "0").lstat().st_mode) == 0o666


def test_a_shared_lock_dir_of_another_user_must_be_sticky(lock_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lock_dir.mkdir()
    lock_dir.chmod(0o777)
    give_away(lock_dir, monkeypatch)
    with pytest.raises(LockDirError, match=rf"{lock_dir} \(MEDFLOW_GPU_LOCK_DIR\) belongs to uid .* not sticky.*chmod \+t"):
        acquire_devices(1, lock_dir=lock_dir, env=ONE)
    assert list(lock_dir.iterdir()) == []
    lock_dir.chmod(0o1777)
    with acquire_devices(1, lock_dir=lock_dir, timeout=0, env=ONE) as lease:
        assert lease.devices == ["0"]


def test_a_symlink_as_the_shared_lock_dir_is_refused(tmp_path: Path, lock_dir: Path) -> None:
    (tmp_path / "real").mkdir()
    lock_dir.symlink_to(tmp_path / "real")
    with pytest.raises(LockDirError, match="is a symbolic link"):
        acquire_devices(1, lock_dir=lock_dir, env=ONE)
    assert list((tmp_path / "real").iterdir()) == []


@pytest.mark.skipif(not AS_ROOT, reason="acting as a second user needs root")
def test_a_second_user_waits_for_a_lock_in_a_shared_folder_instead_of_failing(
    public_dir: Path, umask_077: None
) -> None:
    lock_dir = public_dir / "locks"
    with acquire_devices(1, lock_dir=lock_dir, env=ONE):
        seen = lease_as_other_user(lock_dir)
    assert seen.startswith(f"TimeoutError no 1 free GPU(s) within 0.3 s; busy: 0 (pid {os.getpid()} on "), seen
    assert lease_as_other_user(lock_dir) == "leased"


def test_a_lock_file_this_user_cannot_write_is_an_understandable_error(
    public_dir: Path, lock_dir: Path, umask_077: None
) -> None:
    """E.g. a lock file left by an older medflow, whose mode the umask had cut to 0600."""
    if AS_ROOT:  # root may write any file: the second user is the one who cannot
        lock_dir = public_dir / "locks"
        lock_dir.mkdir(mode=0o777)
        lock_dir.chmod(0o1777)
        lock_path(lock_dir, "0").touch(mode=0o600)
        seen = lease_as_other_user(lock_dir)
    else:
        lock_dir.mkdir()
        lock_path(lock_dir, "0").touch(mode=0o400)
        with pytest.raises(LockDirError) as failure:
            acquire_devices(1, lock_dir=lock_dir, env=ONE)
        seen = f"LockDirError {failure.value}"
    assert seen.startswith(f"LockDirError cannot open GPU lock file {lock_path(lock_dir, '0')} for writing"), seen
    assert f"chmod 666 {lock_path(lock_dir, '0')}" in seen


def test_loader_workers_follow_the_job_threads_on_a_gpu_only():
    import torch

    from medflow.train.devices import loader_workers

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(8)
        assert loader_workers(None, "cuda") == 7  # every thread but the training loop's
        assert loader_workers(None, "cpu") == 2  # the CPU computes with the job's threads
        assert loader_workers(3, "cuda") == 3 and loader_workers(0, "cpu") == 0  # train.workers wins
        torch.set_num_threads(1)
        assert loader_workers(None, "cuda") == 2
    finally:
        torch.set_num_threads(before)
