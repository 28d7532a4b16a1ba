#!/usr/bin/env bash
# The one prepared command for a lent GPU (5-7 minutes on an H100; give it timeout_s=540):
#   1. the environment (GPU, driver, torch, triton, cuDNN)
#   2. the GPU tests (pytest -m gpu; one autotune config per kernel family, correctness only)
#   3. the key kernel benchmarks (CONVBENCH_SET=quick: 4 convs, an LRN, an add+ReLU, an
#      Inception block; bf16 batch 128; torch vs triton; Triton autotuned)
#   4. a short profile: AlexNet training at batch 128 bf16, per layer on torch and triton,
#      whole net on torch, compile and triton (Triton kernels on their first config)
#   5. a compact table of all of it, last
# Logs and JSON go to $OUT when set (the device tool's folder), else ./gpu-check-out.
# Every step runs even if an earlier one fails; the exit code is non-zero if any failed.
set -u
cd "$(dirname "$0")/.."
OUT_DIR="${OUT:-gpu-check-out}"
mkdir -p "$OUT_DIR"
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$PWD" PYTHONUNBUFFERED=1

if ! python3 -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
    echo "gpu_check: no CUDA device visible to torch here; nothing was measured." >&2
    exit 2
fi

status=0
step() {  # step NAME TIMEOUT_S COMMAND...: run, log, remember failure, never stop the script
    local name=$1 limit=$2; shift 2
    local start=$SECONDS
    echo "=== $name ($(date -u +%H:%M:%S))"
    timeout "$limit" "$@" > "$OUT_DIR/$name.log" 2>&1
    local rc=$?
    echo "$name rc=$rc $((SECONDS - start))s" | tee -a "$OUT_DIR/steps.txt"
    tail -n 5 "$OUT_DIR/$name.log"
    [ "$rc" -eq 0 ] || status=1
}

step env 60 python3 - <<'PY'
import json, subprocess, torch, triton
smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,clocks.max.sm,memory.total",
                      "--format=csv,noheader"], capture_output=True, text=True).stdout.strip()
env = {"gpu": torch.cuda.get_device_name(), "nvidia-smi": smi, "torch": torch.__version__,
       "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(), "triton": triton.__version__}
print(json.dumps(env, indent=1))
PY
cp "$OUT_DIR/env.log" "$OUT_DIR/env.json" 2>/dev/null

CONVBENCH_AUTOTUNE=first step gpu-tests 150 \
    python3 -m pytest tests -m gpu -q -x -p no:cacheprovider --junitxml="$OUT_DIR/gpu-tests.xml"

CONVBENCH_SET=quick step benchmarks 150 \
    python3 -m pytest benchmarks -q --benchmark-only -k "not compile" -p no:cacheprovider \
    --benchmark-json="$OUT_DIR/benchmarks.json" --benchmark-columns=median,rounds

CONVBENCH_AUTOTUNE=first step profile 150 python3 -m benchmarks.profile --arch alexnet --mode train \
    --backend torch,compile,triton --no-compile-layers --rep-ms 40 --out "$OUT_DIR/profile"

python3 scripts/gpu_summary.py "$OUT_DIR" | tee "$OUT_DIR/summary.txt"
exit $status
