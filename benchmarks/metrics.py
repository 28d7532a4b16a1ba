"""The one place where rates, % of ceiling and speedups are derived from a time."""

from __future__ import annotations

import math

import torch


def derive(ms: float, *, flops: float | None = None, nbytes: float | None = None, ceilings: dict | None = None,
           dtype: str = "float32", baseline_ms: float | None = None) -> dict:
    """From a median time: TFLOP/s and/or GB/s, % of the measured ceiling that bounds the op
    (matmul peak for FLOP-counted ops, copy bandwidth for byte-counted ones), that ceiling's
    name, value and unit, and the speedup over a baseline time (baseline / ms). float32 on a
    GPU is judged against the ceiling its convs run at (`ceilings.measure_ceilings`)."""
    out = {"tflops": None, "gbps": None, "pct_peak": None, "ceiling": None, "ceiling_value": None,
           "ceiling_unit": None, "speedup": None}
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
        name = dtype
        if dtype == "float32" and "fp32_conv_uses_tf32" in ceilings:  # a GPU: which of its two
            name = "float32 (TF32)" if ceilings["fp32_conv_uses_tf32"] else "float32 (IEEE)"
        out.update(ceiling=f"measured {name} matmul", ceiling_value=peak, ceiling_unit="TFLOP/s")
    elif out["gbps"] is not None and ceilings.get("copy_gbps"):
        out["pct_peak"] = 100.0 * out["gbps"] / ceilings["copy_gbps"]
        out.update(ceiling="measured copy", ceiling_value=ceilings["copy_gbps"], ceiling_unit="GB/s")
    if baseline_ms and baseline_ms > 0:
        out["speedup"] = baseline_ms / ms
    return out


def max_rel_error(actual, expected) -> float:
    """max |a - e| / max |e| against a higher-precision reference (one number a reader can
    compare). A NaN (or inf) in `actual` where the reference is finite gives NaN (or inf):
    `reports.schema.beyond_tolerance` counts a missing error beside a bound as beyond it."""
    if actual.numel() == 0:
        return 0.0
    e = expected.detach().to(torch.float64)
    diff = actual.detach().to(device=e.device, dtype=torch.float64, copy=True).sub_(e).abs_()
    worst = diff.max().item()
    if not math.isfinite(worst):  # a NaN or inf somewhere: count it only where e is finite
        bad = diff[~diff.isfinite() & e.isfinite()]
        if bad.numel():
            return math.nan if bad.isnan().any() else math.inf
        worst = diff.nan_to_num_(0.0, posinf=0.0).max().item()
    denom = torch.linalg.vector_norm(e.nan_to_num(0.0, posinf=0.0, neginf=0.0), math.inf).item()
    return worst / denom if denom > 0 else worst
