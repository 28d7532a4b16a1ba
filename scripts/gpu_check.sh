#!/usr/bin/env bash
# The one prepared command for a lent GPU; under 9 minutes on an H100 by the first run's
# measurements (`bash scripts/gpu_check.sh --plan` prints the count, on any machine). Give
# the device tool timeout_s=570 (the budget and the longest kill grace). Steps, each stopped
# by SIGINT at its limit (capped to what is left of BUDGET) and keeping what it measured:
#   env      GPU, driver, torch, triton, cuDNN
#   compile  what the later steps launch, longest compiles first, claimed one by one by
#            parallel workers sharing one TRITON_CACHE_DIR (python -m benchmarks.sweep compile):
#            with the card's committed table, its config of every layer it serves, every
#            config of the layers and path items it lacks, and the bench's per-branch
#            Inception launches
#   correct  the fuzz tests (hypothesis profile gpu-check), the split-K test, the tuned-table
#            tests, the conv statistics epilogue, the FC epilogue and dropout, the 1x1 TMA path,
#            the stems' space-to-depth path, the TMA KxK path (padded edges: TMA's zero fill at
#            negative coordinates), the LRN group kernels and the CUDA-graph replay of a
#            training step, against float64 references, pytest -n 14 (the max-pool, LRN+max-pool
#            and BatchNorm kernels: their every-config tests; the LRN group and TMA KxK kernels'
#            every config is checked against cuDNN by the sweep and paths steps instead); each
#            failure's report and each finished test go to disk as they come
#   sweep    the layers the committed table lacks (but for those every config of which
#            spilled in the first run's rows), every config checked against torch's eager op
#            and timed beside it; the table: the committed entries and the new winners
#   paths    every path's items beside the generic kernel (the 1x1 GEMM, the stems'
#            space-to-depth, ...), each config checked and timed: the table gets their
#            winners and the path records the nets then follow
#   bench    the copy bandwidth, the memory-bound kernels as % of it, each Inception block's
#            1x1 GEMMs fused vs once per branch vs cuDNN per branch vs one cuDNN conv
#   nets     training images/s of the three nets on torch and triton (the paths step's table,
#            path records included), and the table's hits and misses per net and backend
#   pack     summary.txt, the tuned table, steps.txt and one gpu-check.tar.gz of everything
# --followup (the second command, timeout_s 270, on the still-warm machine): the CUDA-graph
# replays of the nets' steps and the profile; then, in what is left of its budget,
# torch.compile's training img/s.
# Results go to $OUT when set (the device tool's folder), else ./gpu-check-out: 5 files
# (summary.txt, steps.txt, the table, correct-failures.txt, gpu-check.tar.gz), re-packed
# after each step. Every step runs even if an earlier one fails; the exit code is non-zero
# if any failed (an optional step left no time, or cut at its limit, is not a failure).
set -u
cd "$(dirname "$0")/.."
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$PWD" PYTHONUNBUFFERED=1

if [ "${1:-}" = "--plan" ]; then
    TRITON_INTERPRET=1 exec python3 -m benchmarks.gpu_plan ${2:+"$2"}
fi
MODE=check
[ "${1:-}" = "--followup" ] && MODE=followup

# Seconds per step: `python -m benchmarks.gpu_plan --limits` (tests/test_gpu_plan.py keeps
# these equal to it; written here so the GPU spends no time re-counting).
LIMIT_env=10 LIMIT_compile=69 LIMIT_correct=198 LIMIT_sweep=11 LIMIT_paths=116 LIMIT_bench=47 LIMIT_nets=70
LIMIT_pack=10
BUDGET=540  # the whole command (gpu_plan.BUDGET_S); no step runs past it but pack
# --followup (`python -m benchmarks.gpu_plan --followup --limits`), the second command on the
# still-warm machine: its own limits and budget (gpu_plan.FOLLOWUP_BUDGET_S)
FLIMIT_env=10 FLIMIT_graphs=67 FLIMIT_profile=37 FLIMIT_tcompile=209 FLIMIT_pack=10
FBUDGET=240
# --followup steps that run only in what is left of FBUDGET (not counted against it)
OPTIONAL_STEPS="tcompile"
# SIGINT to SIGKILL. The correctness step's pytest -n 14 needs more than xdist's 10 s
# (NodeManager.EXIT_TIMEOUT) to stop workers caught in a compile, which a signal cannot
# interrupt, before it writes its JUnit XML and summary; with 10 s it was killed first.
GRACE_correct=25
KNOWN_ROWS=docs/perf-data/2026-11-27-h100/sweep.csv.gz  # items known to spill under every config
# --followup's profile: the items furthest behind cuDNN in the first sweep, and those whose
# every config ran within a few percent of one time (the flat margins of docs/perf-log.md)
PROFILE_WORST=6
PROFILE_ITEMS=resnet50.layer4.0.bn1:forward,resnet50.layer3.0.bn1:forward,resnet50.layer4.0.conv1:forward,\
googlenet.inception5a.fused1x1:wgrad/split3,alexnet.features.norm1:forward,googlenet.norm2:backward

OUT_DIR="${OUT:-gpu-check-out}"
mkdir -p "$OUT_DIR"
WORK="$(mktemp -d)/gpu-check"
mkdir -p "$WORK"
# one cache for both commands: the follow-up on the warm machine finds the check's compiles
export TRITON_CACHE_DIR=/tmp/convbench-triton-cache
# the check's latest table (copied after each step), which the follow-up's nets launch
LAST_TABLE_DIR=/tmp/convbench-last-table
# a check starts it afresh: a follow-up never launches an earlier check's table as this one's
[ "$MODE" = check ] && rm -rf "$LAST_TABLE_DIR"
if [ "$MODE" = followup ]; then
    BUDGET=$FBUDGET
    for f in ${!FLIMIT_@}; do eval "LIMIT_${f#FLIMIT_}=\$$f"; done  # each FLIMIT_x becomes LIMIT_x
fi

if ! python3 -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
    echo "gpu_check: no CUDA device visible to torch here; nothing was measured." >&2
    exit 2
fi

# step NAME COMMAND...: each step under its limit, logged and packed; `status` says if any failed
. scripts/gpu_steps.sh

step env python3 - "$WORK/env.json" <<'PY'
import json, subprocess, sys, torch, triton
smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,clocks.max.sm,memory.total",
                      "--format=csv,noheader"], capture_output=True, text=True).stdout.strip()
env = {"gpu": torch.cuda.get_device_name(), "nvidia-smi": smi, "torch": torch.__version__,
       "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(), "triton": triton.__version__}
json.dump(env, open(sys.argv[1], "w"), indent=1)
print(json.dumps(env))
PY

if [ "$MODE" = check ]; then
step compile python3 -m benchmarks.sweep compile --out "$WORK/compile" --known-rows "$KNOWN_ROWS"

touch "$WORK/correct-failures.txt"  # empty: no test failed (or none ran: see correct-progress.csv)
# The LRN group kernels' every-config runs stay out of this step's budget (their family is
# new and untuned): on the GPU they run in test_lrn_fuzz's channels_last examples, the
# sweep and GoogLeNet's stem backward.
HYPOTHESIS_PROFILE=gpu-check CONVBENCH_AUTOTUNE=first CONVBENCH_TUNED=off step correct \
    python3 -m pytest tests/test_conv.py tests/test_inception.py tests/test_lrn_residual.py \
    tests/test_tuned.py tests/test_tuned_configs.py tests/test_conv_bn_stats.py tests/test_fc.py tests/test_graphs.py \
    tests/test_conv1x1.py tests/test_conv_tma.py tests/test_stem.py tests/test_lrn_groups.py -n 14 -q \
    -k "(fuzz or split_k or tuned or stats_match or several_pieces or trains_like or test_linear or dropout_alone \
    or p_one or each_path_forced or module_on_the_1x1 or race_on_a_gpu or replayed or on_the_path or boxes_stop \
    or weight_grad_splits) and not (every_config and (_lrn_groups_ or _conv_tma_))" \
    -p benchmarks.gpu_hypothesis -p no:cacheprovider --junitxml="$WORK/correct.xml" \
    --failures-file "$WORK/correct-failures.txt" --progress-file "$WORK/correct-progress.csv"

CONVBENCH_TUNED=off step sweep python3 -m benchmarks.sweep sweep --out "$WORK/sweep" --table-out "$WORK/tuned" \
    --known-rows "$KNOWN_ROWS"

TABLE="$(ls "$WORK"/tuned/*.json 2>/dev/null | head -n 1)"
# every path's items (the 1x1 GEMM, the stems' space-to-depth, ...), every config checked and
# timed beside cuDNN (compiled by the compile step): the sweep's table (else the committed
# one) plus their winners and the path records (which path each layer pass takes) come back
# as the card's table, in the same file
CONVBENCH_TUNED=off step paths python3 -m benchmarks.sweep paths --out "$WORK/paths" --table-out "$WORK/tuned" \
    ${TABLE:+--base-table "$TABLE"}
TABLE="$(ls "$WORK"/tuned/*.json 2>/dev/null | head -n 1)"

# the bench: copy bandwidth, memory-bound kernels as % of it, Inception four ways
CONVBENCH_AUTOTUNE=first step bench python3 -m benchmarks.sweep bench --out "$WORK/bench"

# The paths step's table (the sweep's, the committed one completed), else the committed one
# (CONVBENCH_TUNED unset); a miss launches the first config instead of autotuning serially,
# a path record picks the path, and a pass no record covers (ResNet's conv+BN forwards)
# races its candidates at their first configs (CONVBENCH_RACE=unrecorded).
CONVBENCH_TUNED="${TABLE:-}" CONVBENCH_AUTOTUNE=first CONVBENCH_RACE=unrecorded step nets \
    python3 -m benchmarks.sweep nets --out "$WORK/nets" --backends torch,triton

else  # --followup: what the first command leaves for a second one
    # the first command's table on this still-warm machine, else the committed one
    TABLE="$(ls "$LAST_TABLE_DIR"/*.json 2>/dev/null | head -n 1)"
    # each net's training step replayed as one CUDA graph beside the first command's eager
    # steps: what the host costs the step (the smoke run of 2026-11-28: GoogLeNet 6,013 img/s
    # replayed against 2,248 eager), then where the time of the items furthest behind cuDNN goes
    CONVBENCH_TUNED="${TABLE:-}" CONVBENCH_AUTOTUNE=first CONVBENCH_RACE=unrecorded step graphs \
        python3 -m benchmarks.sweep nets --out "$WORK/graphs" --backends triton+graph,torch+graph
    CONVBENCH_AUTOTUNE=first step profile python3 -m benchmarks.gpu_profile --out "$WORK/profile" \
        --sweep "$KNOWN_ROWS" --worst "$PROFILE_WORST" --items "$PROFILE_ITEMS"
    # if time is left: torch.compile's training img/s (its builds take most of it; measured on
    # this card and torch in the first run, docs/perf-log.md), the quickest builds first
    CONVBENCH_TUNED="${TABLE:-}" CONVBENCH_AUTOTUNE=first step tcompile python3 -m benchmarks.sweep nets \
        --out "$WORK/nets" --backends compile --archs alexnet,resnet50,googlenet
fi

step pack python3 scripts/gpu_summary.py "$WORK" --out "$WORK/summary.txt"
cp "$WORK/summary.txt" "$WORK/steps.txt" "$OUT_DIR/" 2>/dev/null
cat "$WORK/summary.txt" 2>/dev/null
exit $status
