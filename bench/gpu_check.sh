#!/usr/bin/env bash
# One GPU, at most ~8 minutes: is the box used fully?  (prints measured figures; never run as a test)
#
#   bash bench/gpu_check.sh                 # from the repository root, with .venv installed
#   PYTHON=/path/to/python bash bench/gpu_check.sh
#
# 1. ResNet-101 (+SE, the clnm encoder) at 224², batch 64: medflow's engine (AMP + channels-last +
#    cudnn autotuning, real HDF5 loader) against a plain fp32 loop on the same loader — target ≥ 2.5×;
#    and the share of step time spent waiting for data with the real HDF5 loader — target < 5 %.
# 2. One clnm stage-1 model (SimCLR pre-training + classifier) trained by Snakemake under
#    `--resources gpu=1`, in a scratch copy of the workflow: its rule log must say it ran on cuda.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
PYTHON="$(cd "$(dirname "$PYTHON")" && pwd)/$(basename "$PYTHON")"   # absolute, venv kept (no symlink resolution)
WORKERS=${WORKERS:-7}   # threads_per_gpu (8) - 1: what a training job's DataLoader gets on CUDA
start=$SECONDS

"$PYTHON" - <<'EOF'
import torch
assert torch.cuda.is_available(), "no CUDA device: this check needs one GPU"
print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}, {torch.cuda.device_count()} device(s)")
EOF

echo "== 1. ResNet-101 224², engine (AMP, channels-last) vs plain fp32; data wait with the HDF5 loader"
timeout 300 "$PYTHON" bench/train.py --model se_resnet101 --size 224 --batch 64 --steps 30 --warmup 5 \
    --workers "$WORKERS" --images 4096

echo "== 2. one clnm stage-1 model under --resources gpu=1"
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
cp -r Snakefile workflow config profiles envs "$scratch"/
target=results/clnm/stage1/tumour_us-sclresnet101/predictions.csv
( cd "$scratch" && timeout 300 "$PYTHON" -m snakemake --cores "$(nproc)" --resources gpu=1 \
    --config gpu_requests=always -- "$target" > snakemake.log 2>&1 ) || { tail -40 "$scratch/snakemake.log"; exit 1; }
grep -h "device\|images/s" "$scratch"/logs/clnm/pretrain_tumour_us-sclresnet101.log \
    "$scratch"/logs/clnm/train_tumour_us-sclresnet101.log | grep -v "^epoch" | tail -8
grep -q "device cuda" "$scratch"/logs/clnm/train_tumour_us-sclresnet101.log \
    && echo "clnm stage 1 trained on the GPU" || { echo "clnm stage 1 did not run on cuda"; exit 1; }
echo "gpu_check: $((SECONDS - start)) s in all"
