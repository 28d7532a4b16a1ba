"""Error bounds derived from each dtype's unit roundoff, shared by the tests and the
profiler's correctness columns. Pure: torch dtypes in, numbers out.

Tolerances are derived, not tuned to make results pass: the output is rounded once (rtol),
and the fp32 accumulator plus any rounding of the dot-product inputs (TF32) adds an
absolute error that grows like sqrt(K) for a sum of K independent products of unit-scale
values. K is the reduction length of the op (C*R*S for a conv forward, N*P*Q for its
weight gradient). float64 results accumulate in float64, so the accumulation term uses
float64's roundoff for them.
"""

from __future__ import annotations

import math

import torch

# Unit roundoff u = 2**-(mantissa bits + 1) of each dtype, and of TF32 dot inputs.
ROUNDOFF = {
    torch.float64: 2.0**-53,
    torch.float32: 2.0**-24,
    "tf32": 2.0**-11,  # the mean loss of a truncated TF32 input (half its 2**-10 step)
    torch.float16: 2.0**-11,
    torch.bfloat16: 2.0**-8,
}
_FP32 = 2.0**-24


def tolerance(dtype: torch.dtype, reduction: int = 1, *, tf32: bool = False) -> tuple[float, float]:
    """Return (atol, rtol) for a `dtype` result against a float64 reference computed from
    the same (already rounded) inputs.

    Every kernel accumulates in fp32 (float64 in float64) and rounds its result once to `dtype`:
      rtol = 2u                                the final rounding (u = dtype's roundoff)
      atol = u                                 the same rounding near zero, unit-scale terms
           + 16 * ua * sqrt(K) * log2(K+1)      accumulation of K unit-scale products, ua the
                                               accumulator's roundoff (2**-24, or 2**-53)
           + 4 * 2**-11 * sqrt(K)               (tf32 only) the scatter of the input truncation
      rtol += 2 * 2**-11                       (tf32 only) the bias of the input truncation
    Products of half inputs are exact in fp32, so half dtypes add no input term.

    TF32 inputs are truncated, not rounded: triton hands the fp32 operands to the tensor
    cores (wgmma ... .tf32 on sm_90) with no cvt.rna.tf32 in its PTX (triton 3.6, read from
    scripts/compile_check.py's lowering), and the hardware drops the low 13 mantissa bits.
    Each input loses a fraction in [0, 2**-10) of its magnitude, 2**-11 at most on average:
    every product shrinks by at most 2 * 2**-11 on average, a bias proportional to the
    result (the rtol term), plus a zero-mean scatter of K terms (std <= 0.82 * 2**-11 *
    sqrt(K) for unit-scale products; the atol term is 4.9 of those). Simulated in float64
    on the real conv layers, truncation with the atol term alone exceeded the bound by up
    to 2.35x; round-to-nearest reached 1.00x.
    """
    u = ROUNDOFF[dtype]
    k = max(int(reduction), 1)
    acc = ROUNDOFF[torch.float64] if dtype == torch.float64 else _FP32
    atol = u + 16 * acc * math.sqrt(k) * math.log2(k + 1)
    rtol = 2 * u
    if tf32 and dtype == torch.float32:
        atol += 4 * ROUNDOFF["tf32"] * math.sqrt(k)
        rtol += 2 * ROUNDOFF["tf32"]
    return atol, rtol


def relative_bound(dtype: torch.dtype, reduction: int = 1, *, tf32: bool = False) -> float:
    """The bound on max |out - ref| / max |ref| that `tolerance` implies when the reference's
    largest value sets the scale: atol + rtol (each element's error is at most
    atol * scale + rtol * |ref|, and |ref| <= max |ref| = scale)."""
    atol, rtol = tolerance(dtype, reduction, tf32=tf32)
    return atol + rtol
