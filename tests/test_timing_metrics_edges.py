"""The edges of the timing and error numbers: the CPU timer as it really runs, the defaults the
profiler relies on, single and missing samples, and max_rel_error where the reference or the
result holds NaN or inf, where float32 differences round, and on the caller's tensors."""

from __future__ import annotations

import math
import types

import pytest
import torch
import torch.utils.benchmark as tbench
import triton.testing

from benchmarks.metrics import derive, max_rel_error
from benchmarks.timing import MIN_SAMPLES, Timing, first_call_s, measure, summarize, synchronized


# --------------------------------------------------------------------------- timing
def test_cpu_measure_with_the_real_timer_runs_fn_with_torchs_threads(monkeypatch):
    made = []

    class Spy(tbench.Timer):
        def __init__(self, *args, **kwargs):
            made.append(kwargs)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(tbench, "Timer", Spy)
    calls = []
    t = measure(lambda: calls.append(1), "cpu", cpu_min_run_s=0.01)
    assert made[0]["num_threads"] == torch.get_num_threads()
    assert t.samples >= MIN_SAMPLES and len(calls) > t.samples  # the warm-up call, then every timed run
    assert 0 < t.p20 <= t.ms <= t.p80 < 1.0  # an empty lambda: well under a millisecond per call


def test_cpu_measure_defaults_and_the_top_up_to_min_samples(monkeypatch):
    """A call longer than the budget gives one block: blocks of the same size are added until
    there are MIN_SAMPLES."""
    seen = {}

    class OneBlock:
        def __init__(self, stmt, globals, num_threads):
            self.fn = globals["fn"]

        def blocked_autorange(self, min_run_time):
            seen["min_run_time"] = min_run_time
            return types.SimpleNamespace(times=[0.004], number_per_run=3)  # 4 ms per call

        def timeit(self, number):
            seen.setdefault("numbers", []).append(number)
            return types.SimpleNamespace(times=[0.002 * len(seen["numbers"])])  # 2, 4, 6, 8 ms

    monkeypatch.setattr(tbench, "Timer", OneBlock)
    t = measure(lambda: None, "cpu")
    assert seen["min_run_time"] == 0.2  # the default CPU budget: 0.2 s of runs
    assert seen["numbers"] == [3] * (MIN_SAMPLES - 1)
    # samples 4, 2, 4, 6, 8 ms: median 4, p20 = 2 + 0.8 x (4 - 2) = 3.6, p80 = 6 + 0.2 x (8 - 6) = 6.4
    assert (t.ms, t.p20, t.p80, t.samples) == pytest.approx((4.0, 3.6, 6.4, 5))


def test_gpu_measure_default_budget(monkeypatch):
    seen = {}

    def do_bench(fn, warmup, rep, quantiles):
        seen.update(warmup=warmup, rep=rep, quantiles=quantiles)
        return [2.0, 1.0, 3.0]

    monkeypatch.setattr(triton.testing, "do_bench", do_bench)
    assert measure(lambda: None, "cuda") == Timing(2.0, 1.0, 3.0)
    assert seen == {"warmup": 25, "rep": 100, "quantiles": [0.5, 0.2, 0.8]}


def test_summarize_one_sample_and_none():
    assert summarize([2.5]) == Timing(2.5, 2.5, 2.5, 1)
    with pytest.raises(ValueError, match=r"^summarize: no samples$"):
        summarize([])


def test_synchronized_waits_for_the_device_only_on_cuda(monkeypatch):
    fn = lambda: 7
    assert synchronized(fn, "cpu") is fn
    events = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda: events.append("sync"))
    run = synchronized(lambda: events.append("fn") or 7, "cuda")
    assert run() == 7 and events == ["fn", "sync"]


def test_first_call_time_waits_for_the_device_on_cuda(monkeypatch):
    """The first call of a whole-network pass (summary.json's first_call_s) is timed until the
    device is done: on a GPU the host returns from the launches long before (the device's part
    stands in for a fake synchronize that takes 50 ms here)."""
    import time

    events = []

    def device_done(device=None):
        events.append("sync")
        time.sleep(0.05)

    monkeypatch.setattr(torch.cuda, "synchronize", device_done)
    seconds = first_call_s(lambda: events.append("fn"), "cuda")
    assert events == ["sync", "fn", "sync"] and seconds >= 0.05
    events.clear()
    assert first_call_s(lambda: events.append("fn"), "cpu") < 0.05 and events == ["fn"]


# --------------------------------------------------------------------------- max_rel_error
def _t(*values, dtype=torch.float64):
    return torch.tensor(values, dtype=dtype)


def test_empty_and_single_elements():
    assert max_rel_error(_t(), _t()) == 0.0
    assert max_rel_error(_t(3.0), _t(4.0)) == pytest.approx(0.25, rel=1e-15)  # |3 - 4| / 4


def test_a_float32_result_is_subtracted_in_float64():
    # float32 3 against the float64 1/3: 8/3 exactly in float64; a float32 difference would round it.
    got = max_rel_error(_t(3.0, dtype=torch.float32), _t(1 / 3))
    assert got == pytest.approx((3.0 - 1 / 3) / (1 / 3), rel=1e-15)


def test_the_callers_tensors_are_left_alone():
    actual, expected = _t(1.0, 2.0), _t(1.5, 2.0)
    assert max_rel_error(actual, expected) == pytest.approx(0.25)  # 0.5 / 2
    assert actual.tolist() == [1.0, 2.0] and expected.tolist() == [1.5, 2.0]


@pytest.mark.parametrize("actual, expected, want", [
    # Non-finite where the reference is not finite either: that element is not counted, in
    # the error or in the reference's scale; the rest: |0.75 - 0.5| / 0.5.
    ((math.nan, 0.75), (math.nan, 0.5), 0.5),
    ((2.0, 0.75), (math.nan, 0.5), 0.5),
    ((math.inf, 0.75), (-math.inf, 0.5), 0.5),
    ((-math.inf, 0.75), (math.inf, 0.5), 0.5),
    ((1.0, 0.75), (math.inf, 0.5), 0.5),
    ((1.0, 0.75), (-math.inf, 0.5), 0.5),
    # Where the reference is finite, a NaN gives NaN and an inf gives inf.
    ((math.nan, 0.75), (1.0, 0.5), math.nan),
    ((math.inf, 0.75), (1.0, 0.5), math.inf),
    ((-math.inf, 0.75), (1.0, 0.5), math.inf),
    ((math.nan, math.inf), (1.0, 0.5), math.nan),
    # A reference under 1 in magnitude still divides: 0.25 / 0.5.
    ((0.25, 0.75), (0.25, 0.5), 0.5),
    # An all-zero reference: the absolute error.
    ((0.0, 0.25), (0.0, 0.0), 0.25),
])
def test_non_finite_elements(actual, expected, want):
    got = max_rel_error(_t(*actual), _t(*expected))
    if math.isnan(want):
        assert math.isnan(got)
    else:
        assert got == pytest.approx(want, rel=1e-15)


def test_derive_holds_rows_without_a_dtype_to_the_float32_peak():
    # 2e12 FLOP in 4 ms = 500 TFLOP/s; 500 / 800 (the float32 peak, not bfloat16's 1600) = 62.5 %.
    ceilings = {"matmul_tflops": {"float32": 800.0, "bfloat16": 1600.0}}
    assert derive(4.0, flops=2e12, ceilings=ceilings)["pct_peak"] == pytest.approx(62.5, rel=1e-12)


def test_speedup_over_a_baseline_under_a_millisecond():
    # torch takes 0.5 ms, we take 0.25 ms: 2x.
    assert derive(0.25, baseline_ms=0.5)["speedup"] == pytest.approx(2.0, rel=1e-12)
