"""Timing that measures the device: CUDA events via `triton.testing.do_bench` on a GPU (L2
flushed between runs), `torch.utils.benchmark.Timer` on CPU. Both give median and the
20th / 80th percentiles in milliseconds, and how many samples they come from (on CPU never
fewer than MIN_SAMPLES, so the 20-80 band is a measured spread, not one sample twice)."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class Timing:
    ms: float
    p20: float
    p80: float
    samples: int | None = None  # None: do_bench does not report its count

    @property
    def spread(self) -> float:
        """Relative width of the 20-80 band: the run's own noise."""
        return (self.p80 - self.p20) / self.ms if self.ms > 0 else float("nan")


MIN_SAMPLES = 5


def summarize(times_ms) -> Timing:
    """Median, 20th and 80th percentile of per-call times in ms."""
    times = np.asarray(times_ms, dtype=float)
    if times.size == 0:
        raise ValueError("summarize: no samples")
    return Timing(float(np.median(times)), float(np.percentile(times, 20)), float(np.percentile(times, 80)),
                  int(times.size))


def measure(fn, device: torch.device | str, *, warmup_ms: float = 25, rep_ms: float = 100,
            cpu_min_run_s: float = 0.2) -> Timing:
    """Median / p20 / p80 of `fn()` in ms on `device`."""
    if torch.device(device).type == "cuda":
        from triton.testing import do_bench

        ms, p20, p80 = do_bench(fn, warmup=warmup_ms, rep=rep_ms, quantiles=[0.5, 0.2, 0.8])
        return Timing(float(ms), float(p20), float(p80))
    import torch.utils.benchmark as tbench

    fn()  # warm up (first-call allocations, lazy init)
    # Timer defaults to one thread; time with the threads torch would use anyway.
    timer = tbench.Timer(stmt="fn()", globals={"fn": fn}, num_threads=torch.get_num_threads())
    m = timer.blocked_autorange(min_run_time=cpu_min_run_s)
    times = list(m.times)
    # A call longer than the budget gives one block: time more, one block each.
    while len(times) < MIN_SAMPLES:
        times.extend(timer.timeit(m.number_per_run).times)
    return summarize(np.asarray(times) * 1e3)


def first_call_s(fn, device: torch.device | str) -> float:
    """Seconds from calling `fn` once until the device has finished it: a GPU runs launches
    asynchronously, so the host's return alone would leave the device's part out."""
    cuda = torch.device(device).type == "cuda"
    if cuda:
        torch.cuda.synchronize(device)  # nothing earlier counted in
    start = time.perf_counter()
    fn()
    if cuda:
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def synchronized(fn, device):
    """`fn` followed by a device synchronize: what pytest-benchmark's wall clock should time."""
    if torch.device(device).type != "cuda":
        return fn

    def run():
        out = fn()
        torch.cuda.synchronize()
        return out

    return run
