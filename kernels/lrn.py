"""Local response normalization across channels in Triton, forward and backward.

Tiers: `_lrn_fwd_kernel`, `_lrn_bwd_kernel` -> launchers `lrn_forward`, `lrn_backward` ->
`LocalResponseNormFunction` -> `LocalResponseNorm` module.

Semantics are exactly `F.local_response_norm`: with LO = size // 2 channels below and
HI = (size - 1) // 2 above (torch's placement for even sizes),
    scale[c] = k + alpha / size * sum_{c' = c-LO}^{c+HI} x[c']**2,  d[c] = scale[c]**beta,  y[c] = x[c] / d[c]
    dx[j]    = dy[j] / d[j] - 2 * alpha / size * x[j] * sum_{i = j-HI}^{j+LO} u[i],
    u[i]     = dy[i] * (x[i] / d[i]) / d[i] * beta * scale[i]**(beta-1)     (0 when beta == 0)
in the order torch's autograd evaluates them, with torch's pow: a negative scale to an
integer power is a number (alpha < 0 is legal), 0**0 = 1, a negative scale to a fractional
power is NaN; so NaN and inf land where torch's do (e.g. x = 0 with k = 0, beta > 0).
Accumulation is fp32 (fp64 for fp64 tensors); alpha, beta and k reach the kernels as fp64
scalars, cast to the accumulator's dtype.

One pass over memory each way. A program owns a block of spatial positions and *all* C
channels of them (C <= MAX_CHANNELS); the window is read as `size` shifted loads of the
same tile, which hit L1, so HBM sees x read once and y written once in forward.

Backward recomputes the scale instead of saving it. Memory/time trade: saving it would cost
one extra tensor written in forward and read in backward (5 tensor passes in all, plus the
activation memory held until backward); recomputing costs `size` more L1 reads per element
and keeps the traffic at x + y forward, x + dy + dx backward (5 passes -> 5, but nothing
extra held between the passes: only x is saved). The second sum needs u at neighbouring
channels, which live in other threads' registers: each program writes u into its own tile
of dx as scratch, synchronizes, reads it back shifted, synchronizes again, then overwrites
dx with the result. The scratch stays in L2; in half precision it is rounded to the storage
dtype, an error below the output's own rounding because the second term is scaled by
2*alpha/size * beta (3e-5 at AlexNet's settings).
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from ._utils import check_float_tensor, check_same, dense, dense_like, describe, needs_int64, no_launch
from .configs import autotune

MAX_CHANNELS = 16384


def _prune_tiles(configs_, named_args, **kwargs):
    """Keep tiles of at most 16K elements (and at least 1 position) for this BLOCK_C."""
    block_c = kwargs.get("BLOCK_C", named_args.get("BLOCK_C"))
    kept = [c for c in configs_ if c.kwargs["BLOCK_P"] * block_c <= 16384]
    return kept or [min(configs_, key=lambda c: c.kwargs["BLOCK_P"])]


def _lrn_autotune(fn):
    # Re-runnable as is: the backward's dx scratch is written before it is read in each tile.
    return autotune("lrn", key=["C", "L", "SIZE", "BLOCK_C"],
                    prune_configs_by={"early_config_prune": _prune_tiles})(fn)


@triton.jit
def _tile(L, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr, INDEX_64: tl.constexpr):
    """This program's image n, its BLOCK_P positions (and their mask) and channel offsets."""
    n = tl.program_id(1)
    offs_p = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
    if INDEX_64:
        n = n.to(tl.int64)
        offs_p = offs_p.to(tl.int64)
    return n, offs_p, tl.arange(0, BLOCK_C), offs_p < L


@triton.jit
def _window_sumsq(x_ptr, row, offs_c, mask_p, C, sc, SIZE: tl.constexpr,
                  BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr, ACC: tl.constexpr):
    """(sum of x**2 over each channel's window [c - SIZE//2, c + (SIZE-1)//2], x itself) in
    ACC, from SIZE shifted loads of one tile (L1 hits after the first)."""
    sumsq = tl.zeros((BLOCK_P, BLOCK_C), dtype=ACC)
    center = tl.zeros((BLOCK_P, BLOCK_C), dtype=ACC)
    for d in tl.static_range(-(SIZE // 2), (SIZE - 1) // 2 + 1):
        cc = offs_c + d
        v = tl.load(x_ptr + row + cc[None, :] * sc, mask=mask_p[:, None] & ((cc >= 0) & (cc < C))[None, :],
                    other=0.0).to(ACC)
        sumsq += v * v
        if d == 0:
            center = v
    return sumsq, center


@triton.jit
def _pow(v, log2_abs_v, e, E_INT, E_ODD):
    """torch.pow(v, e) for a scalar exponent e (E_INT: e is an integer, E_ODD: an odd one),
    given log2(|v|) (shared by the two powers of backward): |v|**e with the sign of v for odd
    e, NaN for a finite negative v and fractional e, 1 for e == 0 (even at v = 0 or NaN)."""
    p = tl.exp2(e * log2_abs_v)
    neg = v < 0
    p = tl.where(neg & (E_INT == 0) & (v > float("-inf")), float("nan"), p)
    p = tl.where(neg & (E_ODD != 0), -p, p)
    return tl.where(e == 0, 1.0, p)


@_lrn_autotune
@triton.jit
def _lrn_fwd_kernel(
    x_ptr, y_ptr,
    # problem sizes: x and y viewed as [N, C, L] (L = flattened spatial positions)
    C, L,
    # strides: x and y (n, c, l), shared (y is allocated like x)
    sn, sc, sl,
    # LRN parameters (fp64 scalars); E_INT, E_ODD: beta is an integer, an odd one
    alpha_over_size: tl.float64, beta: tl.float64, k: tl.float64, E_INT, E_ODD,
    # meta-parameters
    SIZE: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr, INDEX_64: tl.constexpr,
):
    """y = x / (k + alpha/size * window sum of x**2) ** beta for a [BLOCK_P, all C] tile."""
    ACC: tl.constexpr = tl.float64 if x_ptr.dtype.element_ty == tl.float64 else tl.float32
    n, offs_p, offs_c, mask_p = _tile(L, BLOCK_P, BLOCK_C, INDEX_64)
    sumsq, center = _window_sumsq(x_ptr, n * sn + offs_p[:, None] * sl, offs_c, mask_p, C, sc,
                                  SIZE, BLOCK_P, BLOCK_C, ACC)
    scale = tl.full((), k, ACC) + tl.full((), alpha_over_size, ACC) * sumsq
    y = center / _pow(scale, tl.log2(tl.abs(scale)), tl.full((), beta, ACC), E_INT, E_ODD)
    out = y_ptr + n * sn + offs_p[:, None] * sl + offs_c[None, :] * sc
    tl.store(out, y.to(y_ptr.dtype.element_ty), mask=mask_p[:, None] & (offs_c < C)[None, :])


@_lrn_autotune
@triton.jit
def _lrn_bwd_kernel(
    x_ptr, dy_ptr, dx_ptr,
    # problem sizes: all three viewed as [N, C, L]
    C, L,
    # strides (n, c, l), shared by x, dy and dx (the launcher lays them out alike)
    sn, sc, sl,
    # LRN parameters (fp64 scalars); coef = 2 * alpha / size; E_INT, E_ODD, E_EVEN: beta
    # is an integer, an odd one, an even one
    alpha_over_size: tl.float64, beta: tl.float64, k: tl.float64, coef: tl.float64, E_INT, E_ODD, E_EVEN,
    # meta-parameters
    SIZE: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr, INDEX_64: tl.constexpr,
):
    """dx for a [BLOCK_P, all C] tile; see the module docstring for the formula and scratch."""
    ACC: tl.constexpr = tl.float64 if x_ptr.dtype.element_ty == tl.float64 else tl.float32
    n, offs_p, offs_c, mask_p = _tile(L, BLOCK_P, BLOCK_C, INDEX_64)
    row = n * sn + offs_p[:, None] * sl
    tile = row + offs_c[None, :] * sc
    mask = mask_p[:, None] & (offs_c < C)[None, :]

    sumsq, x = _window_sumsq(x_ptr, row, offs_c, mask_p, C, sc, SIZE, BLOCK_P, BLOCK_C, ACC)
    scale = tl.full((), k, ACC) + tl.full((), alpha_over_size, ACC) * sumsq
    e = tl.full((), beta, ACC)
    log2_abs_scale = tl.log2(tl.abs(scale))
    d = _pow(scale, log2_abs_scale, e, E_INT, E_ODD)
    dy = tl.load(dy_ptr + tile, mask=mask, other=0.0).to(ACC)
    # Phase 1: u = dy * (x / d) / d * beta * scale**(beta-1) into this tile of dx (scratch);
    # beta - 1 is an integer with beta, odd when beta is even.
    u = dy * ((x / d) / d) * (e * _pow(scale, log2_abs_scale, e - 1, E_INT, E_EVEN))
    u = tl.where(e == 0, 0.0, u)  # torch's pow backward is exactly 0 for a 0 exponent
    tl.store(dx_ptr + tile, u.to(dx_ptr.dtype.element_ty), mask=mask)
    tl.debug_barrier()
    # Phase 2: sum u over i in [j - HI, j + LO] (the channels whose window holds j).
    usum = tl.zeros((BLOCK_P, BLOCK_C), dtype=ACC)
    for dc in tl.static_range(-((SIZE - 1) // 2), SIZE // 2 + 1):
        cc = offs_c + dc
        usum += tl.load(dx_ptr + row + cc[None, :] * sc, mask=mask_p[:, None] & ((cc >= 0) & (cc < C))[None, :],
                        other=0.0).to(ACC)
    dx = dy / d - tl.full((), coef, ACC) * x * usum
    tl.debug_barrier()  # every thread has read its neighbours' scratch before any overwrite
    tl.store(dx_ptr + tile, dx.to(dx_ptr.dtype.element_ty), mask=mask)


def check_lrn_params(size, alpha, beta, k) -> None:
    """`size` a positive int; alpha, beta and k plain numbers (raising, naming the argument)."""
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        raise ValueError(f"size must be an int >= 1, got {size!r}")
    for name, v in (("alpha", alpha), ("beta", beta), ("k", k)):
        if not isinstance(v, (int, float)) or isinstance(v, bool):
            raise TypeError(f"{name} must be a number, got {type(v).__name__}")


def _check_args(x, size, alpha, beta, k) -> None:
    check_float_tensor(x, "x")
    if x.dim() < 3:
        raise ValueError(f"x must have at least 3 dimensions (N, C, *), got {describe(x)}")
    check_lrn_params(size, alpha, beta, k)
    if x.shape[1] > MAX_CHANNELS:
        raise ValueError(f"x has {x.shape[1]} channels; the LRN kernel holds all channels of a "
                         f"position in one tile and supports at most {MAX_CHANNELS}")


def _as_ncl(t: torch.Tensor) -> torch.Tensor:
    """A [N, C, L] view of a dense tensor (NCHW or channels_last alike: H and W merge)."""
    return t.view(t.shape[0], t.shape[1], math.prod(t.shape[2:])) if t.dim() > 3 else t


def _power_flags(beta: float) -> tuple[int, int]:
    """(beta is an integer, an odd integer): how pow treats a negative base."""
    is_int = float(beta).is_integer()
    return int(is_int), int(is_int and float(beta) % 2 == 1)


def _launch(kernel, x, tensors, size, extra):
    if no_launch(x):
        return
    N, C = x.shape[:2]
    xv = _as_ncl(x)
    L = xv.shape[2]
    block_c = triton.next_power_of_2(C)
    grid = lambda meta: (triton.cdiv(L, meta["BLOCK_P"]), N)
    kernel[grid](*[_as_ncl(t) for t in tensors], C, L, *xv.stride(), *extra,
                 SIZE=size, BLOCK_C=block_c, INDEX_64=needs_int64(x))


def lrn_forward(x, size, alpha=1e-4, beta=0.75, k=1.0) -> torch.Tensor:
    """F.local_response_norm(x, size, alpha, beta, k); output in x's memory layout."""
    _check_args(x, size, alpha, beta, k)
    x = dense(x)
    y = torch.empty_like(x)  # dense x: identical strides
    _launch(_lrn_fwd_kernel, x, (x, y), size, (alpha / size, beta, k, *_power_flags(beta)))
    return y


def lrn_backward(grad_out, x, size, alpha=1e-4, beta=0.75, k=1.0) -> torch.Tensor:
    """Gradient of `lrn_forward` w.r.t. x, recomputing the scale from x."""
    check_same(x, "x", grad_out, "grad_out")
    dy = dense_like(grad_out, x)
    dx = torch.empty_like(x)
    _launch(_lrn_bwd_kernel, x, (x, dy, dx), size,
            (alpha / size, beta, k, 2.0 * alpha / size, *_power_flags(beta), *_power_flags(beta - 1)[1:]))
    return dx


class LocalResponseNormFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, size, alpha, beta, k):
        _check_args(x, size, alpha, beta, k)
        x = dense(x)  # one layout copy at most, shared by the launch and the saved input
        y = lrn_forward(x, size, alpha, beta, k)
        ctx.params = (size, alpha, beta, k)
        ctx.save_for_backward(x)
        return y

    @staticmethod
    def backward(ctx, grad_out):
        (x,) = ctx.saved_tensors
        return lrn_backward(grad_out, x, *ctx.params), None, None, None, None


def local_response_norm(x, size, alpha=1e-4, beta=0.75, k=1.0) -> torch.Tensor:
    """== F.local_response_norm(x, size, alpha, beta, k): alpha divided by size, torch's
    window placement for even sizes. Differentiable in x; NCHW or channels_last."""
    return LocalResponseNormFunction.apply(x, size, alpha, beta, k)


class LocalResponseNorm(torch.nn.LocalResponseNorm):
    """`nn.LocalResponseNorm` run by the Triton kernels (same constructor and repr)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return local_response_norm(x, self.size, self.alpha, self.beta, self.k)

