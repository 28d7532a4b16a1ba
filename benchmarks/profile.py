"""python -m benchmarks.profile: per-layer and whole-network profile of the paper nets on
each backend (torch = cuDNN/ATen eager, compile = torch.compile, triton = our kernels).

Per arch, mode and backend it writes, row by row, to DIR/results.csv:
  * every layer replayed in isolation on its captured input: forward (and backward-only in
    train mode) latency, FLOPs (torch's counter) and rates against the measured ceilings,
    activation / saved-for-backward / parameter bytes;
  * the whole net: forward (infer), forward+backward and a full training step (paper
    recipe, synthetic data on the device): ms, images/s, peak memory.
Then DIR/summary.json (environment, ceilings, throughput per backend) and DIR/report.html.
All backends of an arch start from the same weights. Infer mode folds BatchNorm first.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import shlex
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

import nets
from nets import data, recipe
from nets.describe import describe
from nets.flops import unit_flops
from nets.layers import convert, is_triton_inception
from reports.schema import NETWORK, ResultWriter, write_summary

from .ceilings import DTYPES, measure_ceilings
from .environment import environment
from .layers import backward_closure, capture, forward_closure, units
from .metrics import derive
from .timing import measure

BACKENDS = ("torch", "compile", "triton")
MODES = ("train", "infer")
EXAMPLES = """examples:
  python -m benchmarks.profile --arch alexnet
  python -m benchmarks.profile --arch resnet50 --backend torch,triton --batch-size 64 --out out/r50
  python -m benchmarks.profile --arch all --mode train --dtype bf16 --trace
defaults: on a GPU batch 128, bf16 channels_last, every backend; on CPU batch 2, fp32,
the torch backend (the Triton interpreter there measures nothing real)."""


# --------------------------------------------------------------------------- arguments
def _choices(kind, allowed, extra=()):
    def parse(text: str) -> list[str]:
        items = [t.strip() for t in text.split(",") if t.strip()]
        if len(items) == 1 and items[0] in extra:
            return list(allowed)
        bad = [t for t in items if t not in allowed]
        if not items or bad:
            listed = ", ".join([*allowed, *extra])
            raise argparse.ArgumentTypeError(f"invalid {kind} {','.join(bad) or text!r} (choose from {listed})")
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


def parse_args(argv=None) -> argparse.Namespace:
    on_gpu = torch.cuda.is_available()
    p = argparse.ArgumentParser(prog="python -m benchmarks.profile", description=__doc__.split("\n\n")[0],
                                epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", type=_choices("arch", nets.ARCHS, ("all",)), default=["alexnet"],
                   help="comma-separated nets, or 'all' (default: alexnet)")
    p.add_argument("--backend", type=_choices("backend", BACKENDS), default=None,
                   help="comma-separated of torch,compile,triton (default: all on GPU, torch on CPU)")
    p.add_argument("--batch-size", type=_positive, default=None, help="default: 128 on GPU, 2 on CPU")
    p.add_argument("--dtype", choices=tuple(DTYPES), default=None, help="default: bf16 on GPU, fp32 on CPU")
    p.add_argument("--mode", type=_choices("mode", MODES), default=list(MODES), help="train,infer (default both)")
    p.add_argument("--image-size", type=_positive, default=224)
    p.add_argument("--out", type=Path, default=Path("profile-out"), help="output folder (default: profile-out)")
    p.add_argument("--trace", action="store_true", help="also write a Chrome trace of one training step")
    p.add_argument("--skip-layers", action="store_true", help="whole-network rows only")
    p.add_argument("--compile-layers", action=argparse.BooleanOptionalAction, default=True,
                   help="with the compile backend, also compile and replay every layer (default on)")
    p.add_argument("--rep-ms", type=float, default=100.0,
                   help="timing budget per measurement: do_bench's rep on GPU, 2x as the CPU timer's "
                        "minimum run time (default 100)")
    args = p.parse_args(argv)
    args.backend = args.backend or (list(BACKENDS) if on_gpu else ["torch"])
    args.batch_size = args.batch_size or (128 if on_gpu else 2)
    args.dtype = args.dtype or ("bf16" if on_gpu else "fp32")
    return args


# --------------------------------------------------------------------------- one run
@dataclass
class Run:
    args: argparse.Namespace
    device: torch.device
    writer: ResultWriter
    ceilings: dict
    run_id: str
    bar: tqdm

    @property
    def dtype(self) -> torch.dtype:
        return DTYPES[self.args.dtype]

    @property
    def dtype_name(self) -> str:
        return str(self.dtype).removeprefix("torch.")

    def row(self, arch, backend, mode, layer, pass_, **fields):
        device = str(self.device)
        if backend == "triton" and self.device.type != "cuda":
            device += " (triton interpreter)"
        self.writer.write(run_id=self.run_id, arch=arch, backend=backend, dtype=self.dtype_name,
                          batch_size=self.args.batch_size, mode=mode, layer=layer, **{"pass": pass_},
                          device=device, **fields)

    def timed_row(self, arch, backend, mode, layer, pass_, fn, *, flops=None, nbytes=None, images=None,
                  extra=None):
        """Time `fn` on the device and write its row; `images` per call gives images/s."""
        t = measure(fn, self.device, warmup_ms=self.args.rep_ms / 4, rep_ms=self.args.rep_ms,
                    cpu_min_run_s=2e-3 * self.args.rep_ms)
        m = derive(t.ms, flops=flops, nbytes=nbytes, ceilings=self.ceilings, dtype=self.dtype_name)
        self.row(arch, backend, mode, layer, pass_, ms=t.ms, ms_p20=t.p20, ms_p80=t.p80,
                 gflop=flops / 1e9 if flops else None, tflops=m["tflops"],
                 gbytes=nbytes / 1e9 if nbytes else None, gbps=m["gbps"], pct_peak=m["pct_peak"],
                 ceiling=m["ceiling"], images_per_s=images / (t.ms * 1e-3) if images else None,
                 **(extra or {}))
        return t


def _failure(exc: BaseException) -> tuple[str, str]:
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return "oom", "CUDA out of memory"
    return "failed", f"{type(exc).__name__}: {exc}"[:500]


@contextlib.contextmanager
def _recorded(run: Run, arch, backend, mode, layer, pass_, **fields):
    """Run a measurement; an OOM or error becomes a row saying so, and the run goes on."""
    try:
        yield
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as exc:  # recorded, not swallowed: the row carries the error
        status, error = _failure(exc)
        run.row(arch, backend, mode, layer, pass_, status=status, error=error, **fields)
        if run.device.type == "cuda":
            torch.cuda.empty_cache()


def _models(arch: str, mode: str, backends, run: Run) -> dict:
    """backend -> its model, all from the same seeded weights (BatchNorm folded for infer),
    on the device in the run's dtype, channels_last."""
    torch.manual_seed(0)
    base = nets.build(arch, "torch")
    if mode == "infer":
        base = nets.fuse_for_inference(base)
    base = base.to(device=run.device, dtype=run.dtype, memory_format=torch.channels_last)
    base.train(mode == "train")
    # Each backend gets its own copy: training steps on one must not move another's weights.
    return {b: convert(base, "triton") if b == "triton" else (base if b == "torch" else copy.deepcopy(base))
            for b in backends}


def _layer_meta(model, x_shape, names) -> dict:
    """name -> (op, kernel) from nets.describe; Inception blocks as one unit."""
    frame = describe(model, x_shape).set_index("layer")
    meta = {}
    for name in names:
        if name in frame.index:
            meta[name] = (frame.loc[name, "op"], frame.loc[name, "kernel"])
        else:
            triton = is_triton_inception(model.get_submodule(name))
            meta[name] = ("inception", "inception_block" if triton else "4 branches + torch.cat")
    return meta


def _unit_bytes(cap, module, pass_) -> float:
    """A floor on the bytes a unit moves: inputs + output + parameters forward; backward
    reads the output grad, the saved input and the parameters, writes both gradients."""
    inp = sum(a.numel() * a.element_size() for a in cap.args if isinstance(a, torch.Tensor))
    params = sum(p.numel() * p.element_size() for p in module.parameters())
    if pass_ == "fwd":
        return inp + cap.out_bytes + params
    return cap.out_bytes + 2 * inp + 2 * params


def profile_layers(run: Run, arch, backend, mode, model, x, flops, meta) -> None:
    train = mode == "train"
    named = units(model)
    caps = capture(model, x, named, train=train)
    for name, module in named:
        cap = caps.get(name)
        if cap is None:
            continue  # not run in this mode (aux heads in eval)
        op, kernel = meta[name] if backend != "compile" else (meta[name][0], "torch.compile")
        fwd_flops, bwd_flops = flops.get(name, (0.0, 0.0))
        params = sum(p.numel() * p.element_size() for p in module.parameters())
        common = dict(op=op, kernel=kernel, act_bytes=cap.out_bytes,
                      saved_bytes=cap.saved_bytes if (train and backend != "compile") else None,
                      param_bytes=params)
        unit = torch.compile(module, dynamic=False) if backend == "compile" else module
        run.bar.set_postfix_str(f"{arch}/{backend}/{mode} {name}")
        with _recorded(run, arch, backend, mode, name, "fwd", **common), torch.inference_mode(not train):
            run.timed_row(arch, backend, mode, name, "fwd", forward_closure(unit, cap), flops=fwd_flops or None,
                          nbytes=_unit_bytes(cap, module, "fwd"), extra=common)
        run.bar.update(1)
        if train:
            with _recorded(run, arch, backend, mode, name, "bwd", **common):
                fn = backward_closure(unit, cap)
                if fn is not None:
                    run.timed_row(arch, backend, mode, name, "bwd", fn, flops=bwd_flops or None,
                                  nbytes=_unit_bytes(cap, module, "bwd"), extra=common)
            run.bar.update(1)
    del caps


def profile_network(run: Run, arch, backend, mode, model, x, y, flops_total) -> dict:
    """Whole-net rows; returns the summary entry of this backend."""
    batch = x.shape[0]
    net = torch.compile(model, dynamic=False) if backend == "compile" else model
    entry = {"arch": arch, "backend": backend, "mode": mode}
    fwd_flops, bwd_flops = flops_total
    cuda = run.device.type == "cuda"
    run.bar.set_postfix_str(f"{arch}/{backend}/{mode} whole network")
    if mode == "infer":
        with _recorded(run, arch, backend, mode, NETWORK, "fwd", op="network"), torch.inference_mode():
            start = time.perf_counter()
            net(x)
            entry["first_call_s"] = time.perf_counter() - start
            t = run.timed_row(arch, backend, mode, NETWORK, "fwd", lambda: net(x), flops=fwd_flops,
                              images=batch, extra={"op": "network"})
            entry.update(infer_ms=t.ms, infer_images_per_s=batch / (t.ms * 1e-3))
        run.bar.update(1)
        return entry

    def fwd_bwd():
        model.zero_grad(set_to_none=True)
        recipe.loss(net(x), y).backward()

    with _recorded(run, arch, backend, mode, NETWORK, "fwd+bwd", op="network"):
        start = time.perf_counter()
        fwd_bwd()
        entry["first_call_s"] = time.perf_counter() - start
        run.timed_row(arch, backend, mode, NETWORK, "fwd+bwd", fwd_bwd, flops=fwd_flops + bwd_flops,
                      images=batch, extra={"op": "network"})
    run.bar.update(1)
    with _recorded(run, arch, backend, mode, NETWORK, "train_step", op="network"):
        opt = recipe.optimizer(model, arch, batch_size=batch)
        step = lambda: recipe.train_step(net, opt, x, y)
        step()
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats(run.device)
            step()
            torch.cuda.synchronize()
            peak = torch.cuda.max_memory_allocated(run.device)
        else:
            peak = None
        t = run.timed_row(arch, backend, mode, NETWORK, "train_step", step, flops=fwd_flops + bwd_flops,
                          images=batch, extra={"op": "network", "peak_bytes": peak})
        entry.update(train_step_ms=t.ms, images_per_s=batch / (t.ms * 1e-3), peak_bytes=peak)
        if run.args.trace:
            _trace(run, arch, backend, step)
    run.bar.update(1)
    return entry


def _trace(run: Run, arch, backend, step) -> None:
    activities = [torch.profiler.ProfilerActivity.CPU]
    if run.device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as prof:
        for _ in range(2):
            step()
        if run.device.type == "cuda":
            torch.cuda.synchronize()
    prof.export_chrome_trace(str(run.args.out / f"trace-{arch}-{backend}.json"))


# --------------------------------------------------------------------------- main
def _plan(args) -> list[tuple[str, str]]:
    return [(arch, mode) for arch in args.arch for mode in args.mode]


def _steps(args) -> int:
    total = 0
    for arch, mode in _plan(args):
        with torch.device("meta"):
            model = nets.build(arch)
        if mode == "infer":
            model = nets.fuse_for_inference(model).eval()
        n_units = 0 if args.skip_layers else len(units(model))
        for backend in args.backend:
            layers = n_units if (backend != "compile" or args.compile_layers) else 0
            total += layers * (2 if mode == "train" else 1) + (2 if mode == "train" else 1)
    return total


def main(argv=None) -> int:
    args = parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if "triton" in args.backend and device.type != "cuda":
        print("note: no CUDA device; the triton backend runs on the Triton interpreter: its rows "
              "check it runs, their times are not kernel times", file=sys.stderr)
    args.out.mkdir(parents=True, exist_ok=True)
    run_id = time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
    print(f"measuring ceilings on {device} ...", file=sys.stderr)
    ceilings = measure_ceilings(device, (str(DTYPES[args.dtype]).removeprefix("torch."),))
    command = "python -m benchmarks.profile " + shlex.join(sys.argv[1:] if argv is None else argv)
    summary = {"run_id": run_id, "env": environment(device, command), "ceilings": ceilings,
               "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
               "backends": [], "interrupted": False}
    write_summary(args.out, summary)
    interrupted = False
    with ResultWriter(args.out) as writer, tqdm(total=_steps(args), unit="step", file=sys.stderr) as bar:
        run = Run(args, device, writer, ceilings, run_id, bar)
        try:
            for arch, mode in _plan(args):
                _profile_arch(run, arch, mode, summary)
                write_summary(args.out, summary)
        except KeyboardInterrupt:
            interrupted = True
            summary["interrupted"] = True
            print(f"\ninterrupted: keeping the {writer.rows} rows measured so far", file=sys.stderr)
    write_summary(args.out, summary)
    from reports.html import build_report

    report = build_report(args.out)
    print(f"{writer.rows} rows -> {args.out / 'results.csv'}\nreport -> {report}")
    return 130 if interrupted else 0


def _profile_arch(run: Run, arch: str, mode: str, summary: dict) -> None:
    args = run.args
    x, y = data.synthetic_batch(args.batch_size, image_size=args.image_size, device=run.device,
                                dtype=run.dtype, channels_last=True)
    models = None
    with _recorded(run, arch, "torch", mode, NETWORK, "fwd" if mode == "infer" else "train_step", op="network"):
        models = _models(arch, mode, args.backend, run)
    if models is None:
        return
    reference = next(iter(models.values()))
    names = [n for n, _ in units(reference)]
    flops = unit_flops(reference, tuple(x.shape), [*names, ""], train=mode == "train")
    whole = flops.pop("")
    for backend, model in models.items():
        if not args.skip_layers and (backend != "compile" or args.compile_layers):
            meta = _layer_meta(model, tuple(x.shape), names)
            profile_layers(run, arch, backend, mode, model, x, flops, meta)
        entry = profile_network(run, arch, backend, mode, model, x, y, whole)
        summary["backends"].append(entry)
        if run.device.type == "cuda":
            torch.cuda.empty_cache()


if __name__ == "__main__":
    sys.exit(main())
