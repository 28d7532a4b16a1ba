"""The one place where rates, % of ceiling and speedups are derived from a time."""

from __future__ import annotations

import math


def derive(ms: float, *, flops: float | None = None, nbytes: float | None = None, ceilings: dict | None = None,
           dtype: str = "float32", baseline_ms: float | None = None) -> dict:
    """From a median time: TFLOP/s and/or GB/s, % of the measured ceiling that bounds the op
    (matmul peak for FLOP-counted ops, copy bandwidth for byte-counted ones), the name of
    that ceiling, and the speedup over a baseline time (baseline / ms)."""
    out = {"tflops": None, "gbps": None, "pct_peak": None, "ceiling": None, "speedup": None}
    if not ms or ms <= 0 or math.isnan(ms):
        return out
    seconds = ms * 1e-3
    if flops:
        out["tflops"] = flops / seconds / 1e12
    if nbytes:
        out["gbps"] = nbytes / seconds / 1e9
    ceilings = ceilings or {}
    peak = (ceilings.get("matmul_tflops") or {}).get(dtype)
    if out["tflops"] is not None and peak:
        out["pct_peak"] = 100.0 * out["tflops"] / peak
        out["ceiling"] = f"measured {dtype} matmul {peak:.3g} TFLOP/s"
    elif out["gbps"] is not None and ceilings.get("copy_gbps"):
        out["pct_peak"] = 100.0 * out["gbps"] / ceilings["copy_gbps"]
        out["ceiling"] = f"measured copy {ceilings['copy_gbps']:.4g} GB/s"
    if baseline_ms and baseline_ms > 0:
        out["speedup"] = baseline_ms / ms
    return out


def max_rel_error(actual, expected) -> float:
    """max |a - e| / max |e| against a float64 reference (one number a reader can compare)."""
    a = actual.detach().double()
    e = expected.detach().double().to(a.device)
    denom = e.abs().max().item()
    return (a - e).abs().max().item() / denom if denom > 0 else (a - e).abs().max().item()
