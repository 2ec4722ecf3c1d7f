"""Benchmark stage-1 training throughput (prints measured figures; never run as a test).

    .venv/bin/python bench/train.py                                  # resnet18, 64², batch 32, CPU
    .venv/bin/python bench/train.py --model se_resnet101 --size 224 --batch 32 --steps 30   # on a GPU

Three ways to train the same model on the same data with the same batch size, side by side:

(a) medflow's engine (``Trainer``): HDF5 dataset read by DataLoader workers, pinned memory, and on
    a GPU autocast (bf16/fp16), channels-last and cudnn autotuning;
(b) a plain fp32 loop like the published code: the same loader, no mixed precision, no
    channels-last, no autotuning;
(c) the engine with "no data loading": the batches are tensors already in memory, so the gap
    between (a) and (c) is what the loader costs.

For each: images/s over the timed steps (after warm-up steps) and the share of step time spent
waiting for the next batch.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import torch
from torch import nn

from medflow.data import H5Samples, Intensity, build_augment, make_loader
from medflow.ingest.h5out import utf8
from medflow.models import build_model
from medflow.train.config import TrainConfig
from medflow.train.engine import Trainer, bce_step


def write_images(path: Path, n: int, size: int) -> list[str]:
    """``n`` random 1-channel ``size``² images in the ingest layout (one chunk per image, gzip-1)."""
    ids = [f"b{i:05d}" for i in range(n)]
    if path.exists():
        return ids
    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as f:
        f.create_dataset("sample_id", data=utf8(ids))
        images = f.create_dataset("images", (n, size, size), np.float32, chunks=(1, size, size),
                                  compression="gzip", compression_opts=1, shuffle=True)
        for i in range(0, n, 256):
            images[i : i + 256] = rng.normal(0, 1, (min(256, n - i), size, size)).astype(np.float32)
        f.attrs["kind"], f.attrs["units"] = "image", "raw"
    return ids


class _InMemory(torch.utils.data.Dataset):
    """Pre-made batches' worth of tensors, already normalised: nothing to load."""

    def __init__(self, n: int, size: int) -> None:
        self.x = torch.randn(n, 1, size, size)
        self.y = (torch.arange(n) % 2).float()

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict:
        return {"x": self.x[i], "y": self.y[i], "index": i}


def run_engine(model: nn.Module, loader, device: torch.device, steps: int, warmup: int, amp: str) -> tuple[float, float]:
    cfg = TrainConfig(epochs=1, batch_size=loader.batch_size, max_steps=warmup + steps, amp=amp, schedule="none",
                      workers=loader.num_workers, pos_weight=None)
    with tempfile.TemporaryDirectory() as out:
        trainer = Trainer(model, cfg, out, device=device, step=bce_step(), fingerprint="bench", progress=False)
        # Warm-up (cudnn autotuning, worker start) outside the clock, then one timed epoch.
        trainer.cfg.max_steps = warmup
        trainer._train_epoch(loader, 0)
        trainer.cfg.max_steps = steps
        result = trainer._train_epoch(loader, 1)
    return result["rate"], result["wait_share"]


def run_plain(model: nn.Module, loader, device: torch.device, steps: int, warmup: int) -> tuple[float, float]:
    """The published style: fp32, default memory format, loss.item() every step."""
    model = model.to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = nn.BCEWithLogitsLoss()
    done, wait, images = 0, 0.0, 0
    t0 = t_ready = time.perf_counter()
    for i, batch in enumerate(_cycle(loader)):
        if i == warmup:
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = t_ready = time.perf_counter()
            wait = 0.0
        if i >= warmup:
            wait += time.perf_counter() - t_ready
        x, y = batch["x"].to(device), batch["y"].to(device)
        optimizer.zero_grad()
        loss = loss_fn(model(x)[:, 0], y)
        loss.backward()
        optimizer.step()
        loss.item()
        if i >= warmup:
            images += len(x)
            done += 1
        t_ready = time.perf_counter()
        if done == steps:
            break
    seconds = time.perf_counter() - t0
    return images / seconds, wait / seconds


def _cycle(loader):
    while True:
        yield from loader


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="resnet18")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=20, help="timed steps per mode")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--images", type=int, default=2048, help="images in the synthetic HDF5 file")
    p.add_argument("--amp", default="auto", choices=["auto", "bf16", "fp16", "off"])
    p.add_argument("--data", type=Path, default=Path(tempfile.gettempdir()) / "medflow-bench-train")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = False  # (a) turns it on for itself; (b) must not inherit it
    args.data.mkdir(parents=True, exist_ok=True)
    path = args.data / f"images-{args.images}x{args.size}.h5"
    ids = write_images(path, args.images, args.size)
    augment = build_augment({"hflip": 0.5, "rotate": 10}, 2)
    dataset = H5Samples(path, ids, (np.arange(len(ids)) % 2).tolist(), intensity=Intensity("zscore"), augment=augment)
    pin = device.type == "cuda"
    loader = make_loader(dataset, batch_size=args.batch, shuffle=True, seed=0, workers=args.workers, drop_last=True,
                         pin_memory=pin)
    name = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"{args.model} {args.size}², batch {args.batch}, {args.steps} timed steps after {args.warmup}; "
          f"{args.workers} loader workers; device: {name}")

    torch.manual_seed(0)
    rate_a, wait_a = run_engine(build_model(args.model), loader, device, args.steps, args.warmup, args.amp)
    print(f"(a) medflow engine:        {rate_a:8.1f} images/s, data wait {100 * wait_a:4.1f} % of step time")
    torch.manual_seed(0)
    rate_b, wait_b = run_plain(build_model(args.model), loader, device, args.steps, args.warmup)
    print(f"(b) plain fp32 loop:       {rate_b:8.1f} images/s, data wait {100 * wait_b:4.1f} %")
    memory = make_loader(_InMemory(args.batch * (args.steps + args.warmup), args.size), batch_size=args.batch,
                         shuffle=False, seed=0, workers=0, pin_memory=pin)
    torch.manual_seed(0)
    rate_c, wait_c = run_engine(build_model(args.model), memory, device, args.steps, args.warmup, args.amp)
    print(f"(c) engine, no data loading: {rate_c:6.1f} images/s, data wait {100 * wait_c:4.1f} %")
    print(f"engine / plain: {rate_a / rate_b:.2f}×; engine with loader / without: {rate_a / rate_c:.2f}")


if __name__ == "__main__":
    main()
