"""The profiler's measuring: per arch and mode, every backend's layers replayed in isolation
(time, FLOPs, bytes, error against the reference, the kernels that ran) and the whole net
(forward, forward+backward, training step). Rows go to the run's store as they are measured;
any failure inside a measurement (an out-of-memory on any device included) becomes a row
with its status, and the run goes on. The command line is `benchmarks.profile`.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import time
from dataclasses import dataclass

import torch
from torch import nn
from tqdm import tqdm

import nets
from nets import data, recipe
from nets.describe import describe
from nets.flops import unit_flops
from nets.layers import convert, is_triton_inception
from reports.schema import CAPTURE, NETWORK

from . import accuracy, attribution, graphs
from .ceilings import DTYPES
from .layers import backward_closure, capture, forward_closure, replay_inputs, units
from .metrics import derive
from .store import RunStore
from .timing import first_call_s, measure


def cpu_library() -> str:
    """What ATen runs convolutions and matmuls with on this CPU, as torch reports it."""
    return "ATen CPU (oneDNN/mkldnn)" if torch.backends.mkldnn.is_available() else "ATen CPU"


def kernel_label(kernel: str, backend: str, device: torch.device) -> str:
    """nets.describe names the GPU library; on a CPU, say what really runs."""
    if device.type == "cuda":
        return kernel
    if backend == "triton" and not kernel.startswith("torch"):
        return f"{kernel} (Triton interpreter)"
    return kernel.replace("cuDNN", cpu_library())


# --------------------------------------------------------------------------- one run
@dataclass
class Run:
    args: argparse.Namespace
    device: torch.device
    store: RunStore
    ceilings: dict
    bar: tqdm

    @property
    def run_id(self) -> str:
        return self.store.run_id

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
        self.store.results.write(run_id=self.run_id, arch=arch, backend=backend, dtype=self.dtype_name,
                                 batch_size=self.args.batch_size, image_size=self.args.image_size, mode=mode,
                                 layer=layer, **{"pass": pass_}, device=device, **fields)

    def failure_row(self, arch, backend, mode, layer, pass_, exc: BaseException, **fields):
        status, error = classify(exc, self.device)
        self.row(arch, backend, mode, layer, pass_, status=status, error=error, **fields)
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        return status

    def timed_row(self, arch, backend, mode, layer, pass_, fn, *, flops=None, nbytes=None, images=None,
                  extra=None):
        """Time `fn` on the device and write its row; `images` per call gives images/s."""
        t = measure(fn, self.device, warmup_ms=self.args.rep_ms / 4, rep_ms=self.args.rep_ms,
                    cpu_min_run_s=2e-3 * self.args.rep_ms)
        m = derive(t.ms, flops=flops, nbytes=nbytes, ceilings=self.ceilings, dtype=self.dtype_name)
        self.row(arch, backend, mode, layer, pass_, ms=t.ms, ms_p20=t.p20, ms_p80=t.p80, samples=t.samples,
                 gflop=flops / 1e9 if flops else None, tflops=m["tflops"],
                 gbytes=nbytes / 1e9 if nbytes else None, gbps=m["gbps"], pct_peak=m["pct_peak"],
                 ceiling=m["ceiling"], ceiling_value=m["ceiling_value"], ceiling_unit=m["ceiling_unit"],
                 images_per_s=images / (t.ms * 1e-3) if images else None, **(extra or {}))
        return t

    def kernels(self, arch, backend, mode, layer, pass_, fn) -> None:
        """The kernels `fn` ran, to kernels.csv; a failure to profile becomes a row there."""
        if not self.args.attribution:
            return
        key = dict(run_id=self.run_id, arch=arch, mode=mode, backend=backend, layer=layer, **{"pass": pass_})
        try:
            rows, source = attribution.attribute(fn, self.device)
        except Exception as exc:  # recorded: the kernels row carries the error
            self.store.kernels.write(**key, kernel=f"(not attributed: {one_line(exc)})", source="error")
            return
        for r in rows:
            self.store.kernels.write(**key, **r, source=source)


def one_line(exc: BaseException, limit: int = 300) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:limit]


def classify(exc: BaseException, device: torch.device) -> tuple[str, str]:
    """(status, one-line error): "oom" for an out-of-memory of any device (CUDA's error,
    the CPU allocator's "can't allocate memory", MemoryError), else "failed"."""
    text = str(exc)
    oom = (isinstance(exc, (torch.cuda.OutOfMemoryError, MemoryError))
           or (isinstance(exc, RuntimeError) and ("can't allocate memory" in text or "out of memory" in text)))
    return ("oom" if oom else "failed"), one_line(exc)


@contextlib.contextmanager
def _recorded(run: Run, arch, backend, mode, layer, pass_, **fields):
    """Run a measurement; an OOM or error becomes a row saying so, and the run goes on."""
    try:
        yield
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as exc:  # recorded, not swallowed: the row carries the error
        run.failure_row(arch, backend, mode, layer, pass_, exc, **fields)


def _models(arch: str, mode: str, backends, run: Run) -> tuple[dict, nn.Module]:
    """backend -> its model, all from the same seeded weights (BatchNorm folded for infer),
    on the device in the run's dtype, channels_last; and the reference copy of those weights."""
    torch.manual_seed(0)
    base = nets.build(arch, "torch")
    if mode == "infer":
        base = nets.fuse_for_inference(base)
    base = base.to(device=run.device, dtype=run.dtype, memory_format=torch.channels_last)
    base.train(mode == "train")
    reference = accuracy.reference_model(base, run.device)
    # Each backend gets its own copy: training steps on one must not move another's weights.
    models = {b: convert(base, "triton") if b == "triton" else (base if b == "torch" else copy.deepcopy(base))
              for b in backends}
    return models, reference


def _layer_meta(model, x_shape, names, backend, device, dtype) -> dict:
    """name -> (op, kernel) from nets.describe (on an input of the run's dtype); Inception
    blocks as one unit."""
    frame = describe(model, x_shape, dtype=dtype).set_index("layer")
    meta = {}
    for name in names:
        if name in frame.index:
            meta[name] = (frame.loc[name, "op"], kernel_label(frame.loc[name, "kernel"], backend, device))
        else:
            triton = is_triton_inception(model.get_submodule(name))
            kernel = "inception_block" if triton else "4 branches + torch.cat"
            meta[name] = ("inception", kernel_label(kernel, backend, device))
    if backend == "compile":
        meta = {n: (op, "torch.compile") for n, (op, _) in meta.items()}
    return meta


def _unit_bytes(cap, module, pass_) -> float:
    """A floor on the bytes a unit moves: inputs + output + parameters forward; backward
    reads the output grad, the saved input and the parameters, writes both gradients."""
    inp = sum(a.numel() * a.element_size() for a in cap.args if isinstance(a, torch.Tensor))
    params = sum(p.numel() * p.element_size() for p in module.parameters())
    if pass_ == "fwd":
        return inp + cap.out_bytes + params
    return cap.out_bytes + 2 * inp + 2 * params


def _errors(run, unit, module, ref, cap, *, train, flops, grads) -> dict:
    if accuracy.is_random(module, train):
        return {"reference": "none (random in training)"}
    args, kwargs = replay_inputs(module, cap)
    e = accuracy.check(unit, module, ref, args, kwargs, train=train, flops=flops, dtype=run.dtype,
                       device=run.device, grads=grads)
    fields = {"max_rel_err": e.max_rel_err, "rel_tol": e.rel_tol, "reference": accuracy.reference_label(run.device)}
    if grads:
        fields.update(grad_max_rel_err=e.grad_max_rel_err, grad_rel_tol=e.grad_rel_tol)
    return fields


def profile_layers(run: Run, arch, backend, mode, model, x, flops, meta, reference) -> None:
    train = mode == "train"
    named = units(model)
    caps = None
    with _recorded(run, arch, backend, mode, CAPTURE, "fwd", op="capture"):
        caps = capture(model, x, named, train=train)
    if caps is None:
        run.bar.update(len(named) * (2 if train else 1))
        return
    for name, module in named:
        cap = caps.get(name)
        if cap is None:
            continue  # not run in this mode (aux heads in eval)
        op, kernel = meta[name]
        fwd_flops, bwd_flops = flops.get(name, (0.0, 0.0))
        params = sum(p.numel() * p.element_size() for p in module.parameters())
        common = dict(op=op, kernel=kernel, act_bytes=cap.out_bytes,
                      saved_bytes=cap.saved_bytes if (train and backend != "compile") else None,
                      param_bytes=params)
        unit = torch.compile(module, dynamic=False) if backend == "compile" else module
        ref = reference.get_submodule(name)
        run.bar.set_postfix_str(f"{arch}/{backend}/{mode} {name}")
        with _recorded(run, arch, backend, mode, name, "fwd", **common), torch.inference_mode(not train):
            errors = _errors(run, unit, module, ref, cap, train=train, flops=fwd_flops, grads=False)
            fn = forward_closure(unit, cap)
            run.timed_row(arch, backend, mode, name, "fwd", fn, flops=fwd_flops or None,
                          nbytes=_unit_bytes(cap, module, "fwd"), extra={**common, **errors})
            run.kernels(arch, backend, mode, name, "fwd", fn)
        run.bar.update(1)
        if train:
            with _recorded(run, arch, backend, mode, name, "bwd", **common):
                fn = backward_closure(unit, cap)
                if fn is not None:
                    errors = _errors(run, unit, module, ref, cap, train=train, flops=fwd_flops, grads=True)
                    run.timed_row(arch, backend, mode, name, "bwd", fn, flops=bwd_flops or None,
                                  nbytes=_unit_bytes(cap, module, "bwd"), extra={**common, **errors})
                    run.kernels(arch, backend, mode, name, "bwd", fn)
            run.bar.update(1)
    del caps


def main_pass(mode: str) -> str:
    """The whole-network pass a mode's throughput is read from."""
    return "fwd" if mode == "infer" else "train_step"


def _entry(arch, backend, mode, batch) -> dict:
    """A summary entry: the same keys for train and infer."""
    return {"arch": arch, "backend": backend, "mode": mode, "batch_size": batch, "pass": main_pass(mode),
            "status": "not measured", "ms": None, "images_per_s": None, "peak_bytes": None, "first_call_s": None}


def _peak_bytes(run: Run, fn) -> int | None:
    if run.device.type != "cuda":
        return None  # the CPU allocator keeps no peak statistics
    fn()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats(run.device)
    fn()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated(run.device)


def profile_network(run: Run, arch, backend, mode, model, x, y, flops_total) -> dict:
    """Whole-net rows; returns the summary entry of this backend."""
    batch = x.shape[0]
    net = torch.compile(model, dynamic=False) if backend == "compile" else model
    entry = _entry(arch, backend, mode, batch)
    fwd_flops, bwd_flops = flops_total
    run.bar.set_postfix_str(f"{arch}/{backend}/{mode} whole network")

    def timed(pass_, fn, flops, first_call: bool, peak: bool):
        """Time one whole-network pass; its row, or its failure's row. Returns fn if it ran."""
        main = pass_ == main_pass(mode)
        try:
            first = first_call_s(fn, run.device)
            peak_bytes = _peak_bytes(run, fn) if peak else None
            t = run.timed_row(arch, backend, mode, NETWORK, pass_, fn, flops=flops, images=batch,
                              extra={"op": "network", "peak_bytes": peak_bytes})
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as exc:  # recorded, not swallowed: the row carries the error
            status = run.failure_row(arch, backend, mode, NETWORK, pass_, exc, op="network")
            if main:
                entry["status"] = status
            return None
        if main:
            entry.update(status="ok", ms=t.ms, images_per_s=batch / (t.ms * 1e-3), peak_bytes=peak_bytes)
        if first_call:
            entry["first_call_s"] = first
        return fn

    if mode == "infer":
        with torch.inference_mode():
            fwd = timed("fwd", lambda: net(x), fwd_flops, first_call=True, peak=True)
            if fwd is not None and getattr(run.args, "cuda_graphs", False):
                entry["graph"] = profile_graph(run, arch, backend, mode, fwd, fwd_flops, batch)
        run.bar.update(1)
        return entry

    def fwd_bwd():
        model.zero_grad(set_to_none=True)
        recipe.loss(net(x), y).backward()

    timed("fwd+bwd", fwd_bwd, fwd_flops + bwd_flops, first_call=True, peak=False)
    run.bar.update(1)
    try:
        opt = recipe.optimizer(model, arch, batch_size=batch)
    except Exception as exc:  # recorded: the training step's row carries the error
        entry["status"] = run.failure_row(arch, backend, mode, NETWORK, "train_step", exc, op="network")
        opt = None
    if opt is not None:
        step = timed("train_step", lambda: recipe.train_step(net, opt, x, y), fwd_flops + bwd_flops,
                     first_call=False, peak=True)
        if step is not None and run.args.trace:
            _trace(run, arch, backend, step)
        if step is not None and getattr(run.args, "cuda_graphs", False):
            entry["graph"] = profile_graph(run, arch, backend, mode, step, fwd_flops + bwd_flops, batch)
    run.bar.update(1)
    return entry


def graph_label(backend: str) -> str:
    """The backend column of a whole-step CUDA graph replay's row."""
    return f"{backend}+graph"


def profile_graph(run: Run, arch, backend, mode, step, flops, batch) -> dict:
    """The same whole-network pass captured as one CUDA graph and replayed (`--cuda-graphs`):
    its row under backend `<backend>+graph`, and its summary entry. A step that cannot be
    captured (a host sync, an allocation outside the pool, autotuning left to do) is a row
    with its error."""
    label = graph_label(backend)
    pass_ = main_pass(mode)
    entry = _entry(arch, label, mode, batch)
    try:
        start = time.perf_counter()
        replay, out = graphs.capture(step, run.device)
        entry["first_call_s"] = time.perf_counter() - start
        replay()
        torch.cuda.synchronize(run.device)
        if isinstance(out, torch.Tensor) and not bool(torch.isfinite(out).all()):
            raise FloatingPointError(f"the replayed {pass_} returned non-finite values")
        t = run.timed_row(arch, label, mode, NETWORK, pass_, replay, flops=flops, images=batch,
                          extra={"op": "network (CUDA graph replay)"})
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as exc:  # recorded: the replay's row carries the error
        entry["status"] = run.failure_row(arch, label, mode, NETWORK, pass_, exc, op="network (CUDA graph replay)")
        return entry
    entry.update(status="ok", ms=t.ms, images_per_s=batch / (t.ms * 1e-3))
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
    prof.export_chrome_trace(str(run.store.dir / f"trace-{arch}-{backend}.json"))


# --------------------------------------------------------------------------- plan
def plan(args) -> list[tuple[str, str]]:
    return [(arch, mode) for arch in args.arch for mode in args.mode]


def steps(args) -> int:
    """Progress-bar steps of the whole run."""
    total = 0
    for arch, mode in plan(args):
        with torch.device("meta"):
            model = nets.build(arch)
        if mode == "infer":
            model = nets.fuse_for_inference(model).eval()
        n_units = 0 if args.skip_layers else len(units(model))
        for backend in args.backend:
            layers = n_units if (backend != "compile" or args.compile_layers) else 0
            total += layers * (2 if mode == "train" else 1) + (2 if mode == "train" else 1)
    return total


def profile_arch(run: Run, arch: str, mode: str, summary: dict) -> None:
    """Every backend of one arch and mode: layers, then the whole net."""
    args = run.args
    try:
        x, y = data.synthetic_batch(args.batch_size, image_size=args.image_size, device=run.device,
                                    dtype=run.dtype, channels_last=True)
        models, reference = _models(arch, mode, args.backend, run)
        first = next(iter(models.values()))
        names = [n for n, _ in units(first)]
        flops = unit_flops(first, tuple(x.shape), [*names, ""], train=mode == "train")
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as exc:  # the batch or the models do not fit: one row per backend
        for backend in args.backend:
            status = run.failure_row(arch, backend, mode, NETWORK, main_pass(mode), exc, op="network")
            summary["backends"].append({**_entry(arch, backend, mode, args.batch_size), "status": status})
        return
    whole = flops.pop("")
    for backend, model in models.items():
        if not args.skip_layers and (backend != "compile" or args.compile_layers):
            meta = None
            with _recorded(run, arch, backend, mode, CAPTURE, "fwd", op="describe"):
                meta = _layer_meta(model, tuple(x.shape), names, backend, run.device, x.dtype)
            if meta is not None:
                profile_layers(run, arch, backend, mode, model, x, flops, meta, reference)
        entry = profile_network(run, arch, backend, mode, model, x, y, whole)
        graph = entry.pop("graph", None)
        summary["backends"].append(entry)
        if graph is not None:
            summary["backends"].append(graph)
        if run.device.type == "cuda":
            torch.cuda.empty_cache()
