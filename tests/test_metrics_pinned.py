"""Every number the harness derives, pinned to a value worked out by hand from known inputs.

The clocks are replaced by known samples (triton's do_bench on the GPU path, torch's Timer
on the CPU path, `measure` for the profiler and the ceilings), so the statistics, rates,
% of ceiling, speedups and images/s can be checked exactly. Expected values are written out
as numbers with their arithmetic in a comment, never computed by the formula under test.
The samples are skewed (mean far from median) and unsorted, so a mean for a median, a swapped
percentile or a factor of 1000 / 2 / 10 anywhere gives a different number.
"""

from __future__ import annotations

import math
import types

import pytest
import torch
import triton.testing
from torch import nn

from benchmarks import ceilings, measure, metrics, timing
from benchmarks.timing import Timing
from tests.helpers import profiler_run

# Per-run times in ms, unsorted, one slow outlier: median 3, mean 22.
SAMPLE_MS = [4.0, 1.0, 100.0, 3.0, 2.0]
# Sorted 1, 2, 3, 4, 100 with linear interpolation (numpy's and torch.quantile's default):
MEDIAN = 3.0
P20 = 1.8  # position 0.2 x 4 = 0.8: 1 + 0.8 x (2 - 1)
P80 = 23.2  # position 0.8 x 4 = 3.2: 4 + 0.2 x (100 - 4)


def _fake_do_bench(fn, warmup=25, rep=100, grad_to_none=None, quantiles=None, return_mode="mean"):
    """triton.testing.do_bench's contract over SAMPLE_MS: the requested quantiles in the
    requested order, else the statistic `return_mode` names."""
    fn()
    times = torch.tensor(SAMPLE_MS, dtype=torch.float64)
    if quantiles is not None:
        out = torch.quantile(times, torch.tensor(quantiles, dtype=torch.float64)).tolist()
        return out[0] if len(out) == 1 else out
    return {"mean": times.mean(), "median": times.median(), "min": times.min(), "max": times.max()}[return_mode].item()


# --------------------------------------------------------------------------- timing
def test_gpu_timing_is_median_p20_p80_of_do_bench(monkeypatch):
    calls = []

    def do_bench(fn, **kwargs):
        calls.append(kwargs)
        return _fake_do_bench(fn, **kwargs)

    monkeypatch.setattr(triton.testing, "do_bench", do_bench)
    t = timing.measure(lambda: None, "cuda", warmup_ms=7, rep_ms=70)
    assert (t.ms, t.p20, t.p80) == pytest.approx((MEDIAN, P20, P80), rel=1e-12)
    assert calls[0]["warmup"] == 7 and calls[0]["rep"] == 70


def test_cpu_timing_is_median_p20_p80_of_the_timer_runs(monkeypatch):
    import torch.utils.benchmark as tbench

    class FakeTimer:
        def __init__(self, stmt, globals, num_threads):
            self.fn = globals["fn"]

        def blocked_autorange(self, min_run_time):
            self.fn()
            return types.SimpleNamespace(times=[ms * 1e-3 for ms in SAMPLE_MS])  # seconds per run

    monkeypatch.setattr(tbench, "Timer", FakeTimer)
    calls = []
    t = timing.measure(lambda: calls.append(1), "cpu")
    assert (t.ms, t.p20, t.p80) == pytest.approx((MEDIAN, P20, P80), rel=1e-12)
    assert len(calls) == 2  # one warm-up call, then the timer's


def test_spread_is_the_20_80_band_over_the_median():
    assert Timing(ms=3.0, p20=1.8, p80=23.2).spread == pytest.approx(7.133333333333333)  # 21.4 / 3
    assert Timing(ms=2.0, p20=1.5, p80=2.5).spread == pytest.approx(0.5)
    assert math.isnan(Timing(ms=0.0, p20=0.0, p80=0.0).spread)


# --------------------------------------------------------------------------- metrics
CEILINGS = {"matmul_tflops": {"float32": 800.0, "bfloat16": 1600.0}, "copy_gbps": 3000.0}


def test_tflops_and_percent_of_matmul_peak():
    # 2e12 FLOP in 4 ms: 2e12 / 0.004 s = 5e14 FLOP/s = 500 TFLOP/s; 500 / 800 = 62.5 %.
    m = metrics.derive(4.0, flops=2e12, ceilings=CEILINGS, dtype="float32")
    assert m["tflops"] == pytest.approx(500.0, rel=1e-12)
    assert m["pct_peak"] == pytest.approx(62.5, rel=1e-12)
    assert (m["ceiling"], m["ceiling_value"], m["ceiling_unit"]) == ("measured float32 matmul", 800.0, "TFLOP/s")
    assert m["gbps"] is None and m["speedup"] is None
    # bf16 rows are held to the bf16 peak: 500 / 1600 = 31.25 %.
    assert metrics.derive(4.0, flops=2e12, ceilings=CEILINGS, dtype="bfloat16")["pct_peak"] == pytest.approx(31.25)


def test_gbps_and_percent_of_copy_bandwidth():
    # 3e9 bytes in 2 ms: 3e9 / 0.002 s = 1.5e12 B/s = 1500 GB/s; 1500 / 3000 = 50 %.
    m = metrics.derive(2.0, nbytes=3e9, ceilings=CEILINGS, dtype="float32")
    assert m["gbps"] == pytest.approx(1500.0, rel=1e-12)
    assert m["pct_peak"] == pytest.approx(50.0, rel=1e-12)
    assert (m["ceiling"], m["ceiling_value"], m["ceiling_unit"]) == ("measured copy", 3000.0, "GB/s")
    assert m["tflops"] is None


def test_flop_counted_op_with_bytes_is_held_to_the_matmul_peak():
    # 8e11 FLOP and 1e9 bytes in 1 ms: 800 TFLOP/s (100 % of 800), 1000 GB/s.
    m = metrics.derive(1.0, flops=8e11, nbytes=1e9, ceilings=CEILINGS, dtype="float32")
    assert (m["tflops"], m["gbps"], m["pct_peak"]) == pytest.approx((800.0, 1000.0, 100.0), rel=1e-12)


def test_speedup_is_baseline_time_over_our_time():
    # torch takes 6 ms, we take 4 ms: 1.5x faster (> 1 means faster than the baseline).
    assert metrics.derive(4.0, baseline_ms=6.0)["speedup"] == pytest.approx(1.5, rel=1e-12)
    assert metrics.derive(8.0, baseline_ms=2.0)["speedup"] == pytest.approx(0.25, rel=1e-12)
    assert metrics.derive(4.0, baseline_ms=0.0)["speedup"] is None
    assert metrics.derive(4.0, baseline_ms=None)["speedup"] is None


@pytest.mark.parametrize("ms", [0.0, -1.0, float("nan"), None])
def test_no_rates_without_a_valid_time(ms):
    assert metrics.derive(ms, flops=1e12, nbytes=1e9, ceilings=CEILINGS, baseline_ms=1.0) == {
        "tflops": None, "gbps": None, "pct_peak": None, "ceiling": None, "ceiling_value": None,
        "ceiling_unit": None, "speedup": None}


def test_no_percent_without_that_ceiling():
    assert metrics.derive(1.0, flops=1e12, ceilings={}, dtype="float32")["pct_peak"] is None
    assert metrics.derive(1.0, flops=1e12, ceilings=CEILINGS, dtype="float16")["pct_peak"] is None


def test_max_rel_error_is_max_abs_error_over_max_abs_reference():
    actual = torch.tensor([1.0, 2.5, -3.0], dtype=torch.float32)
    expected = torch.tensor([1.0, 2.0, -4.0], dtype=torch.float64)
    assert metrics.max_rel_error(actual, expected) == pytest.approx(0.25, rel=1e-12)  # max(0, .5, 1) / 4
    zero = torch.zeros(3, dtype=torch.float64)
    assert metrics.max_rel_error(torch.tensor([0.0, -0.5, 0.25]), zero) == pytest.approx(0.5)  # absolute
    assert math.isnan(metrics.max_rel_error(torch.tensor([float("nan"), 1.0]), torch.tensor([1.0, 1.0])))


# --------------------------------------------------------------------------- ceilings
def test_measured_ceilings_from_known_times(monkeypatch):
    times = iter([Timing(2.0, 1.9, 2.1), Timing(1.0, 0.9, 1.1)])  # the matmul, then the copy
    monkeypatch.setattr(ceilings, "measure", lambda fn, device: next(times))
    out = ceilings.measure_ceilings("cpu", ("float32",), size=100)
    # 2 x 100**3 = 2e6 FLOP in 2 ms: 1e9 FLOP/s = 0.001 TFLOP/s.
    assert out["matmul_tflops"] == {"float32": pytest.approx(1e-3, rel=1e-12)}
    # 2**24 fp32 read + written = 2 x 67,108,864 bytes in 1 ms: 134.217728 GB/s.
    assert out["copy_gbps"] == pytest.approx(134.217728, rel=1e-12)


# --------------------------------------------------------------------------- profiler rows
def _run(monkeypatch, ms=8.0, p20=7.5, p80=9.0, batch=32) -> measure.Run:
    return profiler_run(monkeypatch, ms=ms, p20=p20, p80=p80, batch=batch, ceilings=CEILINGS)


def test_profiler_row_numbers(monkeypatch):
    run = _run(monkeypatch)
    run.timed_row("alexnet", "torch", "train", "features.conv1", "fwd", lambda: None,
                  flops=4e9, nbytes=2e9, images=32)
    (row,) = run.store.results.rows
    assert (row["ms"], row["ms_p20"], row["ms_p80"]) == (8.0, 7.5, 9.0)
    assert row["gflop"] == pytest.approx(4.0) and row["gbytes"] == pytest.approx(2.0)
    assert row["tflops"] == pytest.approx(0.5, rel=1e-12)      # 4e9 / 0.008 s = 5e11 FLOP/s
    assert row["gbps"] == pytest.approx(250.0, rel=1e-12)      # 2e9 / 0.008 s = 2.5e11 B/s
    assert row["pct_peak"] == pytest.approx(0.0625, rel=1e-12)  # 0.5 / 800 x 100
    assert row["images_per_s"] == pytest.approx(4000.0, rel=1e-12)  # 32 images / 0.008 s


@pytest.mark.parametrize("mode", ["infer", "train"])
def test_profiler_network_images_per_second(mode, monkeypatch):
    run = _run(monkeypatch, ms=16.0, batch=4)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 10))
    x, y = torch.randn(4, 3, 2, 2), torch.tensor([0, 1, 2, 3])
    entry = measure.profile_network(run, "alexnet", "torch", mode, model, x, y, (1e9, 2e9))
    assert entry["images_per_s"] == pytest.approx(250.0, rel=1e-12)  # 4 images / 0.016 s
    rows = {row["pass"]: row for row in run.store.results.rows}
    assert all("status" not in row for row in rows.values()), rows
    for row in rows.values():
        assert row["ms"] == 16.0 and row["images_per_s"] == pytest.approx(250.0, rel=1e-12)
    # forward 1e9 FLOP / 0.016 s = 0.0625 TFLOP/s; forward + backward 3e9 / 0.016 s = 0.1875
    tflops = 0.0625 if mode == "infer" else 0.1875
    assert all(row["tflops"] == pytest.approx(tflops, rel=1e-12) for row in rows.values())


def test_float32_on_a_gpu_is_judged_against_the_ceiling_its_convs_run_at(monkeypatch):
    """A GPU's float32 has two matmul ceilings; convs run TF32 exactly when
    cudnn.allow_tf32 is True, and a % of peak against the IEEE ceiling would read several
    times too high. Both are measured, "float32" is the convs' one, and the row names it."""
    rates = {True: 400.0, False: 50.0}  # matmul TFLOP/s with and without TF32
    monkeypatch.setattr(ceilings, "_matmul_tflops",
                        lambda device, dtype, n: rates[torch.backends.cuda.matmul.allow_tf32])
    monkeypatch.setattr(ceilings, "_copy_gbps", lambda device, numel: 3000.0)
    monkeypatch.setattr(ceilings, "device_name", lambda device: "NVIDIA H100 80GB HBM3")
    settings = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    try:
        torch.backends.cuda.matmul.allow_tf32 = False
        for conv_tf32, peak, sheet, name in ((True, 400.0, 494.0, "TF32"), (False, 50.0, 67.0, "IEEE")):
            torch.backends.cudnn.allow_tf32 = conv_tf32
            c = ceilings.measure_ceilings("cuda", ("float32",))
            assert c["matmul_tflops"] == {"tf32": 400.0, "float32_ieee": 50.0, "float32": peak}
            assert c["fp32_conv_uses_tf32"] is conv_tf32 and c["datasheet"]["matmul_tflops"]["float32"] == sheet
            assert torch.backends.cuda.matmul.allow_tf32 is False  # the caller's setting, restored
            # 2e12 FLOP in 20 ms = 100 TFLOP/s: 25 % of TF32's 400, 200 % of IEEE's 50
            m = metrics.derive(20.0, flops=2e12, ceilings=c, dtype="float32")
            assert m["pct_peak"] == pytest.approx(100.0 / peak * 100)
            assert (m["ceiling"], m["ceiling_value"]) == (f"measured float32 ({name}) matmul", peak)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = settings
