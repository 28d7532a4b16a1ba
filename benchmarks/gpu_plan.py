"""What scripts/gpu_check.sh will do on a GPU, counted on the CPU: per step, its distinct
compiles, its timed measurements and its estimated seconds, then the total; and the per-step
limits the script runs under (`--limits`). Nothing is launched: kernel launches are recorded
(benchmarks/sweep.py `record_launches`), so the compile counts are the sweep's own.

The seconds are estimates from stated assumptions (ASSUMPTIONS, printed with the plan),
not measurements. Run it as `bash scripts/gpu_check.sh --plan`.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass

import torch
import triton.language as tl

from kernels import configs as kconfigs

from . import sweep
from .gpu_hypothesis import MAX_EXAMPLES

BUDGET_S = 480  # the whole check, by our own count, inside one 10-minute device command
COMMAND_LIMIT_S = 600

# Per-compile cost: gpu-facts.md measured 0.3-1.3 s per sm_90 compile with triton 3.6; the
# worst is used. Triton 3.6 also builds a C launcher with gcc at a signature's first launch
# (one per kernel and argument types, integers equal to 1 folded in; cached with the kernels).
COMPILE_S = 1.3
LAUNCHER_S = 1.0
COMPILE_WORKERS = 14  # of the machine's 16 cores
WORKER_START_S = 12.0  # python + torch + triton import and CUDA context, each worker at once
CACHE_LOAD_S = 0.05  # a compiled kernel loaded from the shared TRITON_CACHE_DIR
# do_bench: WARMUP_MS + REP_MS of kernel time per measurement (sweep.py), each run after a
# 256 MB L2 flush (~0.1 ms at 3 TB/s) and a launch (~0.02 ms); 5 runs to estimate first.
FLUSH_MS, LAUNCH_MS = 0.1, 0.02
MEASURE_OVERHEAD_S = 0.015  # per measurement: launcher, check against cuDNN, CSV row
ITEM_SETUP_S = 0.02  # per item: random inputs and cuDNN's reference output
# Kernel time guess for do_bench's repeat count: half the H100 ceilings in gpu-facts.md
# (bf16 dense ~800 TFLOP/s, copy 3.0 TB/s) plus 5 us.
TFLOPS, TBPS = 0.5 * 800e12, 0.5 * 3.0e12
# Correctness step: pytest with xdist over the fuzz tests (GPU hypothesis profile) and the
# every-config tests. Its compiles are bounded, not recorded: each fuzz example may be a new
# specialization of each kernel it launches.
PYTEST_WORKERS = 14
PYTEST_START_S = 20.0  # xdist workers start, import and collect
FUZZ_EXAMPLES = MAX_EXAMPLES  # per fuzz test (benchmarks/gpu_hypothesis.py's profile)
FUZZ_TESTS = {"test_conv2d_fuzz": 5, "test_lrn_fuzz": 2, "test_add_relu_fuzz": 2, "test_inception_1x1_fuzz": 4,
              "test_inception_block_fuzz": 9}  # test -> kernels launched per example (fwd + bwd)
# tests/test_tuned_configs.py: specializations per config of each kernel (flat / tap-by-tap
# K, plain / pooled input, bf16 / fp32 split-K output); one for the rest.
CONFIG_TEST_VARIANTS = {"_conv_fwd_kernel": 2, "_pointwise_fwd_kernel": 2, "_conv_wgrad_kernel": 2}
SPLIT_K_TEST_COMPILES = 6  # tests/test_conv.py's split-K test: wgrad x 2 outputs, column sums, forward
TUNED_TEST_COMPILES = 10  # tests/test_tuned.py: add+ReLU under 2 to 4 block sizes, one small conv
# tests/test_tuned_configs.py's max-pool, LRN+max-pool and BatchNorm cases run forward and
# backward: the kernels not forced there compile once each at their first config (the pool
# gathers, LRN backward, BatchNorm's statistics, finalize and reduction passes, by count).
CONFIG_TEST_OTHER_COMPILES = 15
# BatchNorm's four untuned kernels (statistics, finalize, backward reduce and finalize).
UNTUNED_TEST_KERNELS = 4
# C launchers of the correctness step: each kernel a test launches, with and without an
# integer equal to 1 among its arguments (a guess: the fuzz tests draw sizes of 1 too).
CORRECT_LAUNCHERS = 2 * (sum(FUZZ_TESTS.values()) + len(kconfigs.TUNABLE) + UNTUNED_TEST_KERNELS)
# Nets step: torch.compile's inductor build of a training step is not in gpu-facts.md;
# assumed 45 s per net on 16 cores. Eager first steps: 3 s (cuDNN heuristics, allocator).
INDUCTOR_S = 45.0
FIRST_STEP_S = 3.0
TRAIN_STEPS = 7  # two warm-up steps and five timed (sweep.train_images_per_s)
STEP_MS = {"alexnet": 20, "googlenet": 45, "resnet50": 45}  # per training step, upper guesses
ENV_S, PACK_S = 5.0, 5.0

ASSUMPTIONS = [
    f"compile: {COMPILE_S} s per sm_90 compile (gpu-facts.md's worst) + {LAUNCHER_S} s per triton 3.6 C launcher "
    f"(one per kernel signature), {COMPILE_WORKERS} parallel workers sharing one TRITON_CACHE_DIR, "
    f"{WORKER_START_S:.0f} s worker start",
    f"measure: do_bench warmup {sweep.WARMUP_MS} ms + rep {sweep.REP_MS} ms of kernel time, each run behind a "
    f"{FLUSH_MS} ms L2 flush and a {LAUNCH_MS} ms launch; kernel time guessed at half the H100 ceilings "
    f"(400 TFLOP/s bf16, 1.5 TB/s); {MEASURE_OVERHEAD_S * 1e3:.0f} ms host work per measurement",
    f"correct: pytest -n {PYTEST_WORKERS}; fuzz compiles bounded by {FUZZ_EXAMPLES} examples x kernels per test "
    f"(specializations repeat, so fewer in fact), each test's examples serial in one worker (the longest test "
    f"plus the rest shared by the workers); {PYTEST_START_S:.0f} s xdist start",
    f"nets: torch.compile of a training step assumed {INDUCTOR_S:.0f} s per net (not measured here); "
    f"{TRAIN_STEPS} steps per (net, backend); the triton backend launches the sweep's table (no autotuning); "
    f"its compiles beyond the sweep's were recorded from the nets at batch 16 (same specializations as 128)",
    "spilling configs are counted as timed (an upper bound: the sweep skips them after compiling)",
]


@dataclass
class Step:
    name: str
    compiles: int
    measurements: int
    seconds: float
    note: str

    @property
    def limit_s(self) -> int:
        """The step's SIGINT limit: its estimate plus a tenth, at least 10 s."""
        return max(10, math.ceil(self.seconds * 1.1))


def _kernel_ms(item: sweep.Item) -> float:
    return max(item.flops / TFLOPS, item.nbytes / TBPS) * 1e3 + 0.005


def bench_seconds(kernel_ms: float) -> float:
    """Wall seconds of one do_bench call on a kernel of `kernel_ms`."""
    runs = 5 + max(1, int(sweep.WARMUP_MS / kernel_ms)) + max(1, int(sweep.REP_MS / kernel_ms))
    return runs * (kernel_ms + FLUSH_MS + LAUNCH_MS) * 1e-3


def _strip_dtype(sig: tuple) -> tuple:
    """A compile signature without its dtypes (pointer dtypes, and constexprs that name a
    dtype: they follow the tensors, bf16 on the GPU) and its config."""
    name, args, kwargs = sig
    args = tuple(a[:1] + a[2:] if a and a[0] == "ptr" else a for a in args)
    kwargs = tuple((k, v) for k, v in kwargs if k not in ("num_warps", "num_stages", "num_ctas")
                   and not k.startswith("BLOCK") and k != "GROUP_M" and not isinstance(v, tl.dtype))
    return name, args, kwargs


def launcher_key(sig: tuple) -> tuple:
    """What triton 3.6's C launcher depends on: the kernel and its argument types (pointer
    dtypes; integers, with those equal to 1 specialized away), not the config or sizes."""
    name, args, _ = sig
    return name, tuple(a[:2] if a and a[0] in ("ptr", "int") else a[:1] for a in args)


def net_extra_compiles(sweep_sigs: set[tuple], archs=sweep.NET_ARCHS) -> int:
    """Specializations the nets' triton training step launches that the sweep did not
    compile (config and dtype aside): recorded from one forward and backward at batch 16."""
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


def plan() -> list[Step]:
    device = torch.device("cpu")
    items = sweep.all_items()
    todo, distinct, sigs = sweep.compile_plan(items, device, with_signatures=True)
    steps = [Step("env", 0, 0, ENV_S, "GPU, driver, torch, triton, cuDNN versions")]
    launchers = len({launcher_key(s) for s in sigs})
    compile_s = WORKER_START_S + (distinct * COMPILE_S + launchers * LAUNCHER_S) / COMPILE_WORKERS
    steps.append(Step("compile", distinct, 0, compile_s,
                      f"{len(todo)} launches in {COMPILE_WORKERS} workers: every (kernel, config, specialization); "
                      f"{launchers} C launchers"))
    config_counts = {f: len(kconfigs._GPU[f]) for f in kconfigs._GPU}
    fuzz_compiles = FUZZ_EXAMPLES * sum(FUZZ_TESTS.values())
    config_compiles = sum(CONFIG_TEST_VARIANTS.get(name, 1) * config_counts[t.family]
                          for name, t in kconfigs.TUNABLE.items())
    correct_compiles = (fuzz_compiles + config_compiles + CONFIG_TEST_OTHER_COMPILES + SPLIT_K_TEST_COMPILES
                        + TUNED_TEST_COMPILES)
    # A hypothesis test runs its examples in one worker, one after another: the longest is a
    # serial path. Graham's bound for the xdist schedule: start + longest + the rest shared.
    longest = max(FUZZ_EXAMPLES * k * COMPILE_S + k * LAUNCHER_S for k in FUZZ_TESTS.values())
    shared = (correct_compiles * COMPILE_S + CORRECT_LAUNCHERS * LAUNCHER_S) / PYTEST_WORKERS
    correct_s = PYTEST_START_S + longest + shared
    steps.append(Step("correct", correct_compiles, 0, correct_s,
                      f"pytest: fuzz tests ({FUZZ_EXAMPLES} examples each), split-K, tuned-table tests, every "
                      f"config of every kernel ({sum(config_counts.values())} configs)"))
    timed = [(item, config) for item in items for config in sweep.configs_for(item)[:1 if item.follows else None]]
    sweep_s = distinct * CACHE_LOAD_S
    for item in items:
        sweep_s += ITEM_SETUP_S + bench_seconds(_kernel_ms(item))  # cuDNN beside it
    for item, _ in timed:
        sweep_s += MEASURE_OVERHEAD_S + bench_seconds(_kernel_ms(item))
    steps.append(Step("sweep", 0, len(timed) + len(items), sweep_s,
                      f"{len(items)} items (layer x pass x split) of {len(sweep.all_layers())} distinct layers; "
                      f"{len(timed)} triton timings + {len(items)} cuDNN"))
    extra = net_extra_compiles(sigs)
    nets_s = extra * (COMPILE_S + LAUNCHER_S)
    for backend in sweep.NET_BACKENDS:
        for arch in sweep.NET_ARCHS:
            nets_s += FIRST_STEP_S + TRAIN_STEPS * STEP_MS[arch] * 1e-3 * (3 if backend == "torch" else 1)
            nets_s += INDUCTOR_S if backend == "compile" else 0
    n_nets = len(sweep.NET_BACKENDS) * len(sweep.NET_ARCHS)
    steps.append(Step("nets", extra, n_nets, nets_s,
                      f"{len(sweep.NET_ARCHS)} nets x {sweep.NET_BACKENDS} training img/s; {extra} compiles beyond "
                      f"the sweep's"))
    steps.append(Step("pack", 0, 0, PACK_S, "summary, one tar.gz archive"))
    return steps


def print_plan(steps: list[Step], out=sys.stdout) -> float:
    total = sum(s.seconds for s in steps)
    print("GPU check plan (counted on the CPU; seconds are estimates from the assumptions below)", file=out)
    print(f"{'step':<9}{'compiles':>9}{'timed':>7}{'est s':>8}{'limit s':>9}  what", file=out)
    for s in steps:
        print(f"{s.name:<9}{s.compiles:>9}{s.measurements:>7}{s.seconds:>8.0f}{s.limit_s:>9}  {s.note}", file=out)
    print("assumptions:", file=out)
    for a in ASSUMPTIONS:
        print(f"  - {a}", file=out)
    limits = sum(s.limit_s for s in steps)
    fits = "fits" if total <= BUDGET_S else "DOES NOT FIT"
    print(f"total: {total:.0f} s estimated, {fits} the {BUDGET_S} s budget; step limits sum to {limits} s "
          f"(+10 s kill grace per step) within the {COMMAND_LIMIT_S} s command", file=out)
    return total


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu_plan", description=__doc__.split("\n\n")[0])
    parser.add_argument("--limits", action="store_true", help="print 'step limit_s' lines for gpu_check.sh")
    args = parser.parse_args(argv)
    steps = plan()
    if args.limits:
        for s in steps:
            print(s.name, s.limit_s)
        return 0
    total = print_plan(steps)
    grace = 10 * len(steps)
    return 0 if total <= BUDGET_S and sum(s.limit_s for s in steps) + grace <= COMMAND_LIMIT_S else 1


if __name__ == "__main__":
    sys.exit(main())
