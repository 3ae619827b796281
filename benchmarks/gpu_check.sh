#!/usr/bin/env bash
# Every GPU check of the project in one call to a GPU machine (see docs/gpu_suite.md):
#   1. the CUDA-only tests (skipped on CPU-only machines and in CI),
#   2. benchmarks/assignment_loss.py on CUDA (issue 3: assignment + loss, batch 32, against the per-image reference;
#      with the profile of the Mutual-Guidance criterion),
#   3. benchmarks/gpu_suite.py (issue 8: training and inference speed), with any extra arguments given.
# Usage: bash benchmarks/gpu_check.sh OUT_DIR [gpu_suite.py arguments]; each step's output lands in OUT_DIR.
set -uo pipefail
out=${1:?usage: bash benchmarks/gpu_check.sh OUT_DIR [gpu_suite.py arguments]}
shift
mkdir -p "$out" && out=$(cd "$out" && pwd) || exit 1
export PYTHONUNBUFFERED=1
python=${PYTHON:-python3}
cd "$(dirname "$0")/.." || exit 1

nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv | tee "$out/nvidia_smi.txt"
"$python" -m pytest -q -p no:cacheprovider -rs -k "cuda or host_syncs" \
    tests/test_assigners.py tests/test_losses.py tests/test_postprocess.py tests/test_cuda_graph.py tests/test_inference.py tests/test_demo.py tests/test_gpu_suite.py 2>&1 \
    | tee "$out/cuda_tests.txt"
"$python" benchmarks/assignment_loss.py --devices cuda --profile --compile 2>&1 | tee "$out/assignment_loss.txt"
"$python" benchmarks/gpu_suite.py --out "$out/gpu_suite.json" "$@" 2>&1 | tee "$out/gpu_suite.txt"
