#!/usr/bin/env bash
# The speed benchmark on one CUDA GPU, in one call, within 5 minutes.
#
#   bash benchmarks/gpu.sh                 # results in benchmarks/results-gpu.json, log beside it
#   PYTHON=/path/to/python RESULTS_DIR=gpu-out bash benchmarks/gpu.sh
#
# Needs a Python whose torch sees a GPU (PYTHON, default python3) and crossctr's dependencies
# (pydantic, pyarrow, pyyaml, scikit-learn, matplotlib, tqdm, click, safetensors); crossctr itself
# is taken from this checkout through PYTHONPATH, so the environment's CUDA torch stays as it is.
# The peers run when importable there (pip install deepctr-torch==0.3.0 torch-rechub==0.9.0
# fuxictr==2.3.10), and are left out, with the reason printed, when not.
#
# Two runs, each under its own time limit so the whole script ends within 5 minutes:
#   1. every model, fp32, 1.6M train / 400k test rows, batch 8192, data kept on the GPU
#      for crossctr, 3 interleaved epochs (~200 s with the peers, whose loaders bind them);
#   2. crossctr only, bf16 autocast: rows/s and test AUC against run 1's fp32 AUC.
# The output prints matmul FLOPs per training row, so rows/s can be set against the card's
# ceilings (H200: ~790 TFLOP/s bf16 dense measured, ~4.3 TB/s memory copy).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
RESULTS_DIR=${RESULTS_DIR:-benchmarks}
ROWS=${ROWS:-1600000}
THREADS=${THREADS:-$(nproc)}
mkdir -p "$RESULTS_DIR"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1

"$PYTHON" - <<'EOF'
import sys
import torch
if not torch.cuda.is_available():
    sys.exit("gpu.sh: torch sees no CUDA device (torch %s)" % torch.__version__)
print("gpu:", torch.cuda.get_device_name(0), "| torch", torch.__version__)
import crossctr  # noqa: F401  (fails here, not mid-run, when a dependency is missing)
EOF
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,driver_version --format=csv,noheader || true

timeout 210 "$PYTHON" benchmarks/speed.py --device cuda --rows "$ROWS" --batch-size 8192 --threads "$THREADS" \
    --reps 3 --scaling-scales "" --out "$RESULTS_DIR/results-gpu.json" "$@" 2>&1 | tee "$RESULTS_DIR/gpu-fp32.log"

timeout 75 "$PYTHON" benchmarks/speed.py --device cuda --rows "$ROWS" --batch-size 8192 --threads "$THREADS" \
    --reps 3 --scaling-scales "" --models cnan,dcn --bf16 --out "$RESULTS_DIR/results-gpu-bf16.json" "$@" 2>&1 | tee "$RESULTS_DIR/gpu-bf16.log"
