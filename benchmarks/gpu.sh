#!/usr/bin/env bash
# The speed benchmark on one CUDA GPU, within 5 minutes: the same rows as `make bench` (crossctr
# through Trainer.fit and inference.score with its defaults, each faster option a row, the peers
# through their own fit/predict), then the device-sensitive tests on CUDA.
#
#   bash benchmarks/gpu.sh                 # benchmarks/results-gpu.json, logs beside it
#   PYTHON=.venv-bench/bin/python RESULTS_DIR=gpu-out bash benchmarks/gpu.sh
#
# Needs a Python whose torch sees a GPU (PYTHON, default python3) with crossctr's dependencies;
# crossctr comes from this checkout through PYTHONPATH. The peers run where importable
# (pip install deepctr-torch==0.3.0 torch-rechub==0.9.0 fuxictr==2.3.10), else are left out
# with the reason in the JSON.
#   1. benchmark, 240 s at most: 800k train / 200k test rows, batch 4096, 2 interleaved epochs,
#      every default row except compile; no scaling figure, no contention part (CPU matters);
#   2. tests, 50 s at most: the trainer (precision, loss trajectory, resume) with CUDA visible.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
RESULTS_DIR=${RESULTS_DIR:-benchmarks}
ROWS=${ROWS:-800000}
mkdir -p "$RESULTS_DIR"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1

"$PYTHON" - <<'PY'
import sys
import torch
if not torch.cuda.is_available():
    sys.exit("gpu.sh: torch sees no CUDA device (torch %s)" % torch.__version__)
print("gpu:", torch.cuda.get_device_name(0), "| torch", torch.__version__)
import crossctr  # noqa: F401  (fails here, not mid-run, when a dependency is missing)
PY
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,driver_version --format=csv,noheader || true

timeout 240 "$PYTHON" benchmarks/speed.py --device cuda --rows "$ROWS" --reps 2 --threads "$(nproc)" \
    --parts main --out "$RESULTS_DIR/results-gpu.json" --figure "" "$@" 2>&1 | tee "$RESULTS_DIR/gpu-bench.log" || echo "gpu.sh: benchmark stopped (exit $?)"

timeout 50 "$PYTHON" -m pytest -q -x -p no:cacheprovider tests/benchmarks/test_speed_user_path.py \
    tests/training/test_precision.py 2>&1 | tee "$RESULTS_DIR/gpu-tests.log" || echo "gpu.sh: tests stopped (exit $?)"
