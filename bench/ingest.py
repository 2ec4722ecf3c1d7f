"""Benchmark DICOM slice-stack ingest against the bare pydicom decode rate (prints measured figures).

    .venv/bin/python bench/ingest.py                      # 120 series × 32 slices of 512² CT, uncompressed
    .venv/bin/python bench/ingest.py --transfer-syntax rle --compression lzf --cores 2

Prints (1) the decode limit: slices/s of a bare ``pydicom.dcmread(f).pixel_array`` loop over the same
files on the same number of cores (N processes, each looping over its share); (2) the ingest rate of
``ingest_modality`` (kind ``slices``) at the output size and compression; (3) their ratio; (4) the split
of ingest time into decode / transform / compress / write; (5) ingest with 1 and with 2 cores and
the speed-up; (6) re-ingest after appending ``--new-share`` of the series, reusing the previous
ingest, against a full conversion. The synthetic files are cached under --data (default: a folder in the temp dir keyed
by the parameters), so a rerun skips writing them.

    .venv/bin/python bench/ingest.py --nifti              # 60 CT volumes of 64×256² as .nii.gz, kind volume

With ``--nifti`` it measures volumes instead: (1) volumes/s of a bare SimpleITK loop
(``GetArrayFromImage(ReadImage(f))``, one SimpleITK thread per process as ingest reads) over the
same files on the same cores, (2) ``ingest_modality`` (kind ``volume``, ``--volume-size``) and the
size of its file, (3) their ratio, (4) the split of ingest time.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing as mp
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from medflow.cohort.demo.pe import study_volume
from medflow.ingest import ingest_modality
from medflow.io.dicom_write import write_series

SYNTAXES = {"explicit": None, "rle": "1.2.840.10008.1.2.5"}


def make_data(folder: Path, series: int, slices: int, size: int, syntax: str) -> list[Path]:
    """``series`` CT series of ``slices`` slices (chest phantom + 15 HU noise), written once."""
    done = folder / ".complete"
    dirs = [folder / f"series{i:03d}" for i in range(series)]
    if done.exists():
        return dirs
    rng = np.random.default_rng(0)
    bases = [study_volume(rng, size, slices, float(s), ["left"], range(slices // 3, slices // 2), bool(s))
             for s in (0, 1)]
    t0 = time.perf_counter()
    for i, d in enumerate(dirs):
        vol = bases[i % 2] + rng.normal(0, 15, bases[0].shape)
        write_series(d, vol, seed_key=("bench", i), transfer_syntax=SYNTAXES[syntax])
        print(f"\rwriting synthetic series {i + 1}/{series}", end="", file=sys.stderr)
    print(f" ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    done.touch()
    return dirs


def _decode_share(files: list[str]) -> int:
    import pydicom

    for f in files:
        pydicom.dcmread(f).pixel_array  # noqa: B018 (the decode is the point)
    return len(files)


def decode_limit(files: list[Path], cores: int) -> float:
    """Slices/s of the bare pydicom loop: ``cores`` processes, each over its contiguous share."""
    shares = [list(map(str, files[i::cores])) for i in range(cores)]
    with mp.get_context("fork").Pool(cores) as pool:
        pool.map(abs, range(cores))  # workers up before the clock starts
        t0 = time.perf_counter()
        n = sum(pool.map(_decode_share, shares, chunksize=1))
        return n / (time.perf_counter() - t0)


def run_ingest(dirs: list[Path], root: Path, out: Path, size: int, cores: int, compression: str, level: int,
               reuse: bool = False):
    manifest = pd.DataFrame(
        {"sample_id": [d.name for d in dirs], "patient_id": [d.name for d in dirs], "center": "A",
         "ct": [d.name for d in dirs]}
    )
    spec = {"kind": "slices", "size": [size, size]}
    target = out / f"ct-{compression}.h5"
    if target.exists():  # as under Snakemake, which removes outputs before a job (no rename over a file)
        target.unlink()
    t0 = time.perf_counter()
    summary = ingest_modality(
        manifest, root, "ct", spec, out / f"ct-{compression}.h5", out / "ct.problems.csv",
        threads=cores, compression=compression, compression_level=level, progress=False, reuse_previous=reuse,
    )
    wall = time.perf_counter() - t0
    assert summary.n_problems == 0, f"{summary.n_problems} problems: see {out / 'ct.problems.csv'}"
    return summary, summary.n_slices / wall, (out / f"ct-{compression}.h5").stat().st_size


def make_nifti(folder: Path, volumes: int, depth: int, size: int) -> list[Path]:
    """``volumes`` int16 CT volumes (chest phantom + noise) as .nii.gz, written once through SimpleITK."""
    import SimpleITK as sitk

    files = [folder / f"vol{i:03d}.nii.gz" for i in range(volumes)]
    if (folder / ".complete").exists():
        return files
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    base = study_volume(rng, size, depth, 0.0, ["left"], range(depth // 3, depth // 2), True)
    for f in files:
        img = sitk.GetImageFromArray(np.clip(base + rng.normal(0, 15, base.shape), -1024, 3071).astype(np.int16))
        img.SetSpacing((0.7, 0.7, 2.5))
        sitk.WriteImage(img, str(f))
    (folder / ".complete").touch()
    return files


def _sitk_share(files: list[str]) -> int:
    import SimpleITK as sitk

    # one thread per process, as ingest reads (N processes on N cores, neither oversubscribed)
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    for f in files:
        sitk.GetArrayFromImage(sitk.ReadImage(f))
    return len(files)


def nifti_case(args) -> None:
    data = args.data or Path(tempfile.gettempdir()) / f"medflow-bench-nifti-{args.volumes}x{args.depth}x{args.nifti_size}"
    files = make_nifti(data, args.volumes, args.depth, args.nifti_size)
    shares = [list(map(str, files[i::args.cores])) for i in range(args.cores)]
    _sitk_share(list(map(str, files)))  # warm the page cache
    size = [args.depth // 2, args.volume_size, args.volume_size]
    names = [f.name for f in files]
    manifest = pd.DataFrame({"sample_id": names, "patient_id": names, "center": "A", "ct": names})
    out = Path(tempfile.mkdtemp(prefix="medflow-bench-out-"))
    pairs = []
    with mp.get_context("fork").Pool(args.cores) as pool:
        pool.map(abs, range(args.cores))
        for _ in range(args.repeat):  # side by side, so drift in the machine's speed hits both alike
            t0 = time.perf_counter()
            bare = sum(pool.map(_sitk_share, shares, chunksize=1)) / (time.perf_counter() - t0)
            (out / "ct.h5").unlink(missing_ok=True)
            t0 = time.perf_counter()
            summary = ingest_modality(manifest, data, "ct", {"kind": "volume", "size": size}, out / "ct.h5",
                                      out / "ct.problems.csv", threads=args.cores, compression=args.compression,
                                      compression_level=args.level, progress=False)
            pairs.append((bare, summary.n_ok / (time.perf_counter() - t0)))
            assert summary.n_problems == 0, f"see {out / 'ct.problems.csv'}"
            nbytes = (out / "ct.h5").stat().st_size
    ratios = sorted(i / b for b, i in pairs)
    label = f"{args.compression}-{args.level}" if args.compression == "gzip" else args.compression
    print(f"data: {len(files)} .nii.gz volumes of {args.depth}×{args.nifti_size}² int16 in {data}; cores {args.cores}")
    print(f"(1) bare SimpleITK loop (GetArrayFromImage(ReadImage(f)), {args.cores} processes): "
          f"{max(p[0] for p in pairs):,.2f} volumes/s (best of {args.repeat})")
    raw = len(files) * int(np.prod(size)) * 4
    print(f"(2) ingest (kind volume → {'×'.join(map(str, size))}, {label}): {max(p[1] for p in pairs):,.2f} volumes/s; "
          f"file {nbytes / 1e6:.1f} MB ({raw / nbytes:.2f}× smaller than raw float32)")
    print(f"(3) ratio ingest / bare loop: {ratios[len(ratios) // 2]:.2f} (median of {args.repeat} side-by-side pairs; "
          f"range {ratios[0]:.2f}–{ratios[-1]:.2f})")
    s = summary.seconds
    print(f"(4) split (worker CPU s summed, parent write s): decode {s['decode']:.2f}, transform {s['transform']:.2f}, "
          f"compress {s['compress']:.2f}, write {s['write']:.2f}; wall {s['wall']:.2f}")
    shutil.rmtree(out)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, help="folder for the synthetic series (reused when complete)")
    p.add_argument("--series", type=int, default=120)
    p.add_argument("--slices", type=int, default=32)
    p.add_argument("--input-size", type=int, default=512, help="rows = columns of the DICOM slices")
    p.add_argument("--size", type=int, default=256, help="output rows = columns")
    p.add_argument("--transfer-syntax", choices=sorted(SYNTAXES), default="explicit")
    p.add_argument("--compression", choices=["gzip", "lzf", "none", "all"], default="gzip")
    p.add_argument("--level", type=int, default=1, help="gzip level")
    p.add_argument("--cores", type=int, default=os.cpu_count() or 1)
    p.add_argument("--repeat", type=int, default=5, help="best of N runs for every figure")
    p.add_argument("--new-share", type=float, default=0.1, help="share of series appended for figure (6)")
    p.add_argument("--nifti", action="store_true", help="the NIfTI volume case instead (see above)")
    p.add_argument("--volumes", type=int, default=60, help="--nifti: number of volumes")
    p.add_argument("--depth", type=int, default=64, help="--nifti: slices per volume")
    p.add_argument("--nifti-size", type=int, default=256, help="--nifti: rows = columns of the volumes")
    p.add_argument("--volume-size", type=int, default=128, help="--nifti: output rows = columns (depth halved)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.nifti:
        nifti_case(args)
        return

    data = args.data or Path(tempfile.gettempdir()) / (
        f"medflow-bench-ingest-{args.series}x{args.slices}x{args.input_size}-{args.transfer_syntax}"
    )
    dirs = make_data(data, args.series, args.slices, args.input_size, args.transfer_syntax)
    files = sorted(f for d in dirs for f in d.iterdir())
    out = Path(tempfile.mkdtemp(prefix="medflow-bench-out-"))
    print(f"data: {len(dirs)} series, {len(files)} slices of {args.input_size}², {args.transfer_syntax}, in {data}")
    print(f"ingest: kind slices → {args.size}², cores {args.cores}")
    _decode_share(list(map(str, files)))  # warm the page cache

    limit = max(decode_limit(files, args.cores) for _ in range(args.repeat))
    print(f"(1) decode limit (dcmread(f).pixel_array, {args.cores} processes): {limit:,.0f} slices/s")
    if args.cores != 1:
        one_limit = max(decode_limit(files, 1) for _ in range(args.repeat))
        print(f"    (for scale: the same loop on 1 process: {one_limit:,.0f} slices/s, "
              f"{limit / one_limit:.2f}× from {args.cores} processes)")

    compressions = ["gzip", "lzf", "none"] if args.compression == "all" else [args.compression]
    for comp in compressions:
        runs = [run_ingest(dirs, data, out, args.size, args.cores, comp, args.level) for _ in range(args.repeat)]
        summary, rate, nbytes = max(runs, key=lambda r: r[1])
        raw = len(files) * args.size * args.size * 2
        label = f"{comp}-{args.level}" if comp == "gzip" else comp
        print(f"(2) ingest [{label}]: {rate:,.0f} slices/s; file {nbytes / 1e6:.1f} MB ({raw / nbytes:.2f}× smaller than raw int16)")
        print(f"(3) ratio ingest / decode limit [{label}]: {rate / limit:.2f}")
        s = summary.seconds
        total = s["decode"] + s["transform"] + s["compress"] + s["write"]
        print(
            f"(4) split [{label}] (worker CPU s summed, parent write s): decode {s['decode']:.2f} s "
            f"({100 * s['decode'] / total:.0f} %), transform {s['transform']:.2f} s ({100 * s['transform'] / total:.0f} %), "
            f"compress {s['compress']:.2f} s ({100 * s['compress'] / total:.0f} %), write {s['write']:.2f} s "
            f"({100 * s['write'] / total:.0f} %); wall {s['wall']:.2f} s"
        )
    comp = compressions[0]
    # 1 and 2 cores alternate, so drift in the machine's speed hits both alike; the figure is the
    # median of the paired ratios.
    pairs = [
        (run_ingest(dirs, data, out, args.size, 1, comp, args.level)[1],
         run_ingest(dirs, data, out, args.size, 2, comp, args.level)[1])
        for _ in range(args.repeat)
    ]
    ratios = sorted(two / one for one, two in pairs)
    one, two = max(p[0] for p in pairs), max(p[1] for p in pairs)
    print(f"(5) [{comp}] 1 core: {one:,.0f} slices/s, 2 cores: {two:,.0f} slices/s (best of {args.repeat}); "
          f"speed-up {ratios[len(ratios) // 2]:.2f}× (median of {args.repeat} side-by-side pairs; "
          f"range {ratios[0]:.2f}–{ratios[-1]:.2f})")
    # appended patients: a full conversion of all series vs one that reuses the series the previous
    # ingest (of all but the newest share) already holds, side by side
    kept = dirs[: round(len(dirs) * (1 - args.new_share))]
    pairs = []
    for _ in range(args.repeat):
        full = run_ingest(dirs, data, out, args.size, args.cores, comp, args.level)[0].seconds_wall
        run_ingest(kept, data, out, args.size, args.cores, comp, args.level, reuse=True)
        summary = run_ingest(dirs, data, out, args.size, args.cores, comp, args.level, reuse=True)[0]
        assert summary.n_reused == len(kept), f"{summary.n_reused} reused, expected {len(kept)}"
        pairs.append((full, summary.seconds_wall))
    ratios = sorted(f / i for f, i in pairs)
    print(f"(6) [{comp}] {len(dirs) - len(kept)} series appended to {len(kept)}: full conversion "
          f"{min(p[0] for p in pairs):.2f} s, reusing the previous ingest {min(p[1] for p in pairs):.2f} s "
          f"(best of {args.repeat}); {ratios[len(ratios) // 2]:.1f}× faster (median of {args.repeat} pairs; "
          f"range {ratios[0]:.1f}–{ratios[-1]:.1f})")
    shutil.rmtree(out)


if __name__ == "__main__":
    main()
