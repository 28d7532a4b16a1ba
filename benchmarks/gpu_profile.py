"""Where a sweep item's time goes: device time per kernel, host time per call, and the gap.

A sweep row is one number (CUDA events around a call, L2 flushed between). When Triton
trails cuDNN by a flat margin whatever the config (ResNet-50 layer4 in the first H100 sweep:
every conv config within 10% of 0.13 ms on 6-26 GFLOP, every BatchNorm config near 0.33 ms
on 19 MB), the kernels may not be what is slow: host launch cost, extra launches (split-K
partials, column sums, statistics passes) or allocations. This module times each item three
ways in one process, beside cuDNN's reference:

- `event_us`: CUDA events around one call, as the sweep measures (median of `reps`);
- `host_us`: wall time of the call's Python and launch work, without synchronizing;
- per kernel, from `torch.profiler` (CUDA activity): launches per call and device time per call.

`device_us` (the kernels' sum) far below `event_us` means the GPU waits on the host.

    python -m benchmarks.gpu_profile --out DIR [--items ID,ID,...] [--worst N --sweep CSV]

Each item runs with the config the sweep found best (from the sweep CSV when given, else
the launcher's own choice: the tuned table, or autotuning). Rows go to DIR/profile.csv as
they are measured; an interrupted run keeps them.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from contextlib import nullcontext
from pathlib import Path

import torch

from kernels import configs as kconfigs
from kernels import tuned

from .sweep import Rows, all_items

PROFILE_FIELDS = ["item", "side", "kernel", "launches_per_call", "device_us", "event_us", "host_us", "config",
                  "status", "error"]


def _event_us(fn, reps: int) -> float:
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) * 1e3)
    return statistics.median(times)


def _host_us(fn, reps: int, sync) -> float:
    times = []
    for _ in range(reps):
        sync()
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e6)
    sync()
    return statistics.median(times)


def kernel_times(fn, reps: int, activity) -> dict[str, tuple[float, float]]:
    """{kernel name: (launches per call, device µs per call)} over `reps` calls of `fn`,
    from torch.profiler's events of `activity` (CUDA on a GPU)."""
    from torch.profiler import profile

    with profile(activities=[activity]) as prof:
        for _ in range(reps):
            fn()
        if activity == torch.profiler.ProfilerActivity.CUDA:
            torch.cuda.synchronize()
    out: dict[str, list[float]] = {}
    for e in prof.events():
        if e.device_type != torch.autograd.DeviceType.CUDA and activity == torch.profiler.ProfilerActivity.CUDA:
            continue
        out.setdefault(e.name, []).append(e.device_time if activity == torch.profiler.ProfilerActivity.CUDA
                                          else e.cpu_time)
    return {name: (len(t) / reps, sum(t) / reps) for name, t in out.items()}


def profile_call(name: str, side: str, fn, rows: Rows, *, reps: int = 20, config: str = "") -> None:
    """Rows for one closure: a summary row (kernel '*': total device time, event and host
    time per call) and one row per kernel it launched."""
    cuda = torch.cuda.is_available()
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    activity = torch.profiler.ProfilerActivity.CUDA if cuda else torch.profiler.ProfilerActivity.CPU
    try:
        for _ in range(3):  # compile, allocate, settle
            fn()
        sync()
        per_kernel = kernel_times(fn, reps, activity)
        event = _event_us(fn, reps) if cuda else None
        host = _host_us(fn, reps, sync)
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # a failing item is a row
        rows.add(item=name, side=side, kernel="*", config=config, status="error",
                 error=f"{type(exc).__name__}: {exc}"[:300])
        return
    rows.add(item=name, side=side, kernel="*", launches_per_call=sum(n for n, _ in per_kernel.values()),
             device_us=sum(us for _, us in per_kernel.values()), event_us=event, host_us=host, config=config,
             status="ok")
    for kernel, (n, us) in sorted(per_kernel.items(), key=lambda kv: -kv[1][1]):
        rows.add(item=name, side=side, kernel=kernel[:120], launches_per_call=n, device_us=us, status="ok")


def best_rows(sweep):
    """One row per item of a sweep's rows (a DataFrame): its fastest timed config (status ok)."""
    ok = sweep[(sweep.status == "ok") & sweep.ms.notna()]
    return ok.loc[ok.groupby("item").ms.idxmin()].reset_index(drop=True)


def best_configs(sweep_csv: Path) -> dict[str, tuple[float, float, dict]]:
    """{item id: (best ms, cuDNN ms, config spec)} from a sweep CSV (gzip is fine)."""
    import pandas as pd

    best = best_rows(pd.read_csv(sweep_csv))
    return {r.item: (r.ms, r.cudnn_ms, {"kwargs": json.loads(r.config), "num_warps": int(r.num_warps),
                                        "num_stages": int(r.num_stages)}) for r in best.itertuples()}


def worst_items(best: dict, n: int) -> list[str]:
    """The `n` items with the largest Triton/cuDNN time ratio."""
    return sorted(best, key=lambda i: -best[i][0] / best[i][1])[:n]


def run(out: Path, item_ids: list[str], best: dict, device, reps: int = 20) -> int:
    out.mkdir(parents=True, exist_ok=True)
    items = {item.id: item for item in all_items()}
    unknown = [i for i in item_ids if i not in items]
    if unknown:
        raise SystemExit(f"benchmarks.gpu_profile: --items has unknown item ids: {', '.join(unknown)}")
    rows = Rows(out / "profile.csv", PROFILE_FIELDS)
    try:
        for n, item_id in enumerate(item_ids, 1):
            item = items[item_id]
            inputs = item.make(device, True)
            spec = best.get(item_id, (None, None, None))[2]
            forced = kconfigs.forced_config(item.kernel, tuned.config_from_json(spec)) if spec else nullcontext()
            with forced:
                profile_call(item_id, "triton", item.triton(inputs), rows, reps=reps,
                             config=json.dumps(spec) if spec else "launcher's choice")
            profile_call(item_id, "cudnn", item.reference(inputs), rows, reps=reps)
            print(f"[{n}/{len(item_ids)}] {item_id}", flush=True)
            del inputs
    except KeyboardInterrupt:
        print("gpu_profile: interrupted; keeping what was measured", flush=True)
    finally:
        rows.close()
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for profile.csv")
    parser.add_argument("--items", default="", help="comma-separated sweep item ids")
    parser.add_argument("--sweep", type=Path, help="a sweep CSV: each item's best config, and --worst's ranking")
    parser.add_argument("--worst", type=int, default=0, help="also the N items slowest against cuDNN (needs --sweep)")
    parser.add_argument("--reps", type=int, default=20)
    args = parser.parse_args(argv)
    if args.worst and not args.sweep:
        parser.error("--worst needs --sweep")
    if args.reps < 1:
        parser.error(f"--reps must be >= 1, got {args.reps}")
    if not torch.cuda.is_available():
        raise SystemExit("benchmarks.gpu_profile: no CUDA device visible to torch; nothing was measured")
    best = best_configs(args.sweep) if args.sweep else {}
    ids = [i for i in args.items.split(",") if i]
    ids += [i for i in worst_items(best, args.worst) if i not in ids]
    if not ids:
        parser.error("nothing to profile: give --items and/or --worst N --sweep CSV")
    return run(args.out, ids, best, torch.device("cuda"), args.reps)


if __name__ == "__main__":
    raise SystemExit(main())
