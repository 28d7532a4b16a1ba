"""What scripts/gpu_check.sh will do on the next H100, counted on the CPU: per step, its
compiles or tests, its timed measurements and its estimated seconds, then the total; and the
per-step limits the script runs under (`--limits`). Nothing is launched: kernel launches
are recorded (benchmarks/sweep.py `record_launches`), so the compile counts are the compile
step's own plan (the committed H100 table, the first run's known spills).

Every rate is a measurement of the first GPU run on an H100 (docs/perf-data/2026-11-27-h100:
call 1 is the whole command, call 2 a compile and sweep on the warm machine; steps.txt, the
compile CSVs, the logs and nets.csv in their archives), listed with the plan (MEASURED).
Run it as `bash scripts/gpu_check.sh --plan`.
"""

from __future__ import annotations

import argparse
import csv
import heapq
import math
import re
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch
import triton.language as tl

from kernels import tuned

from . import sweep

ROOT = Path(__file__).resolve().parents[1]
PERF_DATA = ROOT / "docs" / "perf-data" / "2026-11-27-h100"
CARD, TRITON = "NVIDIA H100 80GB HBM3", "3.6"  # the card and triton of the lent machines
KNOWN_ROWS = PERF_DATA / "sweep.csv.gz"  # the sweep's rows there: items known to spill everywhere

BUDGET_S = 540  # the whole command, by its step limits (the script caps each step to what is left)
# `gpu_check.sh --followup`, the second command on the warm machine: 15 device minutes less
# a start (1-2 min; the first run's: about 30 s) and the first command's 540 s leave about
# 4 to 5 minutes; its optional steps run in what is left of its budget, if anything
FOLLOWUP_BUDGET_S = 240
COMMAND_LIMIT_S = 600  # the device tool's limit: the budget plus the longest kill grace fits in it
GRACE_S = {"correct": 25}  # seconds from SIGINT to SIGKILL; 10 for the other steps

# Measured (docs/perf-data/2026-11-27-h100):
ENV_S = 4.0  # call 1 steps.txt: env 4 s (python, torch + triton imports, CUDA, nvidia-smi)
PROCESS_START_S = ENV_S  # any step's python process up to its first CUDA work: the same imports
PACK_S = 1.0  # call 1: pack 1 s
SCRIPT_S = 6.0  # call 1: 536 s for the command, 530 s in its steps (CUDA probe, copies, tar)
COMPILE_WORKERS = 14  # of the machine's 16 cores
WORKER_START_S = 25.0  # call 1: each worker's rows sum to ~27 s of its 54 s compile step
# the correctness step's tests (tests/test_gpu_plan.py collects the script's command and
# keeps this equal); call 1 ran 114 of them (correct.log: 72 results printed at "[ 63%]")
CORRECT_TESTS = 175
CORRECT_TESTS_PER_S = 111 / 114  # call 1: 111 results in the 114 s before its SIGINT, 14 workers, cold cache
# call 2: 277 items, 1575 config rows and 277 cuDNN timings in ~180 s, the serial compiles of
# the launches its compile step had left included: an upper bound per measurement
MEASURE_S = 180 / (1575 + 277)
# Building the layers and items and recording each item's launch (the sweep's table coverage;
# the bench builds items only): ~4 s on the 2-core CPU host that plans, rounded up.
SETUP_S = 5.0
NETS_S = 244.0  # call 1: nets 244 s; its first steps per (net, backend) are in nets.csv
NET_RUNS = 9  # call 1: 3 nets x torch, triton, compile
# --followup's profile: per item, inputs built, 3 warm-up calls, 20 profiled, 20 timed by
# events and 20 by the host clock, for Triton and cuDNN (its compiles are in the shared cache)
PROFILE_ITEM_S = 2.0
GRAPH_STEPS = 7  # per (net, backend): first, second, warm-up, capture, one replay, five timed
# The nets' races (CONVBENCH_RACE=unrecorded): per raced pass, each candidate run once and
# timed by do_bench (25 ms and its warm-up) and, the first time, the statistics pass's
# compile. Not measured: an allowance per race.
RACE_S = 0.75

MEASURED = [
    f"env {ENV_S:.0f} s and pack {PACK_S:.0f} s (call 1 steps.txt); every step's python start taken as env's "
    f"{PROCESS_START_S:.0f} s; {SCRIPT_S:.0f} s of the script's own between steps (call 1: 536 s command, 530 s "
    f"of steps)",
    f"compile: {WORKER_START_S:.0f} s worker start (call 1), {sweep.COMPILE_S} s per launch (call 1: 1.8 s mean "
    f"of 179 cold launches), {sweep.LRN_COMPILE_S:.0f} s per LRN-family launch (call 1: up to 14.7 s); "
    f"{COMPILE_WORKERS} workers claiming launches longest first (the schedule is simulated)",
    f"correct: {CORRECT_TESTS} tests at {CORRECT_TESTS_PER_S:.2f} tests/s (call 1: 111 reported in 114 s, "
    f"14 workers, cold cache)",
    f"sweep and bench: {MEASURE_S:.3f} s per timed measurement (call 2: 180 s for 1575 config rows + 277 "
    f"cuDNN timings, its serial compiles included), {SETUP_S:.0f} s to build the items (measured on the CPU)",
    f"nets: {NETS_S:.0f} s (call 1), of which first steps (nets.csv): {{first}}; the triton backend then ran "
    f"mostly first configs, now the table's (precompiled by the compile step)",
    "from docs/perf-data/2026-11-27-h100 (call1-gpu-check.tar.gz, call2-compile-sweep.tar.gz, nets.csv)",
    f"nets per (net, backend): its first step (nets.csv) + {{overhead:.1f}} s, call 1's nets time beyond its first "
    f"steps over its {NET_RUNS} runs; a +graph backend adds {GRAPH_STEPS} steps at its base's img/s",
    f"--followup: profile {PROFILE_ITEM_S:.0f} s per item (not measured: 60 short calls each side, compiles "
    f"cached by the first command)",
    f"nets' races: {RACE_S} s each (not measured: each candidate run once and timed by do_bench, a first compile "
    f"of the statistics pass)",
]


@dataclass
class Step:
    name: str
    compiles: int
    measurements: int
    seconds: float
    note: str
    optional: bool = False  # runs only in what is left of the budget; not counted against it

    @property
    def limit_s(self) -> int:
        """The step's SIGINT limit: its estimate plus a tenth, at least 10 s."""
        return max(10, math.ceil(self.seconds * 1.1))


def schedule_s(costs: list[float], workers: int) -> float:
    """Makespan of workers that each claim the next task of `costs`, in order, when free."""
    free = [0.0] * workers
    for cost in costs:
        heapq.heappush(free, heapq.heappop(free) + cost)
    return max(free)


def _strip_dtype(sig: tuple) -> tuple:
    """A compile signature without its dtypes (pointer dtypes, and constexprs that name a
    dtype: they follow the tensors, bf16 on the GPU) and its config."""
    name, args, kwargs = sig
    args = tuple(a[:1] + a[2:] if a and a[0] == "ptr" else a for a in args)
    kwargs = tuple((k, v) for k, v in kwargs if k not in ("num_warps", "num_stages", "num_ctas")
                   and not k.startswith("BLOCK") and k != "GROUP_M" and not isinstance(v, tl.dtype))
    return name, args, kwargs


def net_extra_compiles(sweep_sigs: set[tuple], archs=sweep.NET_ARCHS) -> int:
    """Specializations the nets' triton training step launches that the compile plan does
    not (config and dtype aside): recorded from one forward and backward at batch 16."""
    import nets

    found = set()
    for arch in archs:
        model = nets.build(arch, "triton").train()
        x = torch.randn(16, 3, 224, 224).contiguous(memory_format=torch.channels_last)

        def step(model=model, x=x):
            out = model(x)
            logits = out.logits if hasattr(out, "logits") else out
            logits.float().sum().backward()

        found |= {_strip_dtype(s) for s in sweep.record_launches(step)}
    return len(found - {_strip_dtype(s) for s in sweep_sigs})


def first_steps() -> dict[tuple[str, str], float]:
    with (PERF_DATA / "nets.csv").open() as f:
        return {(r["arch"], r["backend"]): float(r["first_step_s"]) for r in csv.DictReader(f)}


def nets_s(backends, archs=sweep.NET_ARCHS) -> float:
    """The nets step over `backends`: each (net, backend)'s first step (nets.csv; a
    `+graph` backend's its base's, then GRAPH_STEPS steps at the base's measured img/s),
    plus its share of what call 1's nets step spent beyond its first steps."""
    first, ips = first_steps(), _nets_ips()
    overhead = (NETS_S - sum(first.values())) / NET_RUNS
    total = 0.0
    for b in backends:
        base = b.removesuffix("+graph")
        for a in archs:
            total += first[(a, base)] + overhead + (GRAPH_STEPS * 128 / ips[(a, base)] if b != base else 0.0)
    return total


# the nets step's backends in each command: the first measures ours beside eager torch on the
# table the paths step completed; the follow-up replays the steps as CUDA graphs, then times
# torch.compile (three builds, the quickest first) in what is left
CHECK_BACKENDS = ("torch", "triton")
FOLLOWUP_BACKENDS = ("compile",)
GRAPH_BACKENDS = ("torch+graph", "triton+graph")


def plan() -> list[Step]:
    """`gpu_check.sh`: compile, correctness, the sweep of what the table lacks, the paths'
    items (the table's path records), the bench, and the nets on torch and triton."""
    device = torch.device("cpu")
    layers = sweep.all_layers()
    items = sweep.compile_items(layers)
    n_sweep = len(sweep.all_items(layers))
    n_table = len(sweep.table_items(layers))
    table = tuned.load_table(tuned.table_path(CARD, TRITON))
    skip = sweep.known_spills(KNOWN_ROWS)
    pairs = sweep.needed_launches(items, table, device, n_table, skip)
    todo, distinct, sigs = sweep.compile_plan(items, device, pairs=pairs, with_signatures=True)
    steps = [Step("env", 0, 0, ENV_S, "GPU, driver, torch, triton, cuDNN versions")]
    compile_s = WORKER_START_S + schedule_s([sweep.compile_seconds(items[n]) for n, _ in todo], COMPILE_WORKERS)
    steps.append(Step("compile", distinct, 0, compile_s,
                      f"{len(todo)} launches, longest first, claimed by {COMPILE_WORKERS} workers: what the "
                      f"later steps launch with the committed table, the paths' items included"))
    steps.append(Step("correct", 0, CORRECT_TESTS, CORRECT_TESTS / CORRECT_TESTS_PER_S,
                      f"pytest -n 14: fuzz, split-K, tuned-table and every-config tests ({CORRECT_TESTS} tests)"))
    _, lacking = sweep.table_coverage(items[:n_sweep], table, device)
    swept = [items[n] for n in lacking if items[n].id not in skip]
    timed = sum(len(sweep.configs_for(i)[:1 if i.follows else None]) + 1 for i in swept)
    steps.append(Step("sweep", 0, timed, PROCESS_START_S + SETUP_S + timed * MEASURE_S,
                      f"{len(swept)} items the table lacks ({n_sweep - len(lacking)} in it, "
                      f"{len(lacking) - len(swept)} known to spill under every config)"))
    _, path_lacking = sweep.table_coverage(items[n_sweep:n_table], table, device)
    paths = [items[n_sweep + n] for n in path_lacking]
    path_timed = sum(len(sweep.configs_for(i)) + 1 for i in paths)
    kinds = ", ".join(f"{n} {p}" for p, n in sorted(Counter(i.path for i in paths).items()))
    steps.append(Step("paths", 0, path_timed, PROCESS_START_S + SETUP_S + path_timed * MEASURE_S,
                      f"{len(paths)} path items the table lacks ({kinds}), every config checked and timed (compiled "
                      f"by the compile step): their winners and the table's path records"))
    steps.append(_bench_step(layers, items, n_table))
    extra = net_extra_compiles(sigs)
    races = len({(i.layer, i.dispatch_key and tuple(sorted(i.dispatch_key.items()))) for i in items[n_sweep:n_table]
                 if i.pass_ == "forward" and i.layer.startswith("resnet")})
    steps.append(Step("nets", extra, len(CHECK_BACKENDS) * len(sweep.NET_ARCHS),
                      nets_s(CHECK_BACKENDS) + races * RACE_S,
                      f"{len(sweep.NET_ARCHS)} nets x {CHECK_BACKENDS} training img/s on the paths step's table; "
                      f"{extra} specializations the compile plan lacks, compiled in the first steps; {races} races "
                      f"of ResNet's conv+BN forwards (no record covers them)"))
    steps.append(Step("pack", 0, 0, PACK_S, "summary, one tar.gz archive"))
    return steps


def _bench_step(layers, items, n_table) -> Step:
    memory = [i for i in items[:n_table] if i.kind in sweep.MEMORY_KINDS]
    blocks = sweep.inception_blocks(layers)
    branch_timings = sum(len(sweep.configs_for(i)) + 1 for i in items[n_table:])
    bench_timed = 1 + 2 * len(memory) + 2 * len(blocks) + branch_timings
    return Step("bench", 0, bench_timed, PROCESS_START_S + SETUP_S + bench_timed * MEASURE_S,
                f"copy; {len(memory)} memory-bound items + ATen; {len(blocks)} Inception blocks x 4 ways "
                f"({branch_timings} branch timings)")


def followup_plan() -> list[Step]:
    """`gpu_check.sh --followup`: each net's training step replayed as a CUDA graph and the
    profile of the items furthest behind cuDNN; then, in what is left, the nets on
    torch.compile (measured on this card and torch in the first run: its builds take most
    of the command, and the host's share is what decides the next work)."""
    steps = [Step("env", 0, 0, ENV_S, "GPU, driver, torch, triton, cuDNN versions")]
    steps.append(Step("graphs", 0, len(GRAPH_BACKENDS) * len(sweep.NET_ARCHS),
                      PROCESS_START_S + nets_s(GRAPH_BACKENDS),
                      f"{len(sweep.NET_ARCHS)} nets x {GRAPH_BACKENDS}: the training step replayed as one CUDA "
                      f"graph"))
    n_profile = _profile_count()
    steps.append(Step("profile", 0, n_profile, PROCESS_START_S + SETUP_S + n_profile * PROFILE_ITEM_S,
                      f"{n_profile} items: device time per kernel, host and event time, beside cuDNN"))
    steps.append(Step("tcompile", 0, len(FOLLOWUP_BACKENDS) * len(sweep.NET_ARCHS), nets_s(FOLLOWUP_BACKENDS),
                      f"if time is left: {len(sweep.NET_ARCHS)} nets x {FOLLOWUP_BACKENDS} training img/s (their "
                      f"builds: the first steps), the quickest first", optional=True))
    steps.append(Step("pack", 0, 0, PACK_S, "summary, one tar.gz archive"))
    return steps


def _profile_count() -> int:
    script = (Path(__file__).resolve().parents[1] / "scripts" / "gpu_check.sh").read_text()
    worst = int(re.search(r"^PROFILE_WORST=(\d+)", script, re.M).group(1))
    named = re.search(r"^PROFILE_ITEMS=(.*?)(?<!\\)$", script, re.M | re.S).group(1)
    return worst + len(named.replace("\\\n", "").split(","))


def _nets_ips() -> dict[tuple[str, str], float]:
    with (PERF_DATA / "nets.csv").open() as f:
        return {(r["arch"], r["backend"]): float(r["images_per_s"]) for r in csv.DictReader(f)}


def print_plan(steps: list[Step], out=sys.stdout, budget: float = BUDGET_S) -> float:
    """Prints the plan; returns the estimated seconds of its required steps (the optional
    ones run in what is left)."""
    total = sum(s.seconds for s in steps if not s.optional) + SCRIPT_S
    print("GPU check plan (counted on the CPU; seconds from the first H100 run's measurements below)", file=out)
    print(f"{'step':<9}{'compiles':>9}{'timed':>7}{'est s':>8}{'limit s':>9}  what", file=out)
    for s in steps:
        print(f"{s.name:<9}{s.compiles:>9}{s.measurements:>7}{s.seconds:>8.0f}{s.limit_s:>9}  {s.note}", file=out)
    print("measured:", file=out)
    first = first_steps()
    for line in MEASURED:
        shown = ", ".join(f"{a} {b} {s:.1f} s" for (a, b), s in first.items())
        overhead = (NETS_S - sum(first.values())) / NET_RUNS
        print(f"  - {line.format(first=shown, overhead=overhead) if '{' in line else line}", file=out)
    limits = sum(s.limit_s for s in steps if not s.optional) + SCRIPT_S
    fits = "fits" if total <= budget and limits <= budget else "DOES NOT FIT"
    optional = [s.name for s in steps if s.optional]
    if optional:
        print(f"optional: {', '.join(optional)} run in what is left of the budget (not counted)", file=out)
    print(f"total: {total:.0f} s estimated (with {SCRIPT_S:.0f} s between steps), {fits} the {budget:.0f} s budget; "
          f"step limits sum to {limits:.0f} s, and the script caps each step to the budget left, so the command "
          f"ends by {budget:.0f} s + a kill grace (at most {max(GRACE_S.values())} s) within the device's "
          f"{COMMAND_LIMIT_S} s", file=out)
    return total


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu_plan", description=__doc__.split("\n\n")[0])
    parser.add_argument("--limits", action="store_true", help="print 'step limit_s' lines for gpu_check.sh")
    parser.add_argument("--followup", action="store_true", help="the plan of `gpu_check.sh --followup`")
    args = parser.parse_args(argv)
    steps = followup_plan() if args.followup else plan()
    budget = FOLLOWUP_BUDGET_S if args.followup else BUDGET_S
    if args.limits:
        for s in steps:
            print(s.name, s.limit_s)
        return 0
    total = print_plan(steps, budget=budget)
    limits = sum(s.limit_s for s in steps if not s.optional) + SCRIPT_S
    fits = total <= budget and limits <= budget and budget + max(GRACE_S.values()) <= COMMAND_LIMIT_S
    return 0 if fits else 1


if __name__ == "__main__":
    sys.exit(main())
