"""Kernel attribution: which kernels a replayed layer ran and their share of its time, from
torch.profiler.

On a GPU: every device kernel launched while the closure ran (cuDNN's kernel names carry
their tile shapes; Triton kernels appear under their @triton.jit function name), each with
its share of the summed kernel time. This path is written to torch.profiler's documented
events and not yet run on a GPU. On a CPU there are no device kernels: the shares are of
the CPU time of a range wrapped around the closure, split among the ops under it by self time
(e.g. aten::mkldnn_convolution or aten::_slow_conv2d_forward: which ATen CPU path ran) and,
under the Triton interpreter, the kernel launches, named here by wrapping the interpreter's
launch in a profiler range (the kernels run as Python there: their share is interpreter
time, not kernel time).
"""

from __future__ import annotations

import contextlib
from collections import defaultdict

import torch
from torch.autograd import DeviceType

RANGE = "convbench.replay"
UNTRACED = "(python outside any op)"


@contextlib.contextmanager
def _named_interpreter_launches():
    """Wrap each interpreted Triton launch in a range named after its kernel function."""
    try:
        from triton.runtime.interpreter import InterpretedFunction
    except ImportError:  # pragma: no cover - triton without an interpreter
        yield
        return
    real = InterpretedFunction.run

    def run(self, *args, **kwargs):
        with torch.profiler.record_function(f"triton {self.fn.__name__}"):
            return real(self, *args, **kwargs)

    InterpretedFunction.run = run
    try:
        yield
    finally:
        InterpretedFunction.run = real


def attribute(fn, device: torch.device, *, calls: int | None = None) -> tuple[list[dict], str]:
    """Profile `calls` runs of the (warmed-up) `fn`: ([{kernel, calls, us, share}] largest
    share first, with calls and us per run of `fn`), and what the names are ("device kernels"
    or "cpu ops")."""
    cuda = device.type == "cuda"
    calls = calls or (3 if cuda else 2)
    activities = [torch.profiler.ProfilerActivity.CPU]
    if cuda:
        activities.append(torch.profiler.ProfilerActivity.CUDA)
        torch.cuda.synchronize(device)
    with _named_interpreter_launches(), torch.profiler.profile(activities=activities) as prof:
        for _ in range(calls):
            with torch.profiler.record_function(RANGE):
                fn()
        if cuda:
            torch.cuda.synchronize(device)
    events = prof.events()
    if cuda:
        return shares(_device_kernels(events), calls), "device kernels"
    return shares(_cpu_ops(events), calls), "cpu ops"


def _device_kernels(events) -> dict[str, list[float]]:
    out: dict[str, list[float]] = defaultdict(list)
    for e in events:
        if e.device_type == DeviceType.CUDA:
            out[e.name].append(e.time_range.elapsed_us())
    return out


def _cpu_ops(events) -> dict[str, list[float]]:
    """Each replay range's CPU time split among the ops under it by their self time (the op
    that does the work, e.g. aten::mkldnn_convolution under aten::conv2d); an interpreted
    Triton launch keeps its whole subtree (what the interpreter ran for that kernel); the
    range's own self time is Python outside any op."""
    out: dict[str, list[float]] = defaultdict(list)

    def visit(e):
        for c in e.cpu_children:
            if c.name.startswith("triton "):
                out[c.name].append(c.cpu_time_total)
            else:
                out[c.name].append(c.self_cpu_time_total)
                visit(c)

    for r in events:
        if r.name == RANGE:
            visit(r)
            out[UNTRACED].append(r.self_cpu_time_total)
    return out


def shares(times: dict[str, list[float]], runs: int) -> list[dict]:
    """Per name: calls and microseconds per run, and share of the total time."""
    total = sum(sum(v) for v in times.values())
    rows = [{"kernel": name, "calls": len(v) / runs, "us": sum(v) / runs,
             "share": sum(v) / total if total > 0 else None}
            for name, v in times.items() if sum(v) > 0]
    return sorted(rows, key=lambda r: -(r["us"]))
