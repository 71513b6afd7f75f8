#!/usr/bin/env bash
# GPU check on one CUDA device: the tests marked `gpu` (prune, stats, attached masks, training
# and a whole trial on CUDA, each checking that CUDA memory is returned), then the pruners
# benchmark. Fails when torch sees no GPU or when any gpu test is skipped, so it can never
# pass without having run on a GPU.
#
# The gpu tests live in tests/test_gpu.py and tests/pruners/, which need torch (and optuna for
# the whole-trial test) but not Ray, so the check also runs on a GPU machine without Ray.
#
# Usage: benchmarks/gpu_check.sh [extra arguments for bench_pruners.py]
#   e.g. benchmarks/gpu_check.sh --repeats 5
# Environment: CUDA_VISIBLE_DEVICES picks the GPU (default 0); PYTHON the interpreter.
set -euo pipefail

cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export CUDA_VISIBLE_DEVICES="${CUDA_VISIBLE_DEVICES:-0}"
export PATHSWEEP_REQUIRE_GPU=1 # tests/test_gpu.py fails instead of skipping
PYTHON="${PYTHON:-python}"

"$PYTHON" - <<'EOF'
import sys

import torch

if not torch.cuda.is_available():
    sys.exit("gpu_check: torch.cuda.is_available() is False; this check needs one CUDA device")
props = torch.cuda.get_device_properties(0)
print(
    f"gpu_check: {props.name}, {props.total_memory / 2**30:.0f} GiB, torch {torch.__version__}, "
    f"CUDA {torch.version.cuda}"
)
EOF

echo "== tests marked gpu"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
set +e
"$PYTHON" -m pytest -q -m gpu -rs -p no:cacheprovider tests/test_gpu.py tests/pruners 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
if [ "$status" -ne 0 ]; then
    echo "gpu_check: FAILED (pytest exit status $status)" >&2
    exit "$status"
fi
if grep -Eq '[0-9]+ skipped' "$log"; then
    echo "gpu_check: FAILED: some gpu tests were skipped (see the SKIPPED lines above)" >&2
    exit 1
fi

echo "== pruners benchmark"
"$PYTHON" benchmarks/bench_pruners.py --device cuda "$@"
echo "gpu_check: OK"
