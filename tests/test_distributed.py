"""Data-parallel runs: launch 2 CPU ranks with gloo, average tensors, DDP step, errors from ranks.

The rank functions live at module level because spawned ranks unpickle them by import.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from medflow.train.distributed import launch
from medflow.train.gpu_locks import acquire_devices


@pytest.fixture(autouse=True)
def _one_thread_per_rank(monkeypatch: pytest.MonkeyPatch) -> None:
    # spawned ranks inherit the environment; two ranks on a 2-core machine must not oversubscribe
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


def _mean_of_ranks(rank: int, world_size: int, scale: float) -> dict[str, object]:
    tensor = torch.tensor([float(rank), scale * (rank + 1)])
    if dist.is_initialized():
        dist.all_reduce(tensor)
        tensor /= dist.get_world_size()
    return {"mean": tensor, "world_size": world_size, "rank": rank, "threads": torch.get_num_threads()}


def _ddp_step(
    rank: int, world_size: int, init: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor
) -> list[torch.Tensor]:
    """One SGD step on this rank's shard; returns every rank's parameters (flattened)."""
    model = nn.Linear(x.shape[1], 1)
    model.load_state_dict(init)
    replica = DistributedDataParallel(model) if world_size > 1 else model
    optimiser = torch.optim.SGD(replica.parameters(), lr=0.1)
    per_rank = len(x) // world_size
    shard = slice(rank * per_rank, (rank + 1) * per_rank)
    nn.functional.mse_loss(replica(x[shard]), y[shard]).backward()
    optimiser.step()
    flat = torch.cat([p.detach().flatten() for p in model.parameters()])
    if world_size == 1:
        return [flat]
    gathered = [torch.empty_like(flat) for _ in range(world_size)]
    dist.all_gather(gathered, flat)
    return gathered


def _fail_on_rank_1(rank: int, world_size: int) -> str:
    if rank == 1:
        raise ValueError("boom on rank 1")
    time.sleep(60)  # stopped by launch as soon as rank 1 fails
    return "unreachable"


def _report_and_wait(rank: int, world_size: int, out: str) -> None:
    """Record this rank's pid and its parent's (torchrun), then run until killed."""
    path = Path(out) / f"rank{rank}.pids"
    path.with_suffix(".tmp").write_text(f"{os.getpid()} {os.getppid()}")
    path.with_suffix(".tmp").replace(path)
    time.sleep(300)


def test_launch_two_ranks_returns_rank0_mean() -> None:
    result = launch(_mean_of_ranks, 2, 10.0, threads_per_rank=1)
    torch.testing.assert_close(result["mean"], torch.tensor([0.5, 15.0]))
    assert result["world_size"] == 2
    assert result["rank"] == 0
    assert result["threads"] == 1


def test_launch_single_rank_runs_in_process_without_group() -> None:
    result = launch(_mean_of_ranks, 1, 10.0)
    torch.testing.assert_close(result["mean"], torch.tensor([0.0, 10.0]))
    assert not dist.is_initialized()


def test_ddp_step_matches_single_process_step_on_all_data() -> None:
    torch.manual_seed(0)
    init = nn.Linear(4, 1).state_dict()
    x = torch.randn(8, 4)
    y = torch.randn(8, 1)
    ranks = launch(_ddp_step, 2, init, x, y, threads_per_rank=1)
    (single,) = launch(_ddp_step, 1, init, x, y)
    assert len(ranks) == 2
    torch.testing.assert_close(ranks[0], ranks[1], rtol=0, atol=0)
    torch.testing.assert_close(ranks[0], single, rtol=1e-6, atol=1e-6)
    assert not torch.equal(single, torch.cat([init["weight"].flatten(), init["bias"]])), "the step did nothing"


def test_exception_in_a_rank_propagates_with_traceback() -> None:
    start = time.monotonic()
    with pytest.raises(Exception, match="boom on rank 1") as failure:
        launch(_fail_on_rank_1, 2, threads_per_rank=1)
    assert "Traceback" in str(failure.value)
    assert time.monotonic() - start < 45


def test_launch_rejects_empty_world() -> None:
    with pytest.raises(ValueError, match="world_size"):
        launch(_mean_of_ranks, 0, 1.0)


class _Items(torch.utils.data.Dataset):
    """Dict items, as the stage-1 datasets yield them."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"x": self.x[i], "y": self.y[i]}


def _fit_with_trainer(rank: int, world_size: int, out_dir: str, data: dict[str, torch.Tensor]) -> dict[str, object]:
    """The engine's Trainer on this rank's interleaved shard, with each rank's share of the batch."""
    from medflow.data import ShardSampler
    from medflow.data.loader import make_loader
    from medflow.train.config import TrainConfig
    from medflow.train.engine import Trainer, bce_step
    from medflow.train.stage1 import rank_batch_size

    cfg = TrainConfig(epochs=3, batch_size=8, optimizer="sgd", lr=0.5, schedule="none", workers=0,
                      pos_weight=None, amp="off")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(data["x"].shape[1], 1))
    train_set, val_set = _Items(data["x"], data["y"]), _Items(data["vx"], data["vy"])
    sampler = ShardSampler(len(train_set), rank=rank, world_size=world_size, seed=cfg.seed)
    train_loader = make_loader(train_set, batch_size=rank_batch_size(cfg.batch_size, world_size), shuffle=False,
                               seed=cfg.seed, workers=0, sampler=sampler, drop_last=True)
    val_loader = make_loader(val_set, batch_size=8, shuffle=False, seed=cfg.seed, workers=0)
    trainer = Trainer(model, cfg, out_dir, device=torch.device("cpu"), step=bce_step(), fingerprint="t",
                      progress=False, rank=rank, world_size=world_size)
    result = trainer.fit(train_loader, val_loader)
    weights = torch.cat([p.detach().flatten() for p in trainer.model.parameters()])
    return {"history": result.history, "weights": weights}


def test_trainer_on_two_ranks_follows_the_single_process_run(tmp_path) -> None:
    """Without BatchNorm, 2 ranks that each take half of every batch must retrace the 1-process run:
    same weights and same epoch losses (the reported loss is reduced over the ranks)."""
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(48, 6, generator=generator)
    y = (x[:, 0] + 0.5 * torch.randn(48, generator=generator) > 0).float()
    data = {"x": x[:32], "y": y[:32], "vx": x[32:], "vy": y[32:]}
    two = launch(_fit_with_trainer, 2, str(tmp_path / "two"), data, threads_per_rank=1)
    one = launch(_fit_with_trainer, 1, str(tmp_path / "one"), data)
    torch.testing.assert_close(two["weights"], one["weights"], rtol=1e-5, atol=1e-6)
    for column in ("train_loss", "val_loss", "val_auc"):
        assert two["history"][column].tolist() == pytest.approx(one["history"][column].tolist(), rel=1e-5)
    assert one["history"]["train_loss"].iloc[-1] < one["history"]["train_loss"].iloc[0], "nothing was learned"


# A training job in miniature: lease a GPU, run two ranks under it until killed.
KILLABLE_JOB = """
import sys
sys.path.insert(0, sys.argv[3])
from medflow.train.distributed import launch
from medflow.train.gpu_locks import acquire_devices
from test_distributed import _report_and_wait
with acquire_devices(1, lock_dir=sys.argv[1], env={"CUDA_VISIBLE_DEVICES": "0"}):
    launch(_report_and_wait, 2, sys.argv[2], threads_per_rank=1)
"""


def _running(pid: int) -> bool:
    """Whether ``pid`` runs; a zombie (dead, its new parent has not reaped it yet) does not."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False


def _started_ranks(out: Path, job: subprocess.Popen[bytes], log: Path) -> tuple[list[int], int]:
    """The ranks' pids and torchrun's, once both ranks run."""
    deadline = time.monotonic() + 180
    while len(files := sorted(out.glob("rank*.pids"))) < 2:
        assert job.poll() is None, f"the job ended with {job.returncode}:\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, "the ranks did not start in time"
        time.sleep(0.1)
    pids = [tuple(int(v) for v in f.read_text().split()) for f in files]
    (torchrun,) = {parent for _, parent in pids}
    return [rank for rank, _ in pids], torchrun


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGKILL], ids=["SIGTERM", "SIGINT", "SIGKILL"])
def test_a_killed_job_leaves_no_rank_or_torchrun_behind_and_frees_its_gpu(tmp_path: Path, signum: int) -> None:
    """Snakemake or SLURM stop a job with SIGTERM (then SIGKILL), a terminal with SIGINT: the next
    job that takes the GPU lock must not find the old ranks still on the device."""
    lock_dir, one = tmp_path / "locks", {"CUDA_VISIBLE_DEVICES": "0"}
    log = tmp_path / "job.log"
    with log.open("wb") as output:
        job = subprocess.Popen([sys.executable, "-c", KILLABLE_JOB, str(lock_dir), str(tmp_path),
                                str(Path(__file__).parent)], stdout=output, stderr=output)
    pids: list[int] = []
    try:
        ranks, torchrun = _started_ranks(tmp_path, job, log)
        pids = [torchrun, *ranks]
        killed = time.monotonic()
        job.send_signal(signum)
        if signum != signal.SIGKILL:
            # the job stops torchrun and its ranks first, and lets its GPU go only then
            with acquire_devices(1, lock_dir=lock_dir, timeout=60, poll=0.01, env=one):
                running = [pid for pid in pids if _running(pid)]
            assert running == [], f"still running when the GPU was free again: {running}"
            # SystemExit(143) as a shell reports SIGTERM; Python re-raises an unhandled SIGINT
            expected = 128 + signal.SIGTERM if signum == signal.SIGTERM else -signal.SIGINT
            assert job.wait(timeout=30) == expected, log.read_text()[-3000:]
        else:
            assert job.wait(timeout=30) == -signal.SIGKILL
            while any(_running(pid) for pid in pids) and time.monotonic() - killed < 5:
                time.sleep(0.05)
            assert [pid for pid in pids if _running(pid)] == []
            acquire_devices(1, lock_dir=lock_dir, timeout=0, env=one).close()
        assert time.monotonic() - killed < 15
    finally:
        job.kill()
        job.wait()
        for pid in pids:
            if _running(pid):
                os.kill(pid, signal.SIGKILL)
