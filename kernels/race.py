"""Per-shape choice between the implementations of one conv pass: the dispatch-level race.

A pass (a *site*: "conv_forward", "conv_forward_stats" (a forward that also gives its output's
BatchNorm statistics), "conv_dgrad", "conv_wgrad") may offer several candidate paths for
one shape, e.g. the dedicated 1x1 GEMM ("gemm1x1", `conv1x1.py`), the stems'
space-to-depth rewrite ("s2d", `stem.py`) or the TMA-fed stride-1 KxK conv ("tma_kxk",
`conv_tma.py`) beside the generic implicit-GEMM kernel
("generic", `conv.py`), which serves every shape and is always a candidate. The kernel
autotuner picks a config within one kernel; this picks the kernel.
The first rule that applies decides:
  1. a forced path (`forced_path(site, path)`), or a `configs.forced_config` on a kernel of
     a candidate: that candidate (sweeps and tests check and time one path so); where
     several candidates launch the forced kernel (the s2d path runs the generic kernels on
     its rewritten conv), the first of them, the generic path: a forced config alone keeps
     measuring the generic kernel, the s2d path at a config is its forced path plus it;
  2. the card's tuned table's dispatch record for (site, dtype, key): its measured winner;
  3. the interpreter, or CONVBENCH_AUTOTUNE=first: the first candidate, the generic kernel
     (a candidate path replaces it only where a race or a measured record says so; the
     tests force each path where they check it, and correctness runs compile one kernel
     per specialization); CONVBENCH_RACE=unrecorded lifts this on the GPU under
     CONVBENCH_AUTOTUNE=first, so a pass no record covers still races its candidates at
     their first configs (the GPU check's nets: e.g. ResNet's conv+BN forwards, site
     conv_forward_stats, which the paths sweep does not time);
  4. this process's earlier race of the same (site, dtype, key, device);
  5. a race on the GPU: each candidate run once (its kernels autotune there), then timed
     with triton's do_bench; the fastest is kept for the process. Not on disk: a card's
     lasting answer is the tuned table's record, written by the GPU sweep from its
     measurements (`benchmarks/gpu_paths.py`).
Each candidate computes the whole pass into fresh or fully overwritten outputs, so running
one several times is safe, unless an output is also one of the pass's inputs: the launcher
then says so (`rerun_safe=False`) and no race runs.

Imports torch, triton and kernels' `configs` and `tuned`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from . import configs, tuned

# conv_forward_stats: the forward that also gives its output's BatchNorm statistics
SITES = ("conv_forward", "conv_forward_stats", "conv_dgrad", "conv_wgrad")
# the order of the launchers' candidates: the generic kernel first
PATHS = ("generic", "gemm1x1", "s2d", "tma_kxk")


@dataclass(frozen=True)
class Candidate:
    """One way to compute a pass: its path name, the kernels it launches (its autotuned
    ones can pin it, rule 1), and a zero-argument closure that runs it."""
    path: str
    kernels: tuple[str, ...]
    run: Callable[[], object]


_FORCED: dict[str, str] = {}
_WON: dict[tuple, str] = {}
# (site, dtype, key, device) -> {path: median ms} of every race run in this process
RACES: dict[tuple, dict[str, float]] = {}


@contextmanager
def forced_path(site: str, path: str):
    """Within the block, `site` runs `path` wherever that path is a candidate (a shape it
    cannot serve still runs the generic kernel)."""
    if site not in SITES:
        raise ValueError(f"site must be one of {SITES}, got {site!r}")
    if path not in PATHS:
        raise ValueError(f"path must be one of {PATHS}, got {path!r}")
    with configs.overriding(_FORCED, site, path):
        yield


def _slot(site: str, key: dict, like: torch.Tensor) -> tuple:
    return (site, str(like.dtype).removeprefix("torch."), tuple(sorted(key.items())), str(like.device))


def choose(site: str, key: dict, like: torch.Tensor, candidates: list[Candidate], *,
           rerun_safe: bool = True) -> Candidate:
    """The candidate that runs this launch (rules in the module docstring). `key`: the
    shape's dispatch key (the tuned table's record key); `like`: a tensor of the pass, for
    its dtype and device. `rerun_safe=False` (an output that is also an input, e.g. written
    in place over the residual) takes the first candidate where a race would have run."""
    if not candidates:
        raise ValueError(f"{site}: no candidate path")
    if len(candidates) == 1:
        return candidates[0]
    by_path = {c.path: c for c in candidates}
    forced = _FORCED.get(site)
    if forced in by_path:
        return by_path[forced]
    pinned = [c for c in candidates if any(k in configs._FORCED for k in c.kernels)]
    if pinned:
        return pinned[0]
    dtype = str(like.dtype).removeprefix("torch.")
    table = tuned.table_for(like.device)
    recorded = table.path(site, key, dtype) if table is not None else None
    if recorded in by_path:
        return by_path[recorded]
    first_only = (os.environ.get("CONVBENCH_AUTOTUNE", "full") == "first"
                  and os.environ.get("CONVBENCH_RACE", "") != "unrecorded")
    if configs.interpreting() or first_only or not rerun_safe:
        return candidates[0]
    slot = _slot(site, key, like)
    if slot not in _WON:
        _WON[slot] = _race(slot, candidates)
    return by_path[_WON[slot]]


def _bench(fn: Callable[[], object]) -> float:
    """Median ms of `fn` on the GPU (CUDA events, L2 flushed between runs)."""
    from triton.testing import do_bench

    return do_bench(fn, warmup=5, rep=20, return_mode="median")


def _race(slot: tuple, candidates: list[Candidate]) -> str:
    times = {}
    for c in candidates:
        c.run()  # compiles and autotunes its kernels outside the timing
        times[c.path] = _bench(c.run)
    RACES[slot] = times
    return min(times, key=times.get)
