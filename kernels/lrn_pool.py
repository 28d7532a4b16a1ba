"""Cross-channel LRN fused with a 2-D max-pool, in both orders the paper nets use.

Tiers: `_lrn_pool_fwd_kernel`, `_lrn_pool_bwd_kernel`, `_pool_lrn_fwd_kernel` -> launchers
`lrn_max_pool2d_forward`, `lrn_max_pool2d_backward`, `max_pool2d_lrn_forward`,
`max_pool2d_lrn_backward` -> `LRNMaxPool2dFunction`, `MaxPool2dLRNFunction` -> the
functional forms `lrn_max_pool2d`, `max_pool2d_lrn`. Uses the LRN window helpers of
`lrn.py` and the pool helpers of `pool.py` (read only), so the math is theirs.

LRN then pool (AlexNet's conv -> ReLU -> LRN -> pool, GoogLeNet's LRN -> maxpool2):
* forward, one pass: a program owns output pixels and all channels; for each window tap it
  computes the LRN of that input pixel (SIZE shifted loads, L1 hits) and keeps the max.
  The normalized map is never written: x is read, the pooled output and int8 argmax codes
  (a quarter of x's size each at 3x3/2) are written. The price is recomputing the LRN
  at overlapping taps (9 per output, 2.25 per input pixel at 3x3/2). Candidates are
  rounded to the storage dtype before they are compared, so the winner and its ties are
  those of the unfused torch ops, which store the normalized map.
* backward, one pass: a program owns input pixels and all channels; it gathers the pooled
  gradient routed to each pixel (at most 4 windows at 3x3/2, through the codes), then
  runs the LRN backward on it with `lrn.py`'s scratch scheme (the cross-channel term is
  written to dx, re-read shifted between two barriers, then dx is overwritten). Only x
  and the codes are saved.

Pool then LRN (GoogLeNet's stem maxpool1 -> norm1):
* forward, one pass: a program owns output pixels and all channels, pools them (the
  pooled values are exact copies of x, so storing them loses nothing), writes the pooled
  map (saved for backward: a quarter of x, instead of x) and the codes, synchronizes, and
  reads the pooled map back shifted across channels for the LRN window.
* backward, two passes: the LRN backward at the pooled resolution (`lrn.lrn_backward`),
  then the max-pool gather (`pool.max_pool2d_backward`). One pass would need the pooled
  gradient of neighbouring windows, which other programs compute: overlapping windows
  make that an atomic scatter (non-deterministic) or a recomputation of the LRN backward
  of up to 4 windows per pixel, each with its own cross-channel scratch.

The LRN math is `lrn.py`'s (torch's pow semantics and evaluation order, fp64 scalars):
fp32 accumulation, fp64 for float64 tensors.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._utils import cdiv, check_float_tensor, describe, first_order, memory_format, needs_int64, next_pow2
from .configs import autotune
from .lrn import MAX_CHANNELS, _pow, _power_flags, _prune_tiles, _window_sumsq, check_lrn_params, lrn_backward
from .pool import (
    code_dtype,
    gather_window_grads,
    max_pool2d_backward,
    new_like_layout,
    pixel_coords,
    pool_geometry,
    take_max,
)


def _autotune(key):
    """The LRN family's tiles (BLOCK_P pixels x all channels), pruned to 16K elements as LRN's."""
    return autotune("lrn", key=key, prune_configs_by={"early_config_prune": _prune_tiles})


# --------------------------------------------------------------------------- kernels
@_autotune(["C", "OH", "OW", "SIZE", "KH", "KW", "SH", "SW"])
@triton.jit
def _lrn_pool_fwd_kernel(
    x_ptr, y_ptr, code_ptr,
    # problem sizes: x [N, C, H, W]; y, code [N, C, OH, OW] (P = N*OH*OW); padding
    P, C, H, W, OH, OW, PH, PW,
    # strides (n, c, h, w): x, y, code
    sxn, sxc, sxh, sxw,
    syn, syc, syh, syw,
    skn, skc, skh, skw,
    # LRN parameters (fp64 scalars, as lrn.py's); E_INT, E_ODD: beta is an integer, an odd one
    alpha_over_size: tl.float64, beta: tl.float64, k: tl.float64, E_INT, E_ODD,
    # meta-parameters: LRN window, pool window and stride
    SIZE: tl.constexpr, KH: tl.constexpr, KW: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr,
    BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr, INDEX_64: tl.constexpr,
):
    """y = max over each window of lrn(x), code = its argmax, [BLOCK_P pixels, all C]."""
    ACC: tl.constexpr = tl.float64 if x_ptr.dtype.element_ty == tl.float64 else tl.float32
    n, oh, ow, mask_p = pixel_coords(P, OH, OW, BLOCK_P, INDEX_64)
    offs_c = tl.arange(0, BLOCK_C)
    mask_c = offs_c < C
    m = tl.full((BLOCK_P, BLOCK_C), float("-inf"), ACC)
    code = tl.full((BLOCK_P, BLOCK_C), -1, tl.int32)
    for kh in tl.static_range(KH):
        ih = oh * SH - PH + kh
        for kw in tl.static_range(KW):
            iw = ow * SW - PW + kw
            ok_p = mask_p & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
            sumsq, center = _window_sumsq(x_ptr, (n * sxn + ih * sxh + iw * sxw)[:, None], offs_c, ok_p, C, sxc,
                                          SIZE, BLOCK_P, BLOCK_C, ACC)
            scale = tl.full((), k, ACC) + tl.full((), alpha_over_size, ACC) * sumsq
            v = center / _pow(scale, tl.log2(tl.abs(scale)), tl.full((), beta, ACC), E_INT, E_ODD)
            v = v.to(y_ptr.dtype.element_ty).to(ACC)  # as the stored LRN output
            m, code = take_max(v, ok_p[:, None] & mask_c[None, :], m, code, kh * KW + kw)
    mask = mask_p[:, None] & mask_c[None, :]
    tl.store(y_ptr + (n * syn + oh * syh + ow * syw)[:, None] + (offs_c * syc)[None, :],
             m.to(y_ptr.dtype.element_ty), mask=mask)
    tl.store(code_ptr + (n * skn + oh * skh + ow * skw)[:, None] + (offs_c * skc)[None, :],
             code.to(code_ptr.dtype.element_ty), mask=mask)


@_autotune(["C", "H", "W", "SIZE", "KH", "KW", "SH", "SW"])
@triton.jit
def _lrn_pool_bwd_kernel(
    x_ptr, dy_ptr, code_ptr, dx_ptr,
    # problem sizes: x, dx [N, C, H, W] (P = N*H*W); dy, code [N, C, OH, OW]; padding
    P, C, H, W, OH, OW, PH, PW,
    # strides (n, c, h, w): x, dy, code, dx
    sxn, sxc, sxh, sxw,
    sgn, sgc, sgh, sgw,
    skn, skc, skh, skw,
    sdn, sdc, sdh, sdw,
    # LRN parameters (fp64 scalars); coef = 2 * alpha / size; E_INT, E_ODD, E_EVEN: beta is
    # an integer, an odd one, an even one
    alpha_over_size: tl.float64, beta: tl.float64, k: tl.float64, coef: tl.float64, E_INT, E_ODD, E_EVEN,
    SIZE: tl.constexpr, KH: tl.constexpr, KW: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr,
    BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr, INDEX_64: tl.constexpr,
):
    """dx for [BLOCK_P input pixels, all C]: the pooled grad gathered, then LRN backward."""
    ACC: tl.constexpr = tl.float64 if x_ptr.dtype.element_ty == tl.float64 else tl.float32
    n, ih, iw, mask_p = pixel_coords(P, H, W, BLOCK_P, INDEX_64)
    offs_c = tl.arange(0, BLOCK_C)
    mask_c = offs_c < C
    mask = mask_p[:, None] & mask_c[None, :]
    # dz: the gradient of the LRN output at this pixel, gathered from the windows that chose it
    dz = gather_window_grads(dy_ptr, code_ptr, n, ih, iw, mask_p, offs_c, mask_c, OH, OW, PH, PW,
                             sgn, sgh, sgw, sgc, skn, skh, skw, skc, KH, KW, SH, SW, ACC, BLOCK_P, BLOCK_C)
    # LRN backward on dz, as lrn._lrn_bwd_kernel (same formula and evaluation order; dx
    # doubles as the cross-channel scratch)
    sumsq, x = _window_sumsq(x_ptr, (n * sxn + ih * sxh + iw * sxw)[:, None], offs_c, mask_p, C, sxc,
                             SIZE, BLOCK_P, BLOCK_C, ACC)
    scale = tl.full((), k, ACC) + tl.full((), alpha_over_size, ACC) * sumsq
    e = tl.full((), beta, ACC)
    log2_abs_scale = tl.log2(tl.abs(scale))
    d = _pow(scale, log2_abs_scale, e, E_INT, E_ODD)
    u = dz * ((x / d) / d) * (e * _pow(scale, log2_abs_scale, e - 1, E_INT, E_EVEN))
    u = tl.where(e == 0, 0.0, u)  # torch's pow backward is exactly 0 for a 0 exponent
    row = (n * sdn + ih * sdh + iw * sdw)[:, None]
    tile = dx_ptr + row + (offs_c * sdc)[None, :]
    tl.store(tile, u.to(dx_ptr.dtype.element_ty), mask=mask)
    tl.debug_barrier()
    usum = tl.zeros((BLOCK_P, BLOCK_C), dtype=ACC)
    for dc in tl.static_range(-((SIZE - 1) // 2), SIZE // 2 + 1):
        cc = offs_c + dc
        usum += tl.load(dx_ptr + row + (cc * sdc)[None, :], mask=mask_p[:, None] & ((cc >= 0) & (cc < C))[None, :],
                        other=0.0).to(ACC)
    dx = dz / d - tl.full((), coef, ACC) * x * usum
    tl.debug_barrier()  # every thread has read its neighbours' scratch before any overwrite
    tl.store(tile, dx.to(dx_ptr.dtype.element_ty), mask=mask)


@_autotune(["C", "OH", "OW", "SIZE", "KH", "KW", "SH", "SW"])
@triton.jit
def _pool_lrn_fwd_kernel(
    x_ptr, p_ptr, code_ptr, y_ptr,
    # problem sizes: x [N, C, H, W]; p, code, y [N, C, OH, OW] (P = N*OH*OW); padding
    P, C, H, W, OH, OW, PH, PW,
    # strides (n, c, h, w): x; p, code and y share one layout
    sxn, sxc, sxh, sxw,
    son, soc, soh, sow,
    # LRN parameters (fp64 scalars); E_INT, E_ODD: beta is an integer, an odd one
    alpha_over_size: tl.float64, beta: tl.float64, k: tl.float64, E_INT, E_ODD,
    SIZE: tl.constexpr, KH: tl.constexpr, KW: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr,
    BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr, INDEX_64: tl.constexpr,
):
    """p = max-pool(x), code = argmax, y = lrn(p) for [BLOCK_P pixels, all C]."""
    ACC: tl.constexpr = tl.float64 if x_ptr.dtype.element_ty == tl.float64 else tl.float32
    n, oh, ow, mask_p = pixel_coords(P, OH, OW, BLOCK_P, INDEX_64)
    offs_c = tl.arange(0, BLOCK_C)
    mask_c = offs_c < C
    mask = mask_p[:, None] & mask_c[None, :]
    x_base = x_ptr + (n * sxn)[:, None] + (offs_c * sxc)[None, :]
    m = tl.full((BLOCK_P, BLOCK_C), float("-inf"), x_ptr.dtype.element_ty)
    code = tl.full((BLOCK_P, BLOCK_C), -1, tl.int32)
    for kh in tl.static_range(KH):
        ih = oh * SH - PH + kh
        for kw in tl.static_range(KW):
            iw = ow * SW - PW + kw
            ok = (mask_p & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W))[:, None] & mask_c[None, :]
            v = tl.load(x_base + (ih * sxh + iw * sxw)[:, None], mask=ok, other=float("-inf"))
            m, code = take_max(v, ok, m, code, kh * KW + kw)
    row = (n * son + oh * soh + ow * sow)[:, None]
    tl.store(p_ptr + row + (offs_c * soc)[None, :], m, mask=mask)
    tl.store(code_ptr + row + (offs_c * soc)[None, :], code.to(code_ptr.dtype.element_ty), mask=mask)
    tl.debug_barrier()  # the pooled tile is complete before it is read back shifted
    sumsq, center = _window_sumsq(p_ptr, row, offs_c, mask_p, C, soc, SIZE, BLOCK_P, BLOCK_C, ACC)
    scale = tl.full((), k, ACC) + tl.full((), alpha_over_size, ACC) * sumsq
    y = center / _pow(scale, tl.log2(tl.abs(scale)), tl.full((), beta, ACC), E_INT, E_ODD)
    tl.store(y_ptr + row + (offs_c * soc)[None, :], y.to(y_ptr.dtype.element_ty), mask=mask)


# --------------------------------------------------------------------------- launchers
def _check(x, size, alpha, beta, k) -> None:
    check_float_tensor(x, "x", ndim=4)
    check_lrn_params(size, alpha, beta, k)
    if x.shape[1] > MAX_CHANNELS:
        raise ValueError(f"x has {x.shape[1]} channels; the fused LRN + max-pool holds all channels of a "
                         f"pixel in one tile and supports at most {MAX_CHANNELS} ({describe(x)})")


def _pool_meta(k, s):
    return dict(KH=k[0], KW=k[1], SH=s[0], SW=s[1])


def lrn_max_pool2d_forward(x, size, alpha, beta, k, kernel_size, stride=None, padding=0, ceil_mode=False):
    """(y, code): y == F.max_pool2d(F.local_response_norm(x, size, alpha, beta, k), ...),
    code: each window's argmax (kh * KW + kw), laid out like y."""
    _check(x, size, alpha, beta, k)
    kk, s, p, (OH, OW) = pool_geometry(x, kernel_size, stride, padding, 1, ceil_mode)
    N, C, H, W = x.shape
    y = new_like_layout((N, C, OH, OW), x)
    code = torch.empty_like(y, dtype=code_dtype(kk))
    P = N * OH * OW
    if P and C:
        grid = lambda meta: (cdiv(P, meta["BLOCK_P"]),)
        _lrn_pool_fwd_kernel[grid](
            x, y, code, P, C, H, W, OH, OW, p[0], p[1], *x.stride(), *y.stride(), *code.stride(),
            alpha / size, beta, k, *_power_flags(beta), SIZE=size, **_pool_meta(kk, s),
            BLOCK_C=next_pow2(C), INDEX_64=needs_int64(x, y))
    return y, code


def lrn_max_pool2d_backward(grad_out, code, x, size, alpha, beta, k, kernel_size, stride=None, padding=0,
                            ceil_mode=False):
    """dx of `lrn_max_pool2d_forward` from the upstream grad, the codes and the input x."""
    check_float_tensor(grad_out, "grad_out", ndim=4)
    kk, s, p, _ = pool_geometry(x, kernel_size, stride, padding, 1, ceil_mode)
    N, C, H, W = x.shape
    OH, OW = grad_out.shape[2:]
    dx = new_like_layout(x.shape, x)
    P = N * H * W
    if P and C:
        grid = lambda meta: (cdiv(P, meta["BLOCK_P"]),)
        _lrn_pool_bwd_kernel[grid](
            x, grad_out, code, dx, P, C, H, W, OH, OW, p[0], p[1],
            *x.stride(), *grad_out.stride(), *code.stride(), *dx.stride(),
            alpha / size, beta, k, 2.0 * alpha / size, *_power_flags(beta), *_power_flags(beta - 1)[1:],
            SIZE=size, **_pool_meta(kk, s),
            BLOCK_C=next_pow2(C), INDEX_64=needs_int64(x, dx, grad_out))
    return dx


def max_pool2d_lrn_forward(x, kernel_size, stride, padding, ceil_mode, size, alpha, beta, k):
    """(y, pooled, code): y == F.local_response_norm(F.max_pool2d(x, ...), size, alpha,
    beta, k), the pooled map and its argmax codes (all three laid out alike)."""
    _check(x, size, alpha, beta, k)
    kk, s, p, (OH, OW) = pool_geometry(x, kernel_size, stride, padding, 1, ceil_mode)
    N, C, H, W = x.shape
    pooled = new_like_layout((N, C, OH, OW), x)
    code = torch.empty_like(pooled, dtype=code_dtype(kk))
    y = torch.empty_like(pooled)
    P = N * OH * OW
    if P and C:
        grid = lambda meta: (cdiv(P, meta["BLOCK_P"]),)
        _pool_lrn_fwd_kernel[grid](
            x, pooled, code, y, P, C, H, W, OH, OW, p[0], p[1], *x.stride(), *pooled.stride(),
            alpha / size, beta, k, *_power_flags(beta), SIZE=size, **_pool_meta(kk, s),
            BLOCK_C=next_pow2(C), INDEX_64=needs_int64(x, y))
    return y, pooled, code


def max_pool2d_lrn_backward(grad_out, pooled, code, x_shape, fmt, kernel_size, stride, padding,
                            size, alpha, beta, k):
    """dx of `max_pool2d_lrn_forward`: LRN backward at the pooled size, then the pool gather."""
    dp = lrn_backward(grad_out, pooled, size, alpha, beta, k)
    return max_pool2d_backward(dp, code, x_shape, kernel_size, stride, padding, fmt=fmt)


class LRNMaxPool2dFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, size, alpha, beta, k, kernel_size, stride, padding, ceil_mode):
        y, code = lrn_max_pool2d_forward(x, size, alpha, beta, k, kernel_size, stride, padding, ceil_mode)
        ctx.params = (size, alpha, beta, k, kernel_size, stride, padding, ceil_mode)
        ctx.mark_non_differentiable(code)
        ctx.save_for_backward(code, x)
        return y

    @staticmethod
    @first_order
    def backward(ctx, grad_out):
        code, x = ctx.saved_tensors
        return (lrn_max_pool2d_backward(grad_out, code, x, *ctx.params),) + (None,) * 8


class MaxPool2dLRNFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, kernel_size, stride, padding, ceil_mode, size, alpha, beta, k):
        y, pooled, code = max_pool2d_lrn_forward(x, kernel_size, stride, padding, ceil_mode, size, alpha, beta, k)
        ctx.params = (x.shape, memory_format(x), kernel_size, stride, padding, size, alpha, beta, k)
        ctx.save_for_backward(pooled, code)
        return y

    @staticmethod
    @first_order
    def backward(ctx, grad_out):
        pooled, code = ctx.saved_tensors
        return (max_pool2d_lrn_backward(grad_out, pooled, code, *ctx.params),) + (None,) * 8


def lrn_max_pool2d(x, size, alpha=1e-4, beta=0.75, k=1.0, *, kernel_size, stride=None, padding=0,
                   ceil_mode=False) -> torch.Tensor:
    """== F.max_pool2d(F.local_response_norm(x, size, alpha, beta, k), kernel_size, stride,
    padding, ceil_mode=ceil_mode) in one pass each way; x [N, C, H, W], any strides."""
    return LRNMaxPool2dFunction.apply(x, size, alpha, beta, k, kernel_size, stride, padding, ceil_mode)


def max_pool2d_lrn(x, kernel_size, stride=None, padding=0, ceil_mode=False, *, size, alpha=1e-4, beta=0.75,
                   k=1.0) -> torch.Tensor:
    """== F.local_response_norm(F.max_pool2d(x, kernel_size, stride, padding,
    ceil_mode=ceil_mode), size, alpha, beta, k); one pass forward, two backward."""
    return MaxPool2dLRNFunction.apply(x, kernel_size, stride, padding, ceil_mode, size, alpha, beta, k)


class LRNMaxPool2d(torch.nn.Module):
    """nn.LocalResponseNorm followed by nn.MaxPool2d, run as one fused pass each way."""

    def __init__(self, size, alpha=1e-4, beta=0.75, k=1.0, *, kernel_size, stride=None, padding=0,
                 ceil_mode=False):
        super().__init__()
        self.size, self.alpha, self.beta, self.k = size, alpha, beta, k
        self.kernel_size, self.stride, self.padding, self.ceil_mode = kernel_size, stride, padding, ceil_mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return lrn_max_pool2d(x, self.size, self.alpha, self.beta, self.k, kernel_size=self.kernel_size,
                              stride=self.stride, padding=self.padding, ceil_mode=self.ceil_mode)

    def extra_repr(self) -> str:
        return (f"size={self.size}, alpha={self.alpha}, beta={self.beta}, k={self.k}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, ceil_mode={self.ceil_mode}")


class MaxPool2dLRN(LRNMaxPool2d):
    """nn.MaxPool2d followed by nn.LocalResponseNorm: one fused pass forward, two backward."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return max_pool2d_lrn(x, self.kernel_size, self.stride, self.padding, self.ceil_mode, size=self.size,
                              alpha=self.alpha, beta=self.beta, k=self.k)
