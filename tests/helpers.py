"""Shared test helpers: the float64 reference comparison; its tolerance table lives in
`benchmarks.tolerance` (the profiler derives its correctness bounds from the same function).

Tolerances are derived from each dtype's unit roundoff, not tuned to make tests pass:
the output is rounded once (rtol), and the fp32 accumulator plus any rounding of the
dot-product inputs (TF32) adds an absolute error that grows like sqrt(K) for a sum of K
independent products of unit-scale values. K is the reduction length of the op under test
(C*R*S for a conv forward, N*P*Q for its weight gradient).
"""

from __future__ import annotations

import torch

from benchmarks.tolerance import ROUNDOFF, tolerance  # noqa: F401 (re-exported for the tests)


def assert_close(actual: torch.Tensor, expected: torch.Tensor, *, reduction: int = 1,
                 tf32: bool = False, scale: float = 1.0, name: str = "output") -> None:
    """Assert `actual` matches a float64 `expected` within `tolerance(actual.dtype, ...)`.

    `scale` multiplies atol for quantities whose unit-scale terms are larger than 1 (e.g. a
    gradient summed over upstream values of size `scale`). NaNs must sit in the same places.
    On failure the message carries the max errors, where they occur, and the bound.
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
    a, e = a.masked_fill(nan_a, 0.0), e.masked_fill(nan_e, 0.0)
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
