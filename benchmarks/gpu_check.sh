#!/usr/bin/env bash
# `make gpu-check`: on a machine with an NVIDIA GPU, torch and Triton but no network.
#   1. check that everything it needs is there, and say what is missing;
#   2. install pagedlab in place, offline (no dependency resolution, no build isolation);
#   3. the kernel benchmark, the target shape (batch 64 x context 4096, head dim 128, 32/8 heads,
#      fp16, block 16) first, shapes sized to the GPU's free memory;
#   4. the kernel, cache and reference tests on the GPU (compiled Triton, not the interpreter);
#   5. the engine benchmark against transformers.
# Results (JSON, PNG, logs) go to the folder given as $1, else $OUT, else benchmarks/results.
# Each step has a time budget from the kernel configurations it compiles (counted by the dry run,
# benchmarks/results/gpu_check_compiles.json) plus its run time; a failing step does not stop the
# next ones, and the script exits non-zero at the end.
#
# DRY_RUN=1 (`make gpu-check DRY_RUN=1`, and tests/test_gpu_check.py in `make test`): any machine.
# Every line below runs, with CUDA faked and the kernel launches stubbed
# (python -m pagedlab.tools.dry_run): it proves the script, not the GPU.
#
#   bash benchmarks/gpu_check.sh [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
OUT_DIR="${1:-${OUT:-benchmarks/results}}"
PYTHON="${PYTHON:-python3}"
DRY_RUN="${DRY_RUN:-}"
mkdir -p "$OUT_DIR"

if [ -n "$DRY_RUN" ]; then
    export PAGEDLAB_DRY_RUN_LOG="$OUT_DIR/gpu_check_compiles.jsonl"
    rm -f "$PAGEDLAB_DRY_RUN_LOG"
    PY=("$PYTHON" -m pagedlab.tools.dry_run --gpu "${DRY_RUN_GPU:-sm_75}")
    echo "gpu-check: DRY RUN: CUDA faked as ${DRY_RUN_GPU:-sm_75}, kernels not launched"
else
    PY=("$PYTHON")
fi

# -- 1. what this needs ---------------------------------------------------------------------------
missing=$("$PYTHON" - <<'EOF'
import importlib.util
need = {"torch": "torch", "triton": "triton", "numpy": "numpy", "pytest": "pytest",
        "transformers": "transformers", "matplotlib": "matplotlib", "tqdm": "tqdm",
        "ipywidgets": "ipywidgets"}
print(" ".join(pip for module, pip in need.items() if importlib.util.find_spec(module) is None))
EOF
)
command -v timeout >/dev/null 2>&1 || missing="$missing timeout(coreutils)"
if [ -n "$missing" ]; then
    echo "gpu-check: missing: $missing"
    echo "gpu-check: install them first (pip install ${missing//timeout(coreutils)/}); nothing ran."
    exit 2
fi
if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi -L | tee "$OUT_DIR/nvidia_smi.txt"
else
    echo "gpu-check: nvidia-smi not found; continuing (the mode check below says if CUDA is missing)"
fi

# Time budgets: seconds per kernel compile (a T4 host compiles slower than an H100's) times the
# compiles each step needs, plus what the step itself runs.
SECONDS_PER_COMPILE="${SECONDS_PER_COMPILE:-4}"
budget() {  # budget STEP RUN_SECONDS
    local compiles
    compiles=$("$PYTHON" - "$1" <<'EOF'
import json, sys
try:
    counts = json.load(open("benchmarks/results/gpu_check_compiles.json"))
except (OSError, ValueError):
    counts = {}
print(counts.get(sys.argv[1], 60))  # unmeasured: assume 60
EOF
)
    echo $(( compiles * SECONDS_PER_COMPILE + $2 ))
}

# -- 2. install in place, offline -----------------------------------------------------------------
"$PYTHON" -m pip install --quiet --no-deps --no-build-isolation ${DRY_RUN:+--dry-run} -e .
"${PY[@]}" -m pagedlab doctor | tee "$OUT_DIR/doctor.txt"

# The kernels must run compiled here: fail fast if this machine would interpret them.
"${PY[@]}" -c "import sys, pagedlab.backend as b; s = b.triton_status(); print('Triton:', s); \
sys.exit(s['mode'] != 'compiled')"

status=0
step() {  # step NAME RUN_SECONDS COMMAND...: run it within its budget, log it, remember failure
    local name=$1 run=$2 seconds start
    shift 2
    seconds=$(budget "$name" "$run")
    start=$(date +%s)
    echo "gpu-check: $name (budget $seconds s)"
    export PAGEDLAB_DRY_RUN_STEP="$name"
    timeout "$seconds" "$@" 2>&1 | tee "$OUT_DIR/$name.txt" || { status=1; echo "gpu-check: $name FAILED"; }
    echo "gpu-check: $name took $(( $(date +%s) - start )) s"
}

# -- 3. the kernel benchmark, target shape first --------------------------------------------------
step bench 240 "${PY[@]}" -m pagedlab bench --out "$OUT_DIR"

# -- 4. the tests, compiled on this GPU -----------------------------------------------------------
TESTS=(tests/test_kernels.py tests/test_unified_attention.py tests/test_cache.py
       tests/test_attention_reference.py tests/test_backend.py tests/test_model.py
       tests/test_engine.py)
# A dry run cannot run the kernels, so it collects the tests (imports, parametrisation, skips).
step gpu_tests 120 "${PY[@]}" -m pytest -q -p no:cacheprovider ${DRY_RUN:+--collect-only} "${TESTS[@]}"

# -- 5. the serving engine against transformers' generate, GPT-2 config, random weights ----------
ENGINE_ARGS=(--gpu --json "$OUT_DIR/bench_engine_gpu.json")
if [ -n "$DRY_RUN" ]; then ENGINE_ARGS+=(--size tiny --prompts 4 --new-tokens 4 --repeats 1); fi
step bench_engine 120 "${PY[@]}" benchmarks/bench_engine.py "${ENGINE_ARGS[@]}"

if [ -n "$DRY_RUN" ]; then  # the compile counts the budgets above use, per step
    "$PYTHON" - "$PAGEDLAB_DRY_RUN_LOG" "$OUT_DIR/gpu_check_compiles.json" <<'EOF'
import json, sys
counted = {}
for line in open(sys.argv[1]):
    entry = json.loads(line)
    counted[entry["step"]] = counted.get(entry["step"], 0) + entry["compiles"]
print("gpu-check: compiles counted per step:", counted)
# Steps whose kernels a dry run never reaches (the tests run only on a GPU) keep their measured
# count from the committed file.
counts = json.load(open("benchmarks/results/gpu_check_compiles.json"))
counts.update({step: n for step, n in counted.items() if n and step in counts})
json.dump(counts, open(sys.argv[2], "w"), indent=1)
EOF
fi
echo "gpu-check: done (status $status)"
exit $status
