# The step runner of scripts/gpu_check.sh, sourced by it (and by tests/test_gpu_plan.py, which
# runs it on the CPU). Needs BUDGET, LIMIT_<step> (LIMIT_pack too), WORK, OUT_DIR, LAST_TABLE_DIR
# and OPTIONAL_STEPS set; GRACE_<step> is optional (default 10 s). `status` ends 1 if a required
# step failed, was cut or found no time; an optional step (OPTIONAL_STEPS) runs only in what is
# left of the budget, so one cut at its limit or left no time is logged and is not a failure.
status=0
step() {  # step NAME COMMAND...: run under its limit (SIGINT, then KILL after its grace), log, go on
    local name=$1; shift
    local limit_var="LIMIT_$name" grace_var="GRACE_$name"
    local limit=${!limit_var} grace=${!grace_var:-10} start=$SECONDS
    local left=$((BUDGET - SECONDS - LIMIT_pack))
    [ "$name" = pack ] || [ "$left" -ge "$limit" ] || limit=$left
    if [ "$limit" -le 0 ]; then
        echo "$name skipped: no time left of ${BUDGET}s" | tee -a "$WORK/steps.txt"
        case " $OPTIONAL_STEPS " in *" $name "*) ;; *) status=1 ;; esac
        return
    fi
    echo "=== $name (limit $limit s, $(date -u +%H:%M:%S))"
    timeout -s INT -k "$grace" "$limit" "$@" > "$WORK/$name.log" 2>&1
    local rc=$? note=""
    case " $OPTIONAL_STEPS " in
        *" $name "*) [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ] && note=" (optional: cut at its limit, not a failure)" ;;
    esac
    echo "$name rc=$rc $((SECONDS - start))s limit=${limit}s$note" | tee -a "$WORK/steps.txt"
    # back even if the command is cut off later: steps, failures, the archive and any table,
    # re-packed after each step
    cp "$WORK/steps.txt" "$OUT_DIR/"
    cp "$WORK/correct-failures.txt" "$OUT_DIR/" 2>/dev/null
    tar czf "$OUT_DIR/gpu-check.tar.gz" -C "$(dirname "$WORK")" gpu-check 2>/dev/null
    cp "$WORK"/tuned/*.json "$OUT_DIR/" 2>/dev/null
    mkdir -p "$LAST_TABLE_DIR" && cp "$WORK"/tuned/*.json "$LAST_TABLE_DIR/" 2>/dev/null
    tail -n 3 "$WORK/$name.log"
    [ "$rc" -eq 0 ] || [ -n "$note" ] || status=1
}

