"""2-D max-pool in Triton, forward and backward, with a one-byte argmax per output.

Tiers: `_max_pool_fwd_kernel`, `_max_pool_bwd_kernel` -> launchers `max_pool2d_forward`,
`max_pool2d_backward` -> `MaxPool2dFunction` -> `MaxPool2d` module (an `nn.MaxPool2d`).
The jit helpers (`pixel_coords`, `take_max`, `window_hits`) are shared with the fused
LRN + max-pool kernels in `lrn_pool.py`. Imports nothing from the other kernel families.

Semantics are exactly `F.max_pool2d` (dilation 1): torch's output size for `ceil_mode`,
padding as -inf, and torch's tie-breaking: a window keeps its first maximum in row-major
order, a NaN replaces the running maximum (so the last NaN of a window wins), and a window
of -inf keeps its first in-bounds element. Forward stores, beside the pooled value, the
argmax as a code `kh * KW + kw` in the window (int8 for windows of up to 127 elements):
8x less than torch's int64 indices, and no input saved.

Backward is a gather, not a scatter: a program owns a tile of *input* pixels and adds the
upstream gradient of each window that contains the pixel and chose it (at most
ceil(KH/SH) x ceil(KW/SW) windows: 4 for the nets' overlapping 3x3/2 pools). Every dx
element is written once, no atomics, no zero-fill, and the sum order is fixed:
deterministic, and safe to autotune. The sum is fp32 (fp64 for float64 tensors); forward
only compares and copies, exact in every dtype.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._utils import cdiv, check_float_tensor, describe, first_order, memory_format, needs_int64, pair
from .configs import autotune

CODE_INT8_MAX = 127


# --------------------------------------------------------------------------- jit helpers
@triton.jit
def pixel_coords(P, H, W, BLOCK_P: tl.constexpr, INDEX_64: tl.constexpr):
    """This program's BLOCK_P pixels of an [N, *, H, W] grid (P = N*H*W): n, h, w and mask."""
    offs = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
    if INDEX_64:
        offs = offs.to(tl.int64)
    w = offs % W
    h = (offs // W) % H
    n = offs // (W * H)
    return n, h, w, offs < P


@triton.jit
def take_max(v, ok, m, code, tap):
    """One step of torch's window scan: take `v` (and its code `tap`) where it is in bounds
    and beats the maximum, is NaN, or is the window's first in-bounds element."""
    take = ok & ((v > m) | (v != v) | (code < 0))
    return tl.where(take, v, m), tl.where(take, tap, code)


@triton.jit
def window_hits(ih, iw, OH, OW, PH, PW, i, j, KH: tl.constexpr, KW: tl.constexpr,
                SH: tl.constexpr, SW: tl.constexpr):
    """The i-th/j-th candidate window holding input pixel (ih, iw): its output (oh, ow),
    whether it exists, and the code the pixel has in it."""
    oh = (ih + PH) // SH - i
    ow = (iw + PW) // SW - j
    kh = ih + PH - oh * SH
    kw = iw + PW - ow * SW
    ok = (oh >= 0) & (oh < OH) & (kh < KH) & (ow >= 0) & (ow < OW) & (kw < KW)
    return oh, ow, ok, kh * KW + kw


@triton.jit
def gather_window_grads(dy_ptr, code_ptr, n, ih, iw, mask_p, offs_c, mask_c, OH, OW, PH, PW,
                        sgn, sgh, sgw, sgc, skn, skh, skw, skc,
                        KH: tl.constexpr, KW: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr,
                        ACC: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
    """Sum of dy over the windows that hold each input pixel (ih, iw) and chose it (their
    saved code is the pixel's tap): max-pool's backward as a gather, no atomics."""
    acc = tl.zeros((BLOCK_P, BLOCK_C), dtype=ACC)
    for i in tl.static_range((KH + SH - 1) // SH):
        for j in tl.static_range((KW + SW - 1) // SW):
            oh, ow, ok, tap = window_hits(ih, iw, OH, OW, PH, PW, i, j, KH, KW, SH, SW)
            ok2 = (mask_p & ok)[:, None] & mask_c[None, :]
            code = tl.load(code_ptr + (n * skn + oh * skh + ow * skw)[:, None] + (offs_c * skc)[None, :],
                           mask=ok2, other=-1).to(tl.int32)
            g = tl.load(dy_ptr + (n * sgn + oh * sgh + ow * sgw)[:, None] + (offs_c * sgc)[None, :],
                        mask=ok2 & (code == tap[:, None]), other=0.0)
            acc += g.to(ACC)
    return acc


# --------------------------------------------------------------------------- kernels
@autotune("channel_tiles", key=["C", "OH", "OW", "KH", "KW", "SH", "SW"])
@triton.jit
def _max_pool_fwd_kernel(
    x_ptr, y_ptr, code_ptr,
    # problem sizes: x [N, C, H, W], y and code [N, C, OH, OW]; P = N*OH*OW output pixels
    P, C, H, W, OH, OW,
    # padding (top, left)
    PH, PW,
    # strides (n, c, h, w): x, y, code
    sxn, sxc, sxh, sxw,
    syn, syc, syh, syw,
    skn, skc, skh, skw,
    # meta-parameters: window and stride
    KH: tl.constexpr, KW: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr,
    BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr, INDEX_64: tl.constexpr,
):
    """y = max over each window, code = its argmax, for [BLOCK_P pixels, BLOCK_C channels]."""
    n, oh, ow, mask_p = pixel_coords(P, OH, OW, BLOCK_P, INDEX_64)
    offs_c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    mask_c = offs_c < C
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
    mask = mask_p[:, None] & mask_c[None, :]
    tl.store(y_ptr + (n * syn + oh * syh + ow * syw)[:, None] + (offs_c * syc)[None, :], m, mask=mask)
    tl.store(code_ptr + (n * skn + oh * skh + ow * skw)[:, None] + (offs_c * skc)[None, :],
             code.to(code_ptr.dtype.element_ty), mask=mask)


@autotune("channel_tiles", key=["C", "H", "W", "KH", "KW", "SH", "SW"])
@triton.jit
def _max_pool_bwd_kernel(
    dy_ptr, code_ptr, dx_ptr,
    # problem sizes: dx [N, C, H, W] (P = N*H*W input pixels), dy and code [N, C, OH, OW]
    P, C, H, W, OH, OW,
    # padding (top, left)
    PH, PW,
    # strides (n, c, h, w): dy, code, dx
    sgn, sgc, sgh, sgw,
    skn, skc, skh, skw,
    sdn, sdc, sdh, sdw,
    # meta-parameters
    KH: tl.constexpr, KW: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr,
    BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr, INDEX_64: tl.constexpr,
):
    """dx[pixel] = sum of dy over the windows that hold this pixel and chose it (a gather)."""
    ACC: tl.constexpr = tl.float64 if dy_ptr.dtype.element_ty == tl.float64 else tl.float32
    n, ih, iw, mask_p = pixel_coords(P, H, W, BLOCK_P, INDEX_64)
    offs_c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    mask_c = offs_c < C
    acc = gather_window_grads(dy_ptr, code_ptr, n, ih, iw, mask_p, offs_c, mask_c, OH, OW, PH, PW,
                              sgn, sgh, sgw, sgc, skn, skh, skw, skc, KH, KW, SH, SW, ACC, BLOCK_P, BLOCK_C)
    tl.store(dx_ptr + (n * sdn + ih * sdh + iw * sdw)[:, None] + (offs_c * sdc)[None, :],
             acc.to(dx_ptr.dtype.element_ty), mask=mask_p[:, None] & mask_c[None, :])


# --------------------------------------------------------------------------- launchers
def _out_size(size: int, k: int, s: int, p: int, ceil_mode: bool) -> int:
    """torch's pooling_output_shape (dilation 1): the last window must start inside the
    input or its left padding."""
    out = (size + 2 * p - k + (s - 1 if ceil_mode else 0)) // s + 1
    if ceil_mode and (out - 1) * s >= size + p:
        out -= 1
    return out


def _stride(stride, k: tuple[int, int]) -> tuple[int, int]:
    """torch's default: no stride (None or empty) means the kernel size."""
    return k if stride is None or (isinstance(stride, (tuple, list)) and len(stride) == 0) else pair(stride, "stride")


def pool_geometry(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False):
    """Validated ((KH, KW), (SH, SW), (PH, PW), (OH, OW)) of a max-pool of 4-D `x`."""
    k = pair(kernel_size, "kernel_size")
    s = _stride(stride, k)
    p = pair(padding, "padding")
    if min(k) < 1:
        raise ValueError(f"kernel_size must be positive, got {kernel_size!r}")
    if min(s) < 1:
        raise ValueError(f"stride must be positive, got {stride!r}")
    if pair(dilation, "dilation") != (1, 1):
        raise ValueError(f"dilation must be 1 (the Triton max-pool has no dilated windows), got {dilation!r}")
    if not isinstance(ceil_mode, bool):
        raise TypeError(f"ceil_mode must be a bool, got {ceil_mode!r}")
    if p[0] * 2 > k[0] or p[1] * 2 > k[1]:
        raise ValueError(f"padding must be at most half of kernel_size: padding {padding!r}, "
                         f"kernel_size {kernel_size!r}")
    if k[0] * k[1] > 2**15:
        raise ValueError(f"kernel_size {kernel_size!r} has more than 2**15 elements")
    H, W = x.shape[-2:]
    out = (_out_size(H, k[0], s[0], p[0], ceil_mode), _out_size(W, k[1], s[1], p[1], ceil_mode))
    if min(out) < 1:
        raise ValueError(f"output size {out} is too small: x {describe(x)}, kernel_size {kernel_size!r}, "
                         f"stride {stride!r}, padding {padding!r}")
    return k, s, p, out


def code_dtype(k: tuple[int, int]) -> torch.dtype:
    """The smallest integer type that holds every window position of a k[0] x k[1] window."""
    return torch.int8 if k[0] * k[1] <= CODE_INT8_MAX else torch.int16


def new_like_layout(shape, x: torch.Tensor, dtype=None) -> torch.Tensor:
    """A fresh dense tensor of `shape` in x's nearer memory format (channels_last when x has
    channels innermost)."""
    return torch.empty(shape, device=x.device, dtype=dtype or x.dtype, memory_format=memory_format(x))


def _check_x(x) -> None:
    check_float_tensor(x, "x")
    if x.dim() != 4:
        raise ValueError(f"x must be 4-D (N, C, H, W) here, got {describe(x)}")


def _grid(P, C):
    return lambda meta: (cdiv(P, meta["BLOCK_P"]), cdiv(C, meta["BLOCK_C"]))


def max_pool2d_forward(x, kernel_size, stride=None, padding=0, ceil_mode=False):
    """(y, code): F.max_pool2d(x, ...) in x's memory format, and the argmax codes
    (kh * KW + kw of each window's winner) laid out like y. x: [N, C, H, W], any strides."""
    _check_x(x)
    k, s, p, (OH, OW) = pool_geometry(x, kernel_size, stride, padding, 1, ceil_mode)
    N, C, H, W = x.shape
    y = new_like_layout((N, C, OH, OW), x)
    code = torch.empty_like(y, dtype=code_dtype(k))
    P = N * OH * OW
    if P and C:
        _max_pool_fwd_kernel[_grid(P, C)](
            x, y, code, P, C, H, W, OH, OW, p[0], p[1], *x.stride(), *y.stride(), *code.stride(),
            KH=k[0], KW=k[1], SH=s[0], SW=s[1], INDEX_64=needs_int64(x, y))
    return y, code


def max_pool2d_backward(grad_out, code, x_shape, kernel_size, stride=None, padding=0,
                        fmt=torch.contiguous_format):
    """dx of a max-pool from the upstream grad and the saved argmax codes, allocated dense
    in memory format `fmt` (the input's)."""
    check_float_tensor(grad_out, "grad_out", ndim=4)
    if code.shape != grad_out.shape:
        raise ValueError(f"code must have grad_out's shape: code {describe(code)}, grad_out {describe(grad_out)}")
    N, C, H, W = x_shape
    k = pair(kernel_size, "kernel_size")
    s, p = _stride(stride, k), pair(padding, "padding")
    OH, OW = grad_out.shape[2:]
    dx = torch.empty(x_shape, device=grad_out.device, dtype=grad_out.dtype, memory_format=fmt)
    P = N * H * W
    if P and C:
        _max_pool_bwd_kernel[_grid(P, C)](
            grad_out, code, dx, P, C, H, W, OH, OW, p[0], p[1],
            *grad_out.stride(), *code.stride(), *dx.stride(),
            KH=k[0], KW=k[1], SH=s[0], SW=s[1], INDEX_64=needs_int64(dx, grad_out))
    return dx


class MaxPool2dFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, kernel_size, stride, padding, ceil_mode):
        y, code = max_pool2d_forward(x, kernel_size, stride, padding, ceil_mode)
        ctx.params = (x.shape, kernel_size, stride, padding)
        ctx.fmt = memory_format(x)
        ctx.mark_non_differentiable(code)
        ctx.save_for_backward(code)
        return y

    @staticmethod
    @first_order
    def backward(ctx, grad_out):
        (code,) = ctx.saved_tensors
        return max_pool2d_backward(grad_out, code, *ctx.params, fmt=ctx.fmt), None, None, None, None


def max_pool2d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False) -> torch.Tensor:
    """== F.max_pool2d(x, kernel_size, stride, padding, dilation=1, ceil_mode); x is
    [N, C, H, W] or unbatched [C, H, W], any strides. Differentiable in x."""
    check_float_tensor(x, "x", ndim=(3, 4))
    if pair(dilation, "dilation") != (1, 1):
        raise ValueError(f"dilation must be 1 (the Triton max-pool has no dilated windows), got {dilation!r}")
    if x.dim() == 3:
        return MaxPool2dFunction.apply(x.unsqueeze(0), kernel_size, stride, padding, ceil_mode).squeeze(0)
    return MaxPool2dFunction.apply(x, kernel_size, stride, padding, ceil_mode)


class MaxPool2d(torch.nn.MaxPool2d):
    """`nn.MaxPool2d` run by the Triton kernels (same constructor and repr); dilation 1,
    no `return_indices` (the kernel keeps compact window codes, not torch's indices)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.return_indices:
            raise ValueError("return_indices=True is not supported by the Triton max-pool")
        return max_pool2d(x, self.kernel_size, self.stride, self.padding, self.dilation, self.ceil_mode)
