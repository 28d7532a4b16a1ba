"""python -m benchmarks.profile: per-layer and whole-network profile of the paper nets on
each backend (torch = cuDNN/ATen eager, compile = torch.compile, triton = our kernels).

Each run writes into a folder of its own, DIR/runs/<run id>/ (DIR is --out), so no run
erases or mixes with another:
  * results.csv, row by row as measured: every layer replayed in isolation on its captured
    input (forward, and backward-only in train mode): latency, FLOPs, rates against the
    measured ceilings, memory, and its max relative error against the reference; the whole
    net: forward (infer), forward+backward and a full training step: ms, images/s, memory;
  * kernels.csv: the kernels (CPU: ops) each layer's replay ran and their share of its time;
  * summary.json (environment, ceilings, configuration, throughput) and report.html.
All backends of an arch start from the same weights. Infer mode folds BatchNorm first.
Every argument is checked before anything is written. This module is the command line
only: the measuring is `benchmarks.measure`, the store `benchmarks.store`.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import shlex
import signal
import sys
from pathlib import Path

import torch
from tqdm import tqdm

import nets

from . import distributed
from .ceilings import DTYPES, measure_ceilings
from .environment import environment
from .measure import Run, plan, profile_arch, steps
from .store import RunStore, check_out_dir

BACKENDS = ("torch", "compile", "triton")
MODES = ("train", "infer")
EXAMPLES = """examples:
  python -m benchmarks.profile --arch alexnet
  python -m benchmarks.profile --arch resnet50 --backend torch,triton --batch-size 64 --out out/r50
  python -m benchmarks.profile --arch all --mode train --dtype bf16 --trace
  python -m benchmarks.profile --arch resnet50 --parallel ddp --nproc 1,2,4,8
  torchrun --nnodes 2 --nproc-per-node 8 --rdzv-backend c10d --rdzv-endpoint HOST:PORT \\
      -m benchmarks.profile --arch resnet50 --parallel ddp      # on every node
  python -m reports profile-out            # rebuild the latest run's report
  python -m reports.compare old-out new-out
defaults: on a GPU batch 128, bf16 channels_last, every backend; on CPU batch 2, fp32,
the torch backend (the Triton interpreter there measures nothing real)."""


# --------------------------------------------------------------------------- arguments
class Parser(argparse.ArgumentParser):
    """argparse, with every error on one line."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _choices(kind, allowed, extra=()):
    def parse(text: str) -> list[str]:
        items = [t.strip() for t in text.split(",") if t.strip()]
        if len(items) == 1 and items[0] in extra:
            return list(allowed)
        bad = [t for t in items if t not in allowed]
        if not items or bad:
            listed = ", ".join([*allowed, *extra])
            raise argparse.ArgumentTypeError(f"invalid {kind} {','.join(bad) or text!r} (choose from {listed})")
        # a name twice would measure it twice: duplicate rows under one key (the report and
        # compare match rows on that key)
        twice = sorted({t for t in items if items.count(t) > 1})
        if twice:
            raise argparse.ArgumentTypeError(f"{kind} {','.join(twice)} given more than once in {text!r}")
        return items
    return parse


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def _positive_ms(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a positive, finite number of milliseconds, got {text!r}")
    return value


def shape_error(arch: str, mode: str, size: int, batch: int) -> str | None:
    """Why `arch` refuses a [batch, 3, size, size] input in `mode`, None if it accepts it (a
    shape-only forward on the meta device: no memory, no kernels)."""
    try:
        with torch.device("meta"):
            model = nets.build(arch)
            model.train(mode == "train")
            model(torch.empty(batch, 3, size, size))
        return None
    except (RuntimeError, ValueError) as exc:
        return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def smallest_image_size(arch: str, mode: str, batch: int, upper: int = 224) -> int | None:
    """The smallest square input up to `upper` that `arch` accepts in `mode` (bisected; None
    if `upper` itself does not fit). GoogLeNet's training aux heads also bound it above."""
    if shape_error(arch, mode, upper, batch):
        return None
    lo, hi = 1, upper
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if shape_error(arch, mode, mid, batch) is None else (mid + 1, hi)
    return lo


def check_args(args: argparse.Namespace) -> None:
    """Raise ValueError naming the argument for what argparse cannot see alone."""
    check_out_dir(args.out)
    if getattr(args, "cuda_graphs", False):
        if not torch.cuda.is_available():
            raise ValueError("--cuda-graphs needs a CUDA device (CUDA graphs capture GPU launches); none is visible")
        if getattr(args, "parallel", None):
            raise ValueError(f"--cuda-graphs is not supported with --parallel {args.parallel}")
    for arch in args.arch:
        for mode in args.mode:
            why = shape_error(arch, mode, args.image_size, args.batch_size)
            if why:
                least = smallest_image_size(arch, mode, args.batch_size)
                hint = f"smallest: {least}" if least and args.image_size < least else "224 fits"
                raise ValueError(f"--image-size {args.image_size} does not fit {arch} in {mode} mode at batch "
                                 f"{args.batch_size} ({hint}): {why}")


def parse_args(argv=None) -> argparse.Namespace:
    on_gpu = torch.cuda.is_available()
    p = Parser(prog="python -m benchmarks.profile", description=__doc__.split("\n\n")[0],
               epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", type=_choices("arch", nets.ARCHS, ("all",)), default=["alexnet"],
                   help="comma-separated nets, or 'all' (default: alexnet)")
    p.add_argument("--backend", type=_choices("backend", BACKENDS), default=None,
                   help="comma-separated of torch,compile,triton (default: all on GPU, torch on CPU)")
    p.add_argument("--batch-size", type=_positive, default=None,
                   help="default: 128 on GPU, 2 on CPU (one that does not fit gives OOM rows)")
    p.add_argument("--dtype", choices=tuple(DTYPES), default=None, help="default: bf16 on GPU, fp32 on CPU")
    p.add_argument("--mode", type=_choices("mode", MODES), default=list(MODES), help="train,infer (default both)")
    p.add_argument("--image-size", type=_positive, default=224, help="square input side (default 224)")
    p.add_argument("--out", type=Path, default=Path("profile-out"),
                   help="results folder; each run writes OUT/runs/<run id>/ (default: profile-out)")
    p.add_argument("--trace", action="store_true", help="also write a Chrome trace of one training step")
    p.add_argument("--skip-layers", action="store_true", help="whole-network rows only")
    p.add_argument("--compile-layers", action=argparse.BooleanOptionalAction, default=True,
                   help="with the compile backend, also compile and replay every layer (default on)")
    p.add_argument("--attribution", action=argparse.BooleanOptionalAction, default=True,
                   help="profile each layer's replay once more with torch.profiler to record the kernels "
                        "it ran (kernels.csv; default on)")
    p.add_argument("--cuda-graphs", action="store_true",
                   help="also capture each backend's whole training step (infer: forward) as one CUDA graph and "
                        "time its replay, as backend '<backend>+graph' (GPU only)")
    p.add_argument("--rep-ms", type=_positive_ms, default=100.0,
                   help="timing budget per measurement: do_bench's rep on GPU, 2x as the CPU timer's "
                        "minimum run time (default 100)")
    distributed.add_arguments(p)
    args = p.parse_args(argv)
    args.backend = args.backend or (list(BACKENDS) if on_gpu else ["torch"])
    args.batch_size = args.batch_size or (128 if on_gpu else 2)
    args.dtype = args.dtype or ("bf16" if on_gpu else "fp32")
    try:
        check_args(args)
        distributed.check_args(args)
    except ValueError as exc:
        p.error(str(exc))
    return args


# --------------------------------------------------------------------------- main
@contextlib.contextmanager
def _sigterm_as_interrupt():
    """SIGTERM (what `timeout` and job schedulers send) stops the run like Ctrl-C."""
    def handler(signum, frame):
        raise KeyboardInterrupt(signal.Signals(signum).name)

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv=None) -> int:
    args = parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if "triton" in args.backend and device.type != "cuda":
        print("note: no CUDA device; the triton backend runs on the Triton interpreter: its rows "
              "check it runs, their times are not kernel times", file=sys.stderr)
    command = "python -m benchmarks.profile " + shlex.join(sys.argv[1:] if argv is None else argv)
    if args.parallel:  # scale-out: benchmarks.distributed spawns the ranks (or is one under torchrun)
        with _sigterm_as_interrupt():
            return distributed.main(args, command)
    stopped_by = None
    try:
        store = RunStore(args.out)  # the first thing written
    except OSError as exc:
        print(f"python -m benchmarks.profile: error: --out {args.out}: cannot create the run folder "
              f"({exc.strerror or exc})", file=sys.stderr)
        return 2
    with _sigterm_as_interrupt(), store:
        summary = {"run_id": store.run_id, "env": environment(device, command), "ceilings": None,
                   "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                   "backends": [], "interrupted": False, "finished": False}
        store.save_summary(summary)
        try:
            print(f"run {store.run_id} -> {store.dir}\nmeasuring ceilings on {device} ...", file=sys.stderr)
            summary["ceilings"] = measure_ceilings(device, (str(DTYPES[args.dtype]).removeprefix("torch."),))
            store.save_summary(summary)
            with tqdm(total=steps(args), unit="step", file=sys.stderr) as bar:
                run = Run(args, device, store, summary["ceilings"], bar)
                for arch, mode in plan(args):
                    profile_arch(run, arch, mode, summary)
                    store.save_summary(summary)
        except KeyboardInterrupt as exc:
            stopped_by = str(exc) or "SIGINT"
            summary.update(interrupted=True, stopped_by=stopped_by)
            print(f"\ninterrupted ({stopped_by}): keeping the {store.results.rows} rows measured so far",
                  file=sys.stderr)
        summary["finished"] = stopped_by is None
        store.save_summary(summary)
        from reports.html import build_report

        report = build_report(store.dir)
        print(f"{store.results.rows} rows -> {store.dir / 'results.csv'}\nreport -> {report}")
    if stopped_by is None:
        return 0
    return 143 if stopped_by == "SIGTERM" else 130


if __name__ == "__main__":
    sys.exit(main())
