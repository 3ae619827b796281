#!/usr/bin/env bash
# Every GPU check of the project in one call to a GPU machine (see docs/gpu_suite.md):
#   1. the CUDA-only tests (skipped on CPU-only machines and in CI),
#   2. benchmarks/assignment_loss.py on CUDA (issue 3: assignment + loss, batch 32, against the per-image reference;
#      with the profile of the Mutual-Guidance criterion),
#   3. main.py end to end with the compiled model and criterion (--compile --compile_loss) on the shapes set,
#      stopped after MAIN_TIMEOUT_S seconds (default 240) with every thread's Python stack printed if it is still
#      running: `timeout --foreground` signals main.py alone, not Inductor's compile workers (pytorch#189290),
#   4. benchmarks/gpu_suite.py (issue 8: training and inference speed), with any extra arguments given.
# Usage: bash benchmarks/gpu_check.sh OUT_DIR [gpu_suite.py arguments]; each step's output lands in OUT_DIR.
# -h or --help prints this.
# ASSIGNMENT_ARGS replaces the assignment benchmark's arguments; MAIN_TIMEOUT_S=0 skips step 3. PYTHON names the
# interpreter; by default the repository's .venv/bin/python where it exists (README's setup), else python3.
set -uo pipefail
usage="usage: bash benchmarks/gpu_check.sh OUT_DIR [gpu_suite.py arguments] (docs/gpu_suite.md; -h for more)"
case "${1:-}" in
    -h | --help)  # the comment above, less its '# '
        sed -n '2,/^set /p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'
        exit 0 ;;
    "" | -*)  # no OUT_DIR, or a flag where it goes: say so rather than make a folder named after the flag
        echo "$usage" >&2
        exit 2 ;;
esac
out=$1
shift
mkdir -p "$out" && out=$(cd "$out" && pwd) || exit 1
export PYTHONUNBUFFERED=1
cd "$(dirname "$0")/.." || exit 1
if [ -n "${PYTHON:-}" ]; then
    python=$PYTHON
elif [ -x .venv/bin/python ]; then
    python=.venv/bin/python
else
    python=python3
fi
echo "python: $python"
# gpu_suite.py's arguments are checked before the steps before it: a typo is refused in seconds of device time
"$python" benchmarks/gpu_suite.py --check_only --out "$out/gpu_suite.json" "$@" || exit 2

nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv | tee "$out/nvidia_smi.txt"
"$python" -m pytest -q -p no:cacheprovider -rs -k "cuda or host_syncs" \
    tests/test_assigners.py tests/test_losses.py tests/test_postprocess.py tests/test_cuda_graph.py \
    tests/test_inference.py tests/test_demo.py tests/test_gpu_suite.py tests/test_benchmark_timing.py 2>&1 \
    | tee "$out/cuda_tests.txt"
# shellcheck disable=SC2086  # ASSIGNMENT_ARGS is a list of arguments
"$python" benchmarks/assignment_loss.py --devices cuda ${ASSIGNMENT_ARGS:---profile --compile} 2>&1 \
    | tee "$out/assignment_loss.txt"
main_timeout=${MAIN_TIMEOUT_S:-240}
if [ "$main_timeout" -gt 0 ]; then
    run_root=$(mktemp -d)
    PYTHONFAULTHANDLER=1 timeout --foreground -s ABRT "$main_timeout" "$python" main.py --dataset shapes \
        --mutual_guide --amp --compile --compile_loss --max_iter 300 --log_interval 10 \
        --save_folder "$run_root/weights" --run_dir "$run_root/runs" --eval_dir "$run_root/eval" 2>&1 \
        | tee "$out/main_compile_loss.txt"
    echo "main.py exit status: ${PIPESTATUS[0]} (124 or 134: stopped at ${main_timeout} s)" \
        | tee -a "$out/main_compile_loss.txt"
fi
"$python" benchmarks/gpu_suite.py --out "$out/gpu_suite.json" "$@" 2>&1 | tee "$out/gpu_suite.txt"
