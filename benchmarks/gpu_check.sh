#!/usr/bin/env bash
# `make gpu-check`: on a machine with an NVIDIA GPU, torch and Triton but no network.
#   1. install pagedlab in place, offline (no dependency resolution, no build isolation);
#   2. run the kernel, cache and reference tests on the GPU (compiled Triton, not the interpreter);
#   3. run the kernel benchmark, then the engine benchmark; its JSON and PNG go to the folder given as $1, else $OUT, else
#      benchmarks/results.
# Everything together stays under 5 minutes on an H100.
#
#   bash benchmarks/gpu_check.sh [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
OUT_DIR="${1:-${OUT:-benchmarks/results}}"
PYTHON="${PYTHON:-python3}"
mkdir -p "$OUT_DIR"

nvidia-smi -L || echo "gpu-check: nvidia-smi not found; continuing (the tests say if CUDA is missing)"
"$PYTHON" -m pip install --quiet --no-deps --no-build-isolation -e .
"$PYTHON" -m pagedlab doctor | tee "$OUT_DIR/doctor.txt"

# The kernel tests must run compiled here: fail fast if this machine would interpret them.
"$PYTHON" -c "import sys, pagedlab.backend as b; s = b.triton_status(); print('Triton:', s); \
sys.exit(s['mode'] != 'compiled')"

# A failing test does not stop the benchmark; the script still exits non-zero at the end.
status=0
start=$(date +%s)
timeout 110 "$PYTHON" -m pytest -q -p no:cacheprovider \
    tests/test_kernels.py tests/test_cache.py tests/test_attention_reference.py tests/test_backend.py \
    tests/test_model.py tests/test_engine.py \
    2>&1 | tee "$OUT_DIR/gpu_tests.txt" || status=1
echo "gpu-check: tests took $(( $(date +%s) - start )) s"

start=$(date +%s)
timeout 110 "$PYTHON" -m pagedlab bench --out "$OUT_DIR" 2>&1 | tee "$OUT_DIR/bench.txt" || status=1
echo "gpu-check: benchmark took $(( $(date +%s) - start )) s"

# The serving engine against transformers' generate, real GPT-2 config, random weights.
start=$(date +%s)
timeout 60 "$PYTHON" benchmarks/bench_engine.py --gpu --json "$OUT_DIR/bench_engine_gpu.json" \
    2>&1 | tee "$OUT_DIR/bench_engine.txt" || status=1
echo "gpu-check: engine benchmark took $(( $(date +%s) - start )) s"
exit $status
