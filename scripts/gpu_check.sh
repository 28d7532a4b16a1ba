#!/usr/bin/env bash
# The one prepared command for a lent GPU; about 8 minutes on an H100 by our own count
# (`bash scripts/gpu_check.sh --plan` prints the count, on any machine). Give the device
# tool timeout_s=600. Steps, each stopped by SIGINT at its limit and keeping what it measured:
#   env      GPU, driver, torch, triton, cuDNN
#   compile  every (kernel, config, specialization) the sweep launches, in parallel workers
#            sharing one TRITON_CACHE_DIR (python -m benchmarks.sweep compile)
#   correct  the fuzz tests (hypothesis profile gpu-check), the split-K test, the tuned-table
#            tests and every config of every kernel against float64 references, pytest -n 14
#            (the max-pool, LRN+max-pool and BatchNorm kernels: their every-config tests)
#   sweep    every distinct conv / Inception / max-pool / LRN+max-pool / BatchNorm(+ReLU)
#            (+residual) layer of AlexNet, GoogLeNet and ResNet-50, batch 128 bf16
#            channels_last, each pass apart, every config checked against torch's eager op
#            (cuDNN conv and BatchNorm, max_pool2d, LRN) and timed beside it; the tuned table
#   nets     training images/s of the three nets on torch, compile and triton (the fresh table)
#   pack     summary.txt, the tuned table, steps.txt and one gpu-check.tar.gz of everything
# Results go to $OUT when set (the device tool's folder), else ./gpu-check-out: 4 files.
# Every step runs even if an earlier one fails; the exit code is non-zero if any failed.
set -u
cd "$(dirname "$0")/.."
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$PWD" PYTHONUNBUFFERED=1

if [ "${1:-}" = "--plan" ]; then
    TRITON_INTERPRET=1 exec python3 -m benchmarks.gpu_plan
fi

# Seconds per step: `python -m benchmarks.gpu_plan --limits` (tests/test_gpu_plan.py keeps
# these equal to it; written here so the GPU spends no time re-counting).
LIMIT_env=10 LIMIT_compile=51 LIMIT_correct=114 LIMIT_sweep=102 LIMIT_nets=249 LIMIT_pack=10

OUT_DIR="${OUT:-gpu-check-out}"
mkdir -p "$OUT_DIR"
WORK="$(mktemp -d)/gpu-check"
mkdir -p "$WORK"
export TRITON_CACHE_DIR="$WORK/../triton-cache"

if ! python3 -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
    echo "gpu_check: no CUDA device visible to torch here; nothing was measured." >&2
    exit 2
fi

status=0
step() {  # step NAME COMMAND...: run under its limit (SIGINT, then KILL 10 s later), log, go on
    local name=$1; shift
    local limit_var="LIMIT_$name"
    local start=$SECONDS
    echo "=== $name (limit ${!limit_var} s, $(date -u +%H:%M:%S))"
    timeout -s INT -k 10 "${!limit_var}" "$@" > "$WORK/$name.log" 2>&1
    local rc=$?
    echo "$name rc=$rc $((SECONDS - start))s limit=${!limit_var}s" | tee -a "$WORK/steps.txt"
    cp "$WORK/steps.txt" "$OUT_DIR/"  # back even if the command is cut off later
    # so is everything measured so far: the archive and any table, re-packed after each step
    tar czf "$OUT_DIR/gpu-check.tar.gz" -C "$(dirname "$WORK")" gpu-check 2>/dev/null
    cp "$WORK"/tuned/*.json "$OUT_DIR/" 2>/dev/null
    tail -n 3 "$WORK/$name.log"
    [ "$rc" -eq 0 ] || status=1
}

step env python3 - "$WORK/env.json" <<'PY'
import json, subprocess, sys, torch, triton
smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,clocks.max.sm,memory.total",
                      "--format=csv,noheader"], capture_output=True, text=True).stdout.strip()
env = {"gpu": torch.cuda.get_device_name(), "nvidia-smi": smi, "torch": torch.__version__,
       "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(), "triton": triton.__version__}
json.dump(env, open(sys.argv[1], "w"), indent=1)
print(json.dumps(env))
PY

step compile python3 -m benchmarks.sweep compile --out "$WORK/compile"

HYPOTHESIS_PROFILE=gpu-check CONVBENCH_AUTOTUNE=first CONVBENCH_TUNED=off step correct \
    python3 -m pytest tests/test_conv.py tests/test_inception.py tests/test_lrn_residual.py \
    tests/test_tuned.py tests/test_tuned_configs.py -k "fuzz or split_k or tuned" -n 14 -q \
    -p benchmarks.gpu_hypothesis -p no:cacheprovider --junitxml="$WORK/correct.xml"

CONVBENCH_TUNED=off step sweep python3 -m benchmarks.sweep sweep --out "$WORK/sweep" --table-out "$WORK/tuned"

TABLE="$(ls "$WORK"/tuned/*.json 2>/dev/null | head -n 1)"
# A table miss (a sweep cut short) launches the first config instead of autotuning serially.
CONVBENCH_TUNED="${TABLE:-off}" CONVBENCH_AUTOTUNE=first step nets python3 -m benchmarks.sweep nets --out "$WORK/nets"

step pack python3 scripts/gpu_summary.py "$WORK" --out "$WORK/summary.txt"
cp "$WORK/summary.txt" "$WORK/steps.txt" "$OUT_DIR/" 2>/dev/null
[ -n "$TABLE" ] && cp "$TABLE" "$OUT_DIR/"
tar czf "$OUT_DIR/gpu-check.tar.gz" -C "$(dirname "$WORK")" gpu-check
cat "$WORK/summary.txt" 2>/dev/null
exit $status
