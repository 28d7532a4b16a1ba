"""Shared test helpers: the float64 reference comparison; its tolerance table lives in
`benchmarks.tolerance` (the profiler derives its per-row error bounds from the same function).

Tolerances are derived from each dtype's unit roundoff, not tuned to make tests pass:
the output is rounded once (rtol), and the fp32 accumulator plus any rounding of the
dot-product inputs (TF32) adds an absolute error that grows like sqrt(K) for a sum of K
independent products of unit-scale values. K is the reduction length of the op under test
(C*R*S for a conv forward, N*P*Q for its weight gradient). float64 results accumulate
in float64, so the accumulation term uses float64's roundoff for them.

`view_recipe` builds the strided views (sliced, offset, transposed, expanded) that the
drop-in tests pass for every tensor argument.
"""

from __future__ import annotations

import torch

from benchmarks.tolerance import _FP32, ROUNDOFF, tolerance  # noqa: F401 (the tests' table)

VIEW_KINDS = ("dense", "sliced", "offset", "transposed", "expanded")


def assert_close(actual: torch.Tensor, expected: torch.Tensor, *, reduction: int = 1,
                 tf32: bool = False, scale: float = 1.0, name: str = "output") -> None:
    """Assert `actual` matches a float64 `expected` within `tolerance(actual.dtype, ...)`.

    `scale` multiplies atol for quantities whose unit-scale terms are larger than 1 (e.g. a
    gradient summed over upstream values of size `scale`). NaNs must sit in the same places,
    and so must infinities, with torch's signs. On failure the message carries the max
    errors, where they occur, and the bound.
    """
    if actual.shape != expected.shape:
        raise AssertionError(f"{name}: shape {tuple(actual.shape)} != reference {tuple(expected.shape)}")
    atol, rtol = tolerance(actual.dtype, reduction, tf32=tf32)
    atol *= scale
    a = actual.detach().to(torch.float64).cpu()
    e = expected.detach().to(torch.float64).cpu()
    nan_a, nan_e = torch.isnan(a), torch.isnan(e)
    if not torch.equal(nan_a, nan_e):
        raise AssertionError(f"{name}: NaN pattern differs ({int(nan_a.sum())} vs {int(nan_e.sum())} NaNs)")
    # infinities must be torch's, sign included: the bound below is infinite there and takes anything
    inf_a, inf_e = torch.isinf(a), torch.isinf(e)
    if not torch.equal(inf_a, inf_e) or not torch.equal(a[inf_e], e[inf_e]):
        raise AssertionError(f"{name}: infinities differ ({int(inf_a.sum())} vs {int(inf_e.sum())} infs, "
                             f"{int((a[inf_e] != e[inf_e]).sum())} of torch's with another value)")
    a, e = a.masked_fill(nan_a | inf_a, 0.0), e.masked_fill(nan_e | inf_e, 0.0)
    err = (a - e).abs()
    bound = atol + rtol * e.abs()
    bad = err > bound
    if bad.any():
        worst = int(torch.argmax(err - bound))
        idx = tuple(int(i) for i in torch.unravel_index(torch.tensor(worst), a.shape))
        rel = (err / e.abs().clamp_min(1e-30)).max().item()
        raise AssertionError(
            f"{name}: {int(bad.sum())}/{a.numel()} elements out of tolerance "
            f"(dtype {actual.dtype}, K={reduction}, tf32={tf32}, atol={atol:.3g}, rtol={rtol:.3g}); "
            f"max abs err {err.max().item():.3g}, max rel err {rel:.3g}; worst at {idx}: "
            f"got {a[idx].item():.6g}, expected {e[idx].item():.6g}; shape {tuple(a.shape)}"
        )


def stored(t64: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A float64 intermediate as an unfused op stores it: rounded to `dtype`, with the
    gradient passed through unchanged (autograd's view of a stored activation).

    For references of fused kernels that, by design, round an intermediate to the storage
    dtype before comparing it (LRN + max-pool, BatchNorm + ReLU + max-pool: the candidates
    of each window, so the winner and its ties are the unfused ops'). In bf16 that rounding
    ties distinct values and moves the argmax, and with it the gradient, in a few windows;
    a float64 reference without it routes those gradients elsewhere. In float32 it changes
    nothing measurable, in float64 nothing at all."""
    return t64 + (t64.detach().to(dtype).to(torch.float64) - t64.detach())


def view_recipe(shape, kind: str, dim: int = 0):
    """(leaf shape, fn): fn(leaf) is a view of `shape` laid out as `kind` says, so a test can
    make a leaf (in any dtype), pass fn(leaf) to the op and compare the leaf's gradients.

      dense       the leaf itself
      sliced      every other element along `dim` (stride doubled)
      offset      the leaf padded by one in every dim, the view starting at [1, 1, ...]
      transposed  the leaf has the dims reversed; the view reverses them back (strides permuted)
      expanded    the leaf has size 1 along `dim`, expanded (stride 0): a gradient summed
                  over shape[dim] values, see `view_fanout`
    """
    shape = tuple(shape)
    dim = dim % max(len(shape), 1)
    if kind == "dense" or not shape:
        return shape, lambda t: t
    if kind == "sliced":
        leaf = tuple(2 * s if i == dim else s for i, s in enumerate(shape))
        index = tuple(slice(None, None, 2) if i == dim else slice(None) for i in range(len(shape)))
        return leaf, lambda t: t[index]
    if kind == "offset":
        return tuple(s + 1 for s in shape), lambda t: t[tuple(slice(1, None) for _ in shape)]
    if kind == "transposed":
        rev = tuple(reversed(range(len(shape))))
        return tuple(reversed(shape)), lambda t: t.permute(rev)
    if kind == "expanded":
        leaf = tuple(1 if i == dim else s for i, s in enumerate(shape))
        return leaf, lambda t: t.expand(shape)
    raise ValueError(f"unknown view kind {kind!r}")


def view_fanout(shape, kind: str, dim: int = 0) -> int:
    """How many of the op's gradient values each leaf gradient value sums (expanded views)."""
    return shape[dim % len(shape)] if kind == "expanded" and len(shape) else 1


def forced_everywhere(path: str):
    """A context that forces `path` (kernels.race) at every conv site: forward, data-grad
    and weight-grad (shapes the path cannot serve still run the generic kernel)."""
    from contextlib import ExitStack

    from kernels import race

    stack = ExitStack()
    for site in race.SITES:
        stack.enter_context(race.forced_path(site, path))
    return stack


# --------------------------------------------------------------------------- kernel launches
class Launch:
    """One `kernel[grid](*args, **kwargs)` call as the launcher made it (before autotuning
    adds its config's meta-parameters)."""

    __slots__ = ("args", "grid", "kwargs", "name")

    def __init__(self, name: str, grid, args: tuple, kwargs: dict):
        self.name, self.grid, self.args, self.kwargs = name, grid, args, kwargs

    def __repr__(self) -> str:
        return f"Launch({self.name}, {sorted(self.kwargs)})"


def triton_kernels() -> dict:
    """Every launchable Triton kernel object in the `kernels` package, by function name
    (prefixed by its module where two modules use one name): the outermost object a
    launcher indexes with `[grid]` (an Autotuner for autotuned kernels). Jit helpers
    called only from inside kernels are listed too; they never launch."""
    import importlib
    import pkgutil

    from triton.runtime.jit import KernelInterface

    import kernels

    found = {}
    for info in pkgutil.iter_modules(kernels.__path__):
        module = importlib.import_module(f"kernels.{info.name}")
        for obj in vars(module).values():
            if isinstance(obj, KernelInterface) and not any(obj is o for o in found.values()):
                fn = obj
                while hasattr(fn, "fn"):  # Autotuner / Heuristics -> JITFunction -> python function
                    fn = fn.fn
                key = fn.__name__ if fn.__name__ not in found else f"{info.name}.{fn.__name__}"
                found[key] = obj
    return found


class LaunchRecorder:
    """Records every Triton kernel launch from the `kernels` package while active.

    `execute=False` records without running the kernel (outputs stay uninitialized): for
    checks of what a model dispatches to, where the interpreter's cost of the arithmetic
    buys nothing. Usage: `with LaunchRecorder() as rec: ...; rec.names()`.
    """

    def __init__(self, execute: bool = True):
        self.execute = execute
        self.launches: list[Launch] = []
        self._saved: list = []

    def __enter__(self) -> LaunchRecorder:
        for name, obj in triton_kernels().items():
            original = obj.run
            had_own = "run" in vars(obj)

            def run(*args, _name=name, _original=original, **kwargs):
                launch_kwargs = {k: v for k, v in kwargs.items() if k not in ("grid", "warmup")}
                self.launches.append(Launch(_name, kwargs.get("grid"), args, launch_kwargs))
                return _original(*args, **kwargs) if self.execute else None

            self._saved.append((obj, had_own, original))
            obj.run = run
        return self

    def __exit__(self, *exc) -> None:
        for obj, had_own, original in reversed(self._saved):
            if had_own:
                obj.run = original
            else:
                del obj.run
        self._saved.clear()

    def names(self, start: int = 0):
        """Launch counts by kernel name (a Counter), from launch number `start` on."""
        from collections import Counter

        return Counter(launch.name for launch in self.launches[start:])


def tolerance_excess(actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype, *, reduction: int = 1,
                     tf32: bool = False, scale: float = 1.0) -> float:
    """The largest |actual - expected| / (atol + rtol * |expected|) under the bound
    `assert_close` applies to a `dtype` result: at most 1 passes, above 1 fails. Lets a
    test show that a wrong formula's answer (computed in float64) would fail the check."""
    atol, rtol = tolerance(dtype, reduction, tf32=tf32)
    a, e = actual.detach().double().cpu(), expected.detach().double().cpu()
    return ((a - e).abs() / (atol * scale + rtol * e.abs())).max().item()


# --------------------------------------------------------------------------- profiler stand-ins
class RecordedRows:
    """A results writer that keeps each row (a dict) in `rows`."""

    def __init__(self):
        self.rows = []

    def write(self, **row):
        self.rows.append(row)


def profiler_run(monkeypatch, *, ms=8.0, p20=7.5, p80=9.0, batch=32, ceilings=None, **args):
    """A `benchmarks.measure.Run` on the CPU whose timer returns (ms, p20, p80) and whose rows
    land in `run.store.results.rows`; `args` add to or replace its command-line arguments."""
    import argparse
    import types

    from benchmarks import measure
    from benchmarks.timing import Timing

    monkeypatch.setattr(measure, "measure", lambda fn, device, **kw: Timing(ms, p20, p80))
    namespace = argparse.Namespace(**{**dict(dtype="fp32", batch_size=batch, image_size=2, rep_ms=10, trace=False,
                                             attribution=False), **args})
    return measure.Run(args=namespace, device=torch.device("cpu"),
                       store=types.SimpleNamespace(results=RecordedRows(), run_id="r1"), ceilings=ceilings or {},
                       bar=types.SimpleNamespace(set_postfix_str=lambda s: None, update=lambda n: None))
