"""Horizontally fused Inception 1x1 branches in Triton, and the whole Inception block on
them with a zero-cost concat.

Tiers: `_pointwise_fwd_kernel` (+ the max-pool helpers) -> launcher `pointwise_forward` ->
`Inception1x1Function` / `InceptionBlockFunction` -> `Inception1x1` module; the functional
forms are `inception_1x1` and `inception_block`.

The 1x1 convs that read one input (GoogLeNet's branch1, 3x3-reduce and 5x5-reduce) run as
ONE GEMM: M = N*H*W pixels, N = sum of their output channels, K = C, reading x once, bias
and ReLU in the store. The store can split its columns between two destinations, so
branch1 lands directly in its slice of the block's concatenated output while the
reductions land in a scratch buffer the 3x3 / 5x5 convs read (they in turn write their own
slices): `torch.cat` never runs. The pool projection (3x3 stride-1 max-pool, then 1x1)
is the same GEMM with the max taken while loading its operand; the argmax of each pooled
value is kept as an int8 code (0..8, row-major in the window) for backward, and ties and
NaNs resolve as torch's max_pool2d does (first maximum, a NaN wins).

Backward is all Triton: one data-grad GEMM over the concatenated grads of the fused 1x1s,
one weight-grad GEMM for all their filters, column sums for the biases, and the pooled
gradient routed to each window's argmax.
"""

from __future__ import annotations

import itertools

import torch
import triton
import triton.language as tl

from ._utils import cdiv, check_float_tensor, check_same, describe, dot_precision, first_order, needs_int64, no_launch
from .configs import autotune, interpreting
from .conv import (
    ACTIVATIONS,
    _channels_last,
    _output,
    bias_grad,
    conv2d_forward,
    conv2d_input_grad,
    conv2d_weight_grad,
    conv_geometry,
    decode_pixels,
    tile_ids,
)
from .residual import relu_grad


# --------------------------------------------------------------------------- kernels
@triton.jit
def _max3x3(x_rows, h, w, H, W, sxh, sxw, col_off, ok_rows, ok_cols, ACC: tl.constexpr):
    """Max over the 3x3 stride-1 pad-1 window of each (pixel, channel), with its argmax
    code dh*3+dw; torch's order: the first maximum in row-major order, a NaN wins."""
    m = tl.full((ok_rows.shape[0], ok_cols.shape[0]), float("-inf"), ACC)
    code = tl.full((ok_rows.shape[0], ok_cols.shape[0]), -1, tl.int32)
    for dh in tl.static_range(3):
        for dw in tl.static_range(3):
            hh = h + (dh - 1)
            ww = w + (dw - 1)
            ok = ok_rows & (hh >= 0) & (hh < H) & (ww >= 0) & (ww < W)
            ok2 = ok[:, None] & ok_cols[None, :]
            v = tl.load(x_rows[:, None] + ((dh - 1) * sxh + (dw - 1) * sxw) + col_off[None, :],
                        mask=ok2, other=float("-inf")).to(ACC)
            take = ok2 & ((v > m) | (v != v) | (code < 0))
            m = tl.where(take, v, m)
            code = tl.where(take, dh * 3 + dw, code)
    return m, code


@autotune("conv_gemm", key=["BATCH", "H", "W", "C", "NTOT", "POOL3", "DOT_PRECISION"])
@triton.jit
def _pointwise_fwd_kernel(
    x_ptr, w_ptr, b_ptr, ya_ptr, yb_ptr, idx_ptr,
    # problem sizes: NTOT output channels in all; the first NA go to ya, the rest to yb
    BATCH, H, W, C, NTOT, NA,
    # strides: x and idx (n, c, h, w); w (k, c); ya and yb (n, k, h, w); b (k)
    sxn, sxc, sxh, sxw,
    swk, swc,
    syan, syak, syah, syaw,
    sybn, sybk, sybh, sybw,
    sin, sic, sih, siw,
    sb,
    # meta-parameters
    HAS_BIAS: tl.constexpr, RELU: tl.constexpr, POOL3: tl.constexpr, WRITE_ARGMAX: tl.constexpr,
    DOT_PRECISION: tl.constexpr, INDEX_64: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):
    """y[n, k, h, w] = act(sum_c A[n, c, h, w] * w[k, c] + b[k]), A = x or its 3x3 max-pool.

    x: [BATCH, C, H, W] (channels innermost is best); w: [NTOT, C] (the concatenated 1x1
    filters); b: [NTOT]; ya: [BATCH, NA, H, W], yb: [BATCH, NTOT - NA, H, W], any strides;
    idx: int8 argmax codes [BATCH, C, H, W], written by the first column tile when
    WRITE_ARGMAX. Accumulates in fp32, fp64 for fp64 tensors.
    """
    ACC: tl.constexpr = tl.float64 if x_ptr.dtype.element_ty == tl.float64 else tl.float32
    M = BATCH * H * W
    pid_m, pid_n = tile_ids(tl.program_id(0), M, NTOT, BLOCK_M, BLOCK_N, GROUP_M)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_m = offs_m < M
    mask_n = offs_n < NTOT
    n, h, w = decode_pixels(offs_m, H, W, INDEX_64)
    x_rows = x_ptr + n * sxn + h * sxh + w * sxw

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC)
    if POOL3:
        # num_stages=1: software pipelining would stage all nine shifted loads of every K
        # step in shared memory (352 KB at 128x128x64, over Hopper's 227 KB); unpipelined,
        # they go to registers for the max and only the two dot operands use shared memory.
        for k0 in tl.range(0, C, BLOCK_K, num_stages=1):
            offs_k = k0 + tl.arange(0, BLOCK_K)
            mask_k = offs_k < C
            pooled, code = _max3x3(x_rows, h, w, H, W, sxh, sxw, offs_k * sxc, mask_m, mask_k, ACC)
            a = tl.where(mask_m[:, None] & mask_k[None, :], pooled, 0.0).to(x_ptr.dtype.element_ty)
            if WRITE_ARGMAX:
                i_off = (n * sin + h * sih + w * siw)[:, None] + offs_k[None, :] * sic
                first_col_tile = (offs_k * 0 + pid_n) == 0  # one writer per (pixel, channel)
                tl.store(idx_ptr + i_off, code.to(tl.int8),
                         mask=mask_m[:, None] & (mask_k & first_col_tile)[None, :])
            b = tl.load(w_ptr + offs_n[None, :] * swk + offs_k[:, None] * swc,
                        mask=mask_k[:, None] & mask_n[None, :], other=0.0)
            acc = tl.dot(a, b, acc, input_precision=DOT_PRECISION, out_dtype=ACC)
    else:
        for k0 in range(0, C, BLOCK_K):
            offs_k = k0 + tl.arange(0, BLOCK_K)
            mask_k = offs_k < C
            a = tl.load(x_rows[:, None] + offs_k[None, :] * sxc,
                        mask=mask_m[:, None] & mask_k[None, :], other=0.0)
            b = tl.load(w_ptr + offs_n[None, :] * swk + offs_k[:, None] * swc,
                        mask=mask_k[:, None] & mask_n[None, :], other=0.0)
            acc = tl.dot(a, b, acc, input_precision=DOT_PRECISION, out_dtype=ACC)

    if HAS_BIAS:
        acc += tl.load(b_ptr + offs_n * sb, mask=mask_n, other=0.0).to(ACC)[None, :]
    if RELU:
        acc = tl.where(acc < 0, 0.0, acc)
    in_a = offs_n < NA
    ya = ya_ptr + (n * syan + h * syah + w * syaw)[:, None] + offs_n[None, :] * syak
    tl.store(ya, acc.to(ya_ptr.dtype.element_ty), mask=mask_m[:, None] & (mask_n & in_a)[None, :])
    yb = yb_ptr + (n * sybn + h * sybh + w * sybw)[:, None] + (offs_n - NA)[None, :] * sybk
    tl.store(yb, acc.to(yb_ptr.dtype.element_ty), mask=mask_m[:, None] & (mask_n & ~in_a)[None, :])


@triton.jit
def _pool3_route_kernel(
    src_ptr, idx_ptr, dst_ptr,
    # problem sizes
    BATCH, H, W, C,
    # strides, all (n, c, h, w): src, idx (int8 argmax codes), dst
    ssn, ssc, ssh, ssw,
    sin, sic, sih, siw,
    sdn, sdc, sdh, sdw,
    # meta-parameters: GATHER: dst = src at each window's argmax (the pooled input);
    # else scatter-as-gather: dst += sum of src over the windows whose argmax is this pixel
    GATHER: tl.constexpr, INDEX_64: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr,
):
    offs_p = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
    offs_c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    mask_p = offs_p < BATCH * H * W
    mask_c = offs_c < C
    mask = mask_p[:, None] & mask_c[None, :]
    n, h, w = decode_pixels(offs_p, H, W, INDEX_64)
    dst = dst_ptr + (n * sdn + h * sdh + w * sdw)[:, None] + offs_c[None, :] * sdc
    if GATHER:
        code = tl.load(idx_ptr + (n * sin + h * sih + w * siw)[:, None] + offs_c[None, :] * sic,
                       mask=mask, other=4).to(tl.int32)
        hh = h[:, None] + code // 3 - 1
        ww = w[:, None] + code % 3 - 1
        v = tl.load(src_ptr + (n * ssn)[:, None] + hh * ssh + ww * ssw + offs_c[None, :] * ssc, mask=mask)
        tl.store(dst, v, mask=mask)
    else:
        acc = tl.load(dst, mask=mask, other=0.0)
        acc = acc.to(tl.float64 if dst_ptr.dtype.element_ty == tl.float64 else tl.float32)
        for dh in tl.static_range(3):
            for dw in tl.static_range(3):
                # The window centred at (h + 1 - dh, w + 1 - dw) sees this pixel at (dh, dw).
                ho = h + (1 - dh)
                wo = w + (1 - dw)
                ok = mask_p & (ho >= 0) & (ho < H) & (wo >= 0) & (wo < W)
                ok2 = ok[:, None] & mask_c[None, :]
                code = tl.load(idx_ptr + (n * sin + ho * sih + wo * siw)[:, None] + offs_c[None, :] * sic,
                               mask=ok2, other=-1).to(tl.int32)
                g = tl.load(src_ptr + (n * ssn + ho * ssh + wo * ssw)[:, None] + offs_c[None, :] * ssc,
                            mask=ok2 & (code == dh * 3 + dw), other=0.0)
                acc += g.to(acc.dtype)
        tl.store(dst, acc.to(dst_ptr.dtype.element_ty), mask=mask)


# --------------------------------------------------------------------------- launchers
def _cat_filters(weights, biases, x):
    """The 1x1 filters of several branches as one [NTOT, C] matrix (+ [NTOT] bias)."""
    if not weights:
        raise ValueError("weights must hold at least one 1x1 filter bank")
    C = x.shape[1]
    for i, w in enumerate(weights):
        check_float_tensor(w, f"weights[{i}]", ndim=4)
        check_same(x, "x", w, f"weights[{i}]")
        if w.shape[2:] != (1, 1):
            raise ValueError(f"weights[{i}] must be a 1x1 filter bank, got {describe(w)}")
        if w.shape[1] != C:
            raise ValueError(f"channel mismatch: weights[{i}] expects {w.shape[1]} channels, x has {C} "
                             f"(x {describe(x)}, weights[{i}] {describe(w)})")
    has_bias = biases is not None and any(b is not None for b in biases)
    if biases is not None and len(biases) != len(weights):
        raise ValueError(f"biases must match weights one to one: {len(biases)} biases, {len(weights)} weights")
    w_cat = torch.cat([w.reshape(w.shape[0], C) for w in weights])
    b_cat = None
    if has_bias:
        parts = []
        for i, (w, b) in enumerate(zip(weights, biases)):
            if b is None:
                b = torch.zeros(w.shape[0], device=x.device, dtype=x.dtype)
            check_float_tensor(b, f"biases[{i}]", ndim=1)
            check_same(x, "x", b, f"biases[{i}]")
            if b.shape != (w.shape[0],):
                raise ValueError(f"biases[{i}] must have {w.shape[0]} elements, got {describe(b)}")
            parts.append(b)
        b_cat = torch.cat(parts)
    return w_cat, b_cat


def pointwise_forward(x, w_cat, b_cat, *, activation="relu", out_a=None, out_b=None, n_a=None,
                      pool3=False, argmax=None) -> torch.Tensor | None:
    """One GEMM of x (or its 3x3/1/1 max-pool) with the [NTOT, C] filters `w_cat`.

    Columns [0, n_a) go to `out_a`, the rest to `out_b` (either may be a channel slice of a
    bigger buffer). With neither given, returns a new channels_last [N, NTOT, H, W].
    `argmax`, an int8 [N, C, H, W] tensor, receives the pool's argmax codes when given.
    """
    check_float_tensor(x, "x", ndim=4)
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
    x = _channels_last(x)
    N, C, H, W = x.shape
    ntot = w_cat.shape[0]
    fresh = None
    if out_a is None and out_b is None:
        fresh = out_a = _output((N, ntot, H, W), x, None)
        n_a = ntot
    n_a = ntot if n_a is None else n_a
    out_a = _output((N, n_a, H, W), x, out_a, "out_a")
    out_b = _output((N, ntot - n_a, H, W), x, out_b, "out_b") if n_a < ntot else out_a
    idx = argmax if argmax is not None else out_a
    if no_launch(x, out_a) or ntot == 0:
        return fresh
    b = b_cat if b_cat is not None else w_cat  # a dummy pointer without bias
    M = N * H * W
    grid = lambda meta: (cdiv(M, meta["BLOCK_M"]) * cdiv(ntot, meta["BLOCK_N"]),)
    _pointwise_fwd_kernel[grid](
        x, w_cat, b, out_a, out_b, idx,
        N, H, W, C, ntot, n_a,
        *x.stride(), *w_cat.stride(), *out_a.stride(), *out_b.stride(), *idx.stride(), b.stride(0),
        HAS_BIAS=b_cat is not None, RELU=activation == "relu", POOL3=pool3,
        WRITE_ARGMAX=argmax is not None, DOT_PRECISION=dot_precision(x.dtype),
        INDEX_64=needs_int64(x, out_a, out_b),
    )
    return fresh


def _route(src, argmax, dst, *, gather: bool) -> None:
    if no_launch(dst):
        return
    N, C, H, W = dst.shape
    block_p, block_c = (16, 16) if interpreting() else (64, 64)
    grid = (cdiv(N * H * W, block_p), cdiv(C, block_c))
    _pool3_route_kernel[grid](src, argmax, dst, N, H, W, C,
                              *src.stride(), *argmax.stride(), *dst.stride(),
                              GATHER=gather, INDEX_64=needs_int64(src, dst),
                              BLOCK_P=block_p, BLOCK_C=block_c)


def pool3_gather(x, argmax) -> torch.Tensor:
    """The 3x3/1/1 max-pool of x, read back through the saved argmax codes."""
    pooled = torch.empty_like(argmax, dtype=x.dtype)
    _route(x, argmax, pooled, gather=True)
    return pooled


def pool3_backward_(dx, grad_pooled, argmax) -> torch.Tensor:
    """dx += the max-pool gradient: each pooled grad added at its window's argmax."""
    _route(grad_pooled, argmax, dx, gather=False)
    return dx


def _pointwise_geometry(x, ntot):
    return conv_geometry(x, x.new_empty((ntot, x.shape[1], 1, 1)), 1, 0)


def _pointwise_backward(x, g, w_cat, need_x, need_w, need_b, dtype):
    """(dx, dW_cat [NTOT, C], db_cat) of the fused 1x1 GEMM from its pre-activation grad g."""
    geo = _pointwise_geometry(x, w_cat.shape[0])
    w4 = w_cat.view(*w_cat.shape, 1, 1)
    dx = conv2d_input_grad(g, w4, geo) if need_x else None
    dw = db = None
    if need_w:  # the bias grad from the weight-grad's own loads of g
        out = conv2d_weight_grad(x, g, geo, dtype, bias=need_b)
        dw, db = out if need_b else (out, None)
        dw = dw.reshape(w_cat.shape)
    elif need_b:
        db = bias_grad(g, dtype)
    return dx, dw, db


def _check_input(x) -> None:
    """x must be a 4-D float tensor with channels and non-empty spatial dims (N may be 0).
    No channels is refused: F.conv2d's answer there is an empty [N, 0, H, W] per branch, which
    the fused [N, sum C_i, H, W] buffer cannot be."""
    check_float_tensor(x, "x", ndim=4)
    if min(x.shape[1:]) < 1:
        raise ValueError(f"x must have channels and non-empty spatial dimensions (only N may be 0), "
                         f"got {describe(x)}")


# --------------------------------------------------------------------------- autograd
class Inception1x1Function(torch.autograd.Function):
    """The branches' 1x1 convs (+bias, act) as one GEMM; returns the [N, sum C_i, H, W] concat."""

    @staticmethod
    def forward(ctx, x, activation, n_weights, *params):
        weights, biases = list(params[:n_weights]), list(params[n_weights:])
        _check_input(x)
        w_cat, b_cat = _cat_filters(weights, biases or None, x)
        x_cl = _channels_last(x)
        y = pointwise_forward(x_cl, w_cat, b_cat, activation=activation)
        ctx.relu = activation == "relu"
        ctx.sizes = [w.shape[0] for w in weights]
        ctx.bias_flags = [b is not None for b in biases]
        ctx.save_for_backward(x_cl, w_cat, y if ctx.relu else None)
        return y

    @staticmethod
    @first_order
    def backward(ctx, grad_out):
        x, w_cat, y = ctx.saved_tensors
        g = relu_grad(grad_out, y) if ctx.relu else _channels_last(grad_out)
        need = ctx.needs_input_grad
        n_w = len(ctx.sizes)
        dx, dw, db = _pointwise_backward(x, g, w_cat, need[0], any(need[3:3 + n_w]),
                                         any(need[3 + n_w:]), w_cat.dtype)
        C = x.shape[1]
        dws = [d.view(k, C, 1, 1) for d, k in zip(dw.split(ctx.sizes), ctx.sizes)] if dw is not None \
            else [None] * n_w
        dbs = list(db.split(ctx.sizes)) if db is not None else [None] * len(ctx.bias_flags)
        dbs = [d if flag else None for d, flag in zip(dbs, ctx.bias_flags)]
        return (dx, None, None, *dws, *dbs)


def inception_1x1(x, weights, biases=None, *, activation="relu"):
    """== tuple(act(F.conv2d(x, w, b)) for w, b in zip(weights, biases)), as one fused GEMM
    reading x once. Outputs are channel slices (views) of one channels_last buffer.
    x may be unbatched [C, H, W], empty in N or C, meta, or float64; any tensor any strides."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
    weights = list(weights)
    biases = list(biases) if biases is not None else []
    if biases and len(biases) != len(weights):
        raise ValueError(f"biases must match weights one to one: {len(biases)} biases, {len(weights)} weights")
    check_float_tensor(x, "x", ndim=(3, 4))
    if x.dim() == 3:  # unbatched [C, H, W], as F.conv2d accepts
        y = Inception1x1Function.apply(x.unsqueeze(0), activation, len(weights), *weights, *biases)
        return tuple(t.squeeze(0) for t in _branches(y, weights))
    return _branches(Inception1x1Function.apply(x, activation, len(weights), *weights, *biases), weights)


def _branches(y, weights) -> tuple[torch.Tensor, ...]:
    """Each branch's channel slice of the fused output, each its own view (narrow): a branch
    may then be modified in place as F.conv2d's output may (split's views may not be)."""
    starts = itertools.accumulate([0, *(w.shape[0] for w in weights[:-1])])
    return tuple(y.narrow(1, start, w.shape[0]) for start, w in zip(starts, weights))


class InceptionBlockFunction(torch.autograd.Function):
    """A whole GoogLeNet Inception block, all convs with bias and ReLU:
    concat(branch1(x), conv3(reduce3(x)), conv5(reduce5(x)), pool_proj(maxpool3(x)))."""

    @staticmethod
    def forward(ctx, x, w1, b1, wr3, br3, w3, b3, wr5, br5, w5, b5, wp, bp):
        _check_input(x)
        x = _channels_last(x)
        N, C, H, W = x.shape
        c1, r3, c3, r5, c5, cp = (t.shape[0] for t in (w1, wr3, w3, wr5, w5, wp))
        w_cat, b_cat = _cat_filters([w1, wr3, wr5], [b1, br3, br5], x)
        wp_mat, bp_vec = _cat_filters([wp], [bp], x)
        for name, w, cin, k in (("conv3 weight", w3, r3, 3), ("conv5 weight", w5, r5, 5)):
            if tuple(w.shape[1:]) != (cin, k, k):
                raise ValueError(f"{name} must be [*, {cin}, {k}, {k}], got {describe(w)}")
        out = _output((N, c1 + c3 + c5 + cp, H, W), x, None)
        red = _output((N, r3 + r5, H, W), x, None)
        # branch1 -> out[:, :c1], reductions -> red: one GEMM reading x once.
        pointwise_forward(x, w_cat, b_cat, out_a=out[:, :c1], out_b=red, n_a=c1)
        conv2d_forward(red[:, :r3], w3, b3, 1, 1, activation="relu", out=out[:, c1:c1 + c3])
        conv2d_forward(red[:, r3:], w5, b5, 1, 2, activation="relu", out=out[:, c1 + c3:c1 + c3 + c5])
        need_grad = any(ctx.needs_input_grad)
        argmax = torch.empty((N, C, H, W), device=x.device, dtype=torch.int8,
                             memory_format=torch.channels_last) if need_grad else None
        pointwise_forward(x, wp_mat, bp_vec, out_a=out[:, c1 + c3 + c5:], pool3=True, argmax=argmax)
        ctx.sizes = (c1, r3, c3, r5, c5, cp)
        ctx.save_for_backward(x, w_cat, w3, w5, wp_mat, red, out, argmax)
        return out

    @staticmethod
    @first_order
    def backward(ctx, grad_out):
        x, w_cat, w3, w5, wp_mat, red, out, argmax = ctx.saved_tensors
        c1, r3, c3, r5, c5, cp = ctx.sizes
        dtype = x.dtype
        g = relu_grad(grad_out, out)  # every branch ends in a ReLU
        g1, g3 = g[:, :c1], g[:, c1:c1 + c3]
        g5, gp = g[:, c1 + c3:c1 + c3 + c5], g[:, c1 + c3 + c5:]

        # 3x3 and 5x5 convs: grads of their inputs land in the reductions' slots of G, the
        # concatenated grad of the fused 1x1 GEMM ([branch1 | reduce3 | reduce5]).
        N, C, H, W = x.shape
        G = _output((N, c1 + r3 + r5, H, W), x, None)
        G[:, :c1].copy_(g1)  # a layout copy of c1 channels; the rest is written in place
        geo3 = conv_geometry(red[:, :r3], w3, 1, 1)
        geo5 = conv_geometry(red[:, r3:], w5, 1, 2)
        # The reductions' own ReLU backward is fused into these data-grad stores.
        conv2d_input_grad(g3, w3, geo3, out=G[:, c1:c1 + r3], relu_input=red[:, :r3])
        conv2d_input_grad(g5, w5, geo5, out=G[:, c1 + r3:], relu_input=red[:, r3:])
        dw3, db3 = conv2d_weight_grad(red[:, :r3], g3, geo3, dtype, bias=True)
        dw5, db5 = conv2d_weight_grad(red[:, r3:], g5, geo5, dtype, bias=True)

        # The fused 1x1s: one data-grad GEMM, one weight-grad GEMM that also sums the bias grads.
        dx, dw_cat, db_cat = _pointwise_backward(x, G, w_cat, True, True, True, dtype)

        # Pool projection: its 1x1 grads, then the pooled grad routed to each argmax.
        pooled = pool3_gather(x, argmax)
        dxp, dwp, dbp = _pointwise_backward(pooled, gp, wp_mat, True, True, True, dtype)
        pool3_backward_(dx, dxp, argmax)

        dw1, dwr3, dwr5 = (d.view(k, C, 1, 1) for d, k in zip(dw_cat.split([c1, r3, r5]), (c1, r3, r5)))
        db1, dbr3, dbr5 = db_cat.split([c1, r3, r5])
        return (dx, dw1, db1, dwr3, dbr3, dw3, db3, dwr5, dbr5, dw5, db5,
                dwp.view(cp, C, 1, 1), dbp)


def inception_block(x, branch1, reduce3, conv3, reduce5, conv5, pool_proj) -> torch.Tensor:
    """GoogLeNet's Inception block on the Triton kernels; each argument after x is a
    (weight, bias) pair: branch1 / reduce3 / reduce5 / pool_proj 1x1, conv3 3x3 (pad 1),
    conv5 5x5 (pad 2), all with bias and ReLU; the pool before pool_proj is 3x3/1/1 max.
    Returns the channels_last concat [branch1, conv3, conv5, pool_proj]."""
    pairs = (branch1, reduce3, conv3, reduce5, conv5, pool_proj)
    names = ("branch1", "reduce3", "conv3", "reduce5", "conv5", "pool_proj")
    for name, pair in zip(names, pairs):
        if not isinstance(pair, (tuple, list)) or len(pair) != 2 or pair[1] is None:
            raise TypeError(f"{name} must be a (weight, bias) pair with a bias tensor")
    check_float_tensor(x, "x", ndim=(3, 4))
    if x.dim() == 3:  # unbatched [C, H, W]
        return InceptionBlockFunction.apply(x.unsqueeze(0), *[t for pair in pairs for t in pair]).squeeze(0)
    return InceptionBlockFunction.apply(x, *[t for pair in pairs for t in pair])


class Inception1x1(torch.nn.Module):
    """1x1 convs over one input fused into one GEMM; parameters stay per branch
    (`convs.0.weight`, ...), each an `nn.Conv2d` so state_dicts match unfused layers."""

    def __init__(self, in_channels: int, out_channels: list[int], bias: bool = True,
                 activation: str | None = "relu", device=None, dtype=None):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
        self.convs = torch.nn.ModuleList(
            torch.nn.Conv2d(in_channels, c, 1, bias=bias, device=device, dtype=dtype) for c in out_channels)
        self.activation = activation

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        biases = [c.bias for c in self.convs] if self.convs[0].bias is not None else None
        return inception_1x1(x, [c.weight for c in self.convs], biases, activation=self.activation)
