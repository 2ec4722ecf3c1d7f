"""Benchmark the evaluation statistics (prints measured figures; never run as a test).

    .venv/bin/python bench/evaluate.py                         # 10 heads × 100,000 rows × 1000 resamples
    .venv/bin/python bench/evaluate.py --rows 20000 --heads 3 --extra

A synthetic test split: about rows/2 patients with 1–3 rows each, ~25 % positives, a patient-level
risk shared by the patient's rows, and one score vector per head (same labels, different noise).
For every head: the patient-cluster bootstrap AUROC interval (``bootstrap_auc_ci``) and the fast
DeLong interval (``delong_ci``), each timed on its own. ``--extra`` also times AUROC+AUPRC on shared
resamples (``bootstrap_cis``) and one paired ΔAUROC bootstrap. Target on a 2-core machine:
the AUROC bootstrap of all heads together under 10 s.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from medflow.evaluate import bootstrap_auc_ci, bootstrap_cis, delong_ci, paired_bootstrap_delta_auc


def make_data(rows: int, heads: int, seed: int) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """Labels, patient ids and ``heads`` score vectors for ``rows`` rows."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 4, size=rows)  # more than enough patients; trimmed below
    patient = np.repeat(np.arange(sizes.size), sizes)[:rows]
    risk = rng.normal(size=patient[-1] + 1)
    prob = 1.0 / (1.0 + np.exp(-(1.5 * risk[patient] - 1.5)))
    y = (rng.random(rows) < prob).astype(np.int8)
    groups = np.array([f"P{i:06d}" for i in patient])
    scores = []
    for h in range(heads):
        logit = 1.5 * risk[patient] + rng.normal(0, 0.5 + 0.1 * h, rows)
        scores.append(1.0 / (1.0 + np.exp(-logit)))
    return y, groups, scores


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--heads", type=int, default=10)
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--extra", action="store_true", help="also time AUROC+AUPRC and a paired ΔAUROC")
    args = ap.parse_args()

    y, groups, scores = make_data(args.rows, args.heads, args.seed)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(
        f"rows {y.size:,}  patients {len(np.unique(groups)):,}  prevalence {y.mean():.3f}  "
        f"heads {args.heads}  resamples {args.n_boot}  cores {cores}"
    )
    boot_s, delong_s = [], []
    for h, p in enumerate(scores):
        t0 = time.perf_counter()
        b = bootstrap_auc_ci(y, p, groups, n_boot=args.n_boot, seed=args.seed)
        t1 = time.perf_counter()
        d = delong_ci(y, p)
        t2 = time.perf_counter()
        boot_s.append(t1 - t0)
        delong_s.append(t2 - t1)
        print(
            f"head {h}: AUROC {b['value']:.4f}  bootstrap CI [{b['ci'][0]:.4f}, {b['ci'][1]:.4f}] "
            f"{t1 - t0:6.3f} s   DeLong CI [{d['ci'][0]:.4f}, {d['ci'][1]:.4f}] {t2 - t1:6.3f} s"
        )
    print(
        f"patient bootstrap AUROC: {np.mean(boot_s):.3f} s per head (min {min(boot_s):.3f}, "
        f"max {max(boot_s):.3f}), total {sum(boot_s):.2f} s for {args.heads} heads"
    )
    print(f"DeLong: {np.mean(delong_s) * 1000:.1f} ms per head, total {sum(delong_s):.2f} s")
    if args.extra:
        t0 = time.perf_counter()
        bootstrap_cis(y, scores[0], groups, metrics=("auroc", "auprc"), n_boot=args.n_boot, seed=args.seed)
        t1 = time.perf_counter()
        r = paired_bootstrap_delta_auc(y, scores[0], scores[-1], groups, n_boot=args.n_boot, seed=args.seed)
        t2 = time.perf_counter()
        print(
            f"AUROC+AUPRC on shared resamples: {t1 - t0:.3f} s;  paired ΔAUROC {r['value']:.4f} "
            f"[{r['ci'][0]:.4f}, {r['ci'][1]:.4f}] p={r['p_value']:.4f}: {t2 - t1:.3f} s"
        )


if __name__ == "__main__":
    main()
