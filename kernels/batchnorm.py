"""BatchNorm2d in Triton, training and eval, with the ReLU and the residual add fused in.

Tiers: `_bn_stats_kernel` (in `_reduce.py`, shared with conv paths without a statistics
epilogue), `_bn_finalize_kernel`, `_bn_fwd_kernel` (forward) and
`_bn_bwd_reduce_kernel`, `_bn_bwd_finalize_kernel`, `_bn_bwd_dx_kernel` (backward) ->
launchers `batch_norm_stats`, `batch_norm_forward`, `batch_norm_backward` ->
`BatchNormFunction` -> `BatchNorm2d` module (an `nn.BatchNorm2d`: same parameters, buffers
and state_dict). ResNet's stem, BatchNorm + ReLU + max-pool, is `_bn_relu_pool_fwd_kernel`
-> `batch_norm_relu_max_pool2d` (it uses the window helpers of `pool.py`).

    y = act(x_hat * weight + bias + residual),  x_hat = (x - mean) / sqrt(var + eps)

Training forward, three launches:
1. statistics: programs own a channel block and a range of pixels and write per-channel
   partials (mean, M2 = sum of squared deviations) in fp32 (every statistic and sum here
   is fp64 for float64 tensors). Each block of BLOCK_R pixels is
   reduced in registers about its own mean, and blocks merge with Chan's update
   (delta = mean_b - mean; M2 += M2_b + delta**2 * n * n_b / (n + n_b)). Why not fp32 sum
   and sum of squares: var = E[x**2] - E[x]**2 cancels when |mean| >> std. With mean 100
   and std 0.1 (an activation a bf16 net can hold), var = 0.01 is the difference of two
   numbers near 1e4 whose fp32 spacing is 1e-3: one rounding of either is up to 5% of var
   (18% measured over 1,292 values; tests/test_batchnorm.py). Deviations from a block mean
   keep the relative error of var near u * mean / std (a few 1e-5 there), for the same
   loads and about one extra FMA per element.
2. finalize (one tiny launch over channels): merges the partials (M2 = sum M2_s +
   n_s * (mean_s - mean)**2), writes mean and biased var (saved for backward), and
   updates running_mean / running_var (unbiased var, n / (n - 1)) exactly as torch does,
   with `momentum` or, for momentum=None, the cumulative average 1 / num_batches_tracked;
   num_batches_tracked is incremented there too. It is never autotuned: it updates
   buffers in place, and an autotuner re-running it would apply the update twice.
3. normalize + (residual add) + (ReLU) in one pass, x read once, y written once.
Eval mode runs pass 3 alone on the running statistics.

Backward, with g = dL/d(bn output) = grad_out masked by the ReLU:
    dbias = sum g,   dweight = invstd * sum g * (x - mean),
    dx = weight * invstd * (g - sum g / n - (x - mean) * invstd**2 * sum g * (x - mean) / n)
1. reduce: per-channel partials of sum g and sum g * (x - mean); g is formed on the fly.
   The ReLU mask is recomputed from x (and the residual) with the forward's own rounding,
   so no output is saved for it; with a residual, g is also the residual's gradient and is
   written here (pass 3 then reads g instead of recomputing the mask).
2. finalize: the sums, dweight and dbias.
3. dx in one pass (eval: dx = g * weight * invstd).

BatchNorm + ReLU + max-pool (ResNet's stem): the statistics as above, then one pass that
normalizes, applies the ReLU and pools (candidates rounded to the storage dtype, so the
winner is the unfused ops'); the normalized map is never written, only the pooled output
and the int8 window codes. Backward routes the pooled gradient to the input pixels
(`pool.max_pool2d_backward`), then runs the BatchNorm + ReLU backward above on it.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._reduce import acc_dtype, channel_stats_partials, pixel_rows, split_plan
from ._utils import cdiv, check_float_tensor, check_same, describe, first_order, memory_format, needs_int64
from .configs import autotune, interpreting
from .conv import conv2d, conv2d_with_stats
from .pool import code_dtype, max_pool2d_backward, pixel_coords, pool_geometry, take_max

ACTIVATIONS = (None, "relu")


# --------------------------------------------------------------------------- jit helpers
@triton.jit
def _channel_affine(mean_ptr, var_ptr, w_ptr, b_ptr, offs_c, mask_c, eps, HAS_AFFINE: tl.constexpr,
                    ACC: tl.constexpr):
    """Per-channel (mean, invstd, scale, shift) in ACC: y = x * scale + shift."""
    mean = tl.load(mean_ptr + offs_c, mask=mask_c, other=0.0).to(ACC)
    var = tl.load(var_ptr + offs_c, mask=mask_c, other=1.0).to(ACC)
    invstd = 1.0 / tl.sqrt(var + tl.full((), eps, ACC))
    if HAS_AFFINE:
        scale = tl.load(w_ptr + offs_c, mask=mask_c, other=1.0).to(ACC) * invstd
        shift = tl.load(b_ptr + offs_c, mask=mask_c, other=0.0).to(ACC) - mean * scale
    else:
        scale = invstd
        shift = -mean * invstd
    return mean, invstd, scale, shift


@triton.jit
def _pre_activation(x, r_ptrs, mask, scale, shift, HAS_RESIDUAL: tl.constexpr):
    """x * scale + shift (+ residual) in x's (the accumulator's) dtype, one FMA: forward and
    backward round alike, so the ReLU mask recomputed in backward is the forward's."""
    z = tl.fma(x, scale[None, :], shift[None, :])
    if HAS_RESIDUAL:
        z += tl.load(r_ptrs, mask=mask, other=0.0).to(x.dtype)
    return z


# --------------------------------------------------------------------------- kernels
@triton.jit
def _bn_finalize_kernel(
    mean_part_ptr, m2_part_ptr, mean_ptr, var_ptr, run_mean_ptr, run_var_ptr, nbt_ptr,
    # problem sizes: partials [SPLITS, C] over P pixels, ROWS_PER_SPLIT per split
    P, C, SPLITS, ROWS_PER_SPLIT,
    # running-average factor (unused when CUMULATIVE: 1 / num_batches_tracked)
    momentum: tl.float64,
    HAS_RUNNING: tl.constexpr, HAS_NBT: tl.constexpr, CUMULATIVE: tl.constexpr,
    BLOCK_S: tl.constexpr, BLOCK_C: tl.constexpr,
):
    """mean, biased var of each channel; running stats and num_batches_tracked updated.
    Channel blocks are visited grid-stride (one program when CUMULATIVE: every program
    would otherwise race on num_batches_tracked). The partials' dtype is the accumulator's."""
    ACC: tl.constexpr = mean_part_ptr.dtype.element_ty
    factor = tl.full((), momentum, ACC)
    if HAS_NBT:
        batches = tl.load(nbt_ptr) + 1
        if CUMULATIVE:
            factor = 1.0 / batches.to(ACC)
        if tl.program_id(0) == 0:
            tl.store(nbt_ptr, batches)
    for c0 in range(tl.program_id(0) * BLOCK_C, C, tl.num_programs(0) * BLOCK_C):
        offs_c = c0 + tl.arange(0, BLOCK_C)
        mask_c = offs_c < C
        total = tl.zeros((BLOCK_C,), dtype=ACC)
        for s0 in range(0, SPLITS, BLOCK_S):
            offs_s = s0 + tl.arange(0, BLOCK_S)
            mask = (offs_s < SPLITS)[:, None] & mask_c[None, :]
            cnt = tl.minimum(ROWS_PER_SPLIT, P - offs_s * ROWS_PER_SPLIT).to(ACC)
            part = tl.load(mean_part_ptr + offs_s[:, None] * C + offs_c[None, :], mask=mask, other=0.0)
            total += tl.sum(part * cnt[:, None], axis=0)
        mean = total / P
        m2 = tl.zeros((BLOCK_C,), dtype=ACC)
        for s0 in range(0, SPLITS, BLOCK_S):
            offs_s = s0 + tl.arange(0, BLOCK_S)
            mask = (offs_s < SPLITS)[:, None] & mask_c[None, :]
            cnt = tl.minimum(ROWS_PER_SPLIT, P - offs_s * ROWS_PER_SPLIT).to(ACC)
            part = tl.load(mean_part_ptr + offs_s[:, None] * C + offs_c[None, :], mask=mask, other=0.0)
            d = tl.where(mask, part - mean[None, :], 0.0)
            m2 += tl.sum(tl.load(m2_part_ptr + offs_s[:, None] * C + offs_c[None, :], mask=mask, other=0.0)
                         + cnt[:, None] * d * d, axis=0)
        var = m2 / P
        tl.store(mean_ptr + offs_c, mean, mask=mask_c)
        tl.store(var_ptr + offs_c, var, mask=mask_c)
        if HAS_RUNNING:
            rm = tl.load(run_mean_ptr + offs_c, mask=mask_c, other=0.0).to(ACC)
            rv = tl.load(run_var_ptr + offs_c, mask=mask_c, other=0.0).to(ACC)
            unbiased = m2 / (P - 1)
            tl.store(run_mean_ptr + offs_c, (factor * mean + (1.0 - factor) * rm).to(run_mean_ptr.dtype.element_ty),
                     mask=mask_c)
            tl.store(run_var_ptr + offs_c, (factor * unbiased + (1.0 - factor) * rv).to(run_var_ptr.dtype.element_ty),
                     mask=mask_c)


@autotune("channel_tiles", key=["C", "P", "HAS_RESIDUAL", "RELU"])
@triton.jit
def _bn_fwd_kernel(
    x_ptr, r_ptr, y_ptr, mean_ptr, var_ptr, w_ptr, b_ptr,
    # problem sizes: x, residual and y [N, C, H, W], P = N*H*W pixels
    P, C, H, W,
    eps: tl.float64,
    # strides (n, c, h, w): x, residual, y
    sxn, sxc, sxh, sxw,
    srn, src, srh, srw,
    syn, syc, syh, syw,
    HAS_AFFINE: tl.constexpr, HAS_RESIDUAL: tl.constexpr, RELU: tl.constexpr,
    BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr, INDEX_64: tl.constexpr,
):
    """y = act(x * scale + shift + residual) for a [BLOCK_P pixels, BLOCK_C channels] tile."""
    ACC: tl.constexpr = tl.float64 if x_ptr.dtype.element_ty == tl.float64 else tl.float32
    n, h, w, mask_p = pixel_coords(P, H, W, BLOCK_P, INDEX_64)
    offs_c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    mask_c = offs_c < C
    mask = mask_p[:, None] & mask_c[None, :]
    _, _, scale, shift = _channel_affine(mean_ptr, var_ptr, w_ptr, b_ptr, offs_c, mask_c, eps, HAS_AFFINE, ACC)
    x = tl.load(x_ptr + (n * sxn + h * sxh + w * sxw)[:, None] + (offs_c * sxc)[None, :],
                mask=mask, other=0.0).to(ACC)
    r_ptrs = r_ptr + (n * srn + h * srh + w * srw)[:, None] + (offs_c * src)[None, :]
    z = _pre_activation(x, r_ptrs, mask, scale, shift, HAS_RESIDUAL)
    if RELU:
        z = tl.where(z < 0, 0.0, z)  # NaN propagates, as torch.relu
    tl.store(y_ptr + (n * syn + h * syh + w * syw)[:, None] + (offs_c * syc)[None, :],
             z.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _bn_bwd_reduce_kernel(
    dy_ptr, x_ptr, r_ptr, g_ptr, mean_ptr, var_ptr, w_ptr, b_ptr, sg_part_ptr, sgx_part_ptr,
    # problem sizes: as _bn_stats_kernel
    P, C, H, W, ROWS_PER_SPLIT,
    eps: tl.float64,
    # strides (n, c, h, w): dy, x, residual, g (g: the masked grad, written when WRITE_G)
    sdn, sdc, sdh, sdw,
    sxn, sxc, sxh, sxw,
    srn, src, srh, srw,
    sgn, sgc, sgh, sgw,
    HAS_AFFINE: tl.constexpr, HAS_RESIDUAL: tl.constexpr, RELU: tl.constexpr, WRITE_G: tl.constexpr,
    Y_DTYPE: tl.constexpr,
    BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr, INDEX_64: tl.constexpr,
):
    """Partials of sum g and sum g * (x - mean) over this split's pixels; g = dy masked by
    the ReLU (mask recomputed from x and the residual, rounded as the forward's output)."""
    ACC: tl.constexpr = tl.float64 if x_ptr.dtype.element_ty == tl.float64 else tl.float32
    offs_c = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
    mask_c = offs_c < C
    split = tl.program_id(1)
    r_start = split * ROWS_PER_SPLIT
    r_end = tl.minimum(r_start + ROWS_PER_SPLIT, P)
    mean, _, scale, shift = _channel_affine(mean_ptr, var_ptr, w_ptr, b_ptr, offs_c, mask_c, eps, HAS_AFFINE, ACC)
    acc_g = tl.zeros((BLOCK_R, BLOCK_C), dtype=ACC)
    acc_gx = tl.zeros((BLOCK_R, BLOCK_C), dtype=ACC)
    for r0 in range(r_start, r_end, BLOCK_R):
        offs_r = r0 + tl.arange(0, BLOCK_R)
        if INDEX_64:
            offs_r = offs_r.to(tl.int64)
        n, h, w = pixel_rows(offs_r, H, W)
        mask = (offs_r < r_end)[:, None] & mask_c[None, :]
        cols = offs_c[None, :]
        g = tl.load(dy_ptr + (n * sdn + h * sdh + w * sdw)[:, None] + cols * sdc, mask=mask, other=0.0)
        x = tl.load(x_ptr + (n * sxn + h * sxh + w * sxw)[:, None] + cols * sxc, mask=mask, other=0.0).to(ACC)
        if RELU:
            z = _pre_activation(x, r_ptr + (n * srn + h * srh + w * srw)[:, None] + cols * src, mask,
                                scale, shift, HAS_RESIDUAL)
            g = tl.where(z.to(Y_DTYPE) <= 0, tl.zeros_like(g), g)
        if WRITE_G:
            tl.store(g_ptr + (n * sgn + h * sgh + w * sgw)[:, None] + cols * sgc, g, mask=mask)
        g = g.to(ACC)
        acc_g += g
        acc_gx += tl.where(mask, g * (x - mean[None, :]), 0.0)
    tl.store(sg_part_ptr + split * C + offs_c, tl.sum(acc_g, axis=0), mask=mask_c)
    tl.store(sgx_part_ptr + split * C + offs_c, tl.sum(acc_gx, axis=0), mask=mask_c)


@triton.jit
def _bn_bwd_finalize_kernel(
    sg_part_ptr, sgx_part_ptr, sg_ptr, sgx_ptr, var_ptr, dw_ptr, db_ptr,
    # problem sizes: partials [SPLITS, C]
    C, SPLITS,
    eps: tl.float64,
    HAS_AFFINE: tl.constexpr, BLOCK_S: tl.constexpr, BLOCK_C: tl.constexpr,
):
    """sum g and sum g * (x - mean) per channel (in the partials' dtype), dbias and dweight."""
    ACC: tl.constexpr = sg_part_ptr.dtype.element_ty
    offs_c = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
    mask_c = offs_c < C
    sg = tl.zeros((BLOCK_C,), dtype=ACC)
    sgx = tl.zeros((BLOCK_C,), dtype=ACC)
    for s0 in range(0, SPLITS, BLOCK_S):
        offs_s = s0 + tl.arange(0, BLOCK_S)
        mask = (offs_s < SPLITS)[:, None] & mask_c[None, :]
        sg += tl.sum(tl.load(sg_part_ptr + offs_s[:, None] * C + offs_c[None, :], mask=mask, other=0.0), axis=0)
        sgx += tl.sum(tl.load(sgx_part_ptr + offs_s[:, None] * C + offs_c[None, :], mask=mask, other=0.0), axis=0)
    tl.store(sg_ptr + offs_c, sg, mask=mask_c)
    tl.store(sgx_ptr + offs_c, sgx, mask=mask_c)
    if HAS_AFFINE:
        invstd = 1.0 / tl.sqrt(tl.load(var_ptr + offs_c, mask=mask_c, other=1.0).to(ACC) + tl.full((), eps, ACC))
        tl.store(dw_ptr + offs_c, (sgx * invstd).to(dw_ptr.dtype.element_ty), mask=mask_c)
        tl.store(db_ptr + offs_c, sg.to(db_ptr.dtype.element_ty), mask=mask_c)


@autotune("channel_tiles", key=["C", "P", "HAS_RESIDUAL", "RELU", "TRAINING"])
@triton.jit
def _bn_bwd_dx_kernel(
    g_ptr, x_ptr, r_ptr, dx_ptr, mean_ptr, var_ptr, w_ptr, b_ptr, sg_ptr, sgx_ptr,
    # problem sizes: as _bn_fwd_kernel
    P, C, H, W,
    eps: tl.float64,
    # strides (n, c, h, w): g (dy, or the masked grad), x, residual, dx
    sgn, sgc, sgh, sgw,
    sxn, sxc, sxh, sxw,
    srn, src, srh, srw,
    sdn, sdc, sdh, sdw,
    HAS_AFFINE: tl.constexpr, HAS_RESIDUAL: tl.constexpr, RELU: tl.constexpr, TRAINING: tl.constexpr,
    Y_DTYPE: tl.constexpr,
    BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr, INDEX_64: tl.constexpr,
):
    """dx for a [BLOCK_P, BLOCK_C] tile; RELU: mask g here (recomputed as in the reduce)."""
    ACC: tl.constexpr = tl.float64 if x_ptr.dtype.element_ty == tl.float64 else tl.float32
    n, h, w, mask_p = pixel_coords(P, H, W, BLOCK_P, INDEX_64)
    offs_c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    mask_c = offs_c < C
    mask = mask_p[:, None] & mask_c[None, :]
    cols = offs_c[None, :]
    mean, invstd, scale, shift = _channel_affine(mean_ptr, var_ptr, w_ptr, b_ptr, offs_c, mask_c, eps, HAS_AFFINE, ACC)
    g = tl.load(g_ptr + (n * sgn + h * sgh + w * sgw)[:, None] + cols * sgc, mask=mask, other=0.0).to(ACC)
    x = tl.load(x_ptr + (n * sxn + h * sxh + w * sxw)[:, None] + cols * sxc, mask=mask, other=0.0).to(ACC)
    if RELU:
        z = _pre_activation(x, r_ptr + (n * srn + h * srh + w * srw)[:, None] + cols * src, mask,
                            scale, shift, HAS_RESIDUAL)
        g = tl.where(z.to(Y_DTYPE) <= 0, 0.0, g)
    if TRAINING:
        sg = tl.load(sg_ptr + offs_c, mask=mask_c, other=0.0) / P
        sgx = tl.load(sgx_ptr + offs_c, mask=mask_c, other=0.0) * invstd * invstd / P
        dx = scale[None, :] * (g - sg[None, :] - (x - mean[None, :]) * sgx[None, :])
    else:
        dx = g * scale[None, :]
    tl.store(dx_ptr + (n * sdn + h * sdh + w * sdw)[:, None] + cols * sdc,
             dx.to(dx_ptr.dtype.element_ty), mask=mask)


@autotune("channel_tiles", key=["C", "OH", "OW", "KH", "KW", "SH", "SW"])
@triton.jit
def _bn_relu_pool_fwd_kernel(
    x_ptr, y_ptr, code_ptr, mean_ptr, var_ptr, w_ptr, b_ptr,
    # problem sizes: x [N, C, H, W]; y, code [N, C, OH, OW] (P = N*OH*OW); padding
    P, C, H, W, OH, OW, PH, PW,
    eps: tl.float64,
    # strides (n, c, h, w): x, y, code
    sxn, sxc, sxh, sxw,
    syn, syc, syh, syw,
    skn, skc, skh, skw,
    HAS_AFFINE: tl.constexpr, KH: tl.constexpr, KW: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr,
    BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr, INDEX_64: tl.constexpr,
):
    """y = max over each window of relu(x * scale + shift), code = its argmax."""
    ACC: tl.constexpr = tl.float64 if x_ptr.dtype.element_ty == tl.float64 else tl.float32
    n, oh, ow, mask_p = pixel_coords(P, OH, OW, BLOCK_P, INDEX_64)
    offs_c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    mask_c = offs_c < C
    _, _, scale, shift = _channel_affine(mean_ptr, var_ptr, w_ptr, b_ptr, offs_c, mask_c, eps, HAS_AFFINE, ACC)
    x_base = x_ptr + (n * sxn)[:, None] + (offs_c * sxc)[None, :]
    m = tl.full((BLOCK_P, BLOCK_C), float("-inf"), ACC)
    code = tl.full((BLOCK_P, BLOCK_C), -1, tl.int32)
    for kh in tl.static_range(KH):
        ih = oh * SH - PH + kh
        for kw in tl.static_range(KW):
            iw = ow * SW - PW + kw
            ok = (mask_p & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W))[:, None] & mask_c[None, :]
            v = tl.load(x_base + (ih * sxh + iw * sxw)[:, None], mask=ok, other=0.0).to(ACC)
            z = _pre_activation(v, x_base, ok, scale, shift, False)
            z = tl.where(z < 0, 0.0, z).to(y_ptr.dtype.element_ty).to(ACC)  # as stored unfused
            m, code = take_max(z, ok, m, code, kh * KW + kw)
    mask = mask_p[:, None] & mask_c[None, :]
    tl.store(y_ptr + (n * syn + oh * syh + ow * syw)[:, None] + (offs_c * syc)[None, :],
             m.to(y_ptr.dtype.element_ty), mask=mask)
    tl.store(code_ptr + (n * skn + oh * skh + ow * skw)[:, None] + (offs_c * skc)[None, :],
             code.to(code_ptr.dtype.element_ty), mask=mask)


# --------------------------------------------------------------------------- launchers
_TL_DTYPES = {torch.float32: tl.float32, torch.float16: tl.float16, torch.bfloat16: tl.bfloat16,
              torch.float64: tl.float64}


def _check_vector(t, name, x, C) -> None:
    if t is None:
        return
    check_float_tensor(t, name, ndim=1)
    if t.device != x.device:
        raise ValueError(f"{name} is on {t.device} but x is on {x.device}")
    if t.shape[0] != C:
        raise ValueError(f"{name} must have {C} elements (x's channels), got {describe(t)} (x {describe(x)})")


def _check_args(x, residual, activation, weight, bias, running_mean, running_var) -> None:
    check_float_tensor(x, "x", ndim=4)
    C = x.shape[1]
    for name, t in (("weight", weight), ("bias", bias), ("running_mean", running_mean),
                    ("running_var", running_var)):
        _check_vector(t, name, x, C)
    if (weight is None) != (bias is None):
        raise ValueError("weight and bias must be given together (affine) or both be None")
    if (running_mean is None) != (running_var is None):
        raise ValueError("running_mean and running_var must be given together or both be None")
    if residual is not None:
        check_float_tensor(residual, "residual")
        check_same(x, "x", residual, "residual")
        if residual.shape != x.shape:
            raise ValueError(f"residual must have x's shape: residual {describe(residual)}, x {describe(x)}")
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")


def _stride4(t):
    return t.stride() if t is not None else (0, 0, 0, 0)


def batch_norm_stats(x, running_mean=None, running_var=None, num_batches_tracked=None, momentum=0.1):
    """(mean, var) of x per channel (fp32, fp64 for float64 x; var biased) for training; running stats and
    num_batches_tracked updated in place when given (momentum=None: cumulative average)."""
    N, C, H, W = x.shape
    P = N * H * W
    empty = _no_statistics(P, C, x.device, acc_dtype(x), running_mean, num_batches_tracked, momentum,
                           f"x {describe(x)}")
    if empty is not None:
        return empty
    part, splits, per_split = channel_stats_partials(x)
    return _finalize(part, P, C, splits, per_split, running_mean, running_var, num_batches_tracked, momentum)


def batch_norm_stats_from_partials(partials, running_mean=None, running_var=None, num_batches_tracked=None,
                                   momentum=0.1):
    """`batch_norm_stats` of a conv's output from the statistics pieces its forward kernel
    wrote (`conv.conv2d_forward(..., stats=True)`): the same (mean, var) and running-stat
    updates, without reading the output."""
    part, rows, pieces, count = partials
    C = part.shape[2]
    if part.is_meta:
        return torch.empty(C, device="meta", dtype=part.dtype), torch.empty(C, device="meta", dtype=part.dtype)
    empty = _no_statistics(count, C, part.device, part.dtype, running_mean, num_batches_tracked, momentum,
                           f"{count} pixel")
    if empty is not None:
        return empty
    return _finalize(part, count, C, pieces, rows, running_mean, running_var, num_batches_tracked, momentum)


def _no_statistics(P, C, device, dtype, running_mean, num_batches_tracked, momentum, what):
    """The statistics entry points' rules before any launch: refuse one value per channel
    (`what` names the input) and momentum=None without a batch count; an empty batch gives
    (zeros, ones), leaves the running stats as they are and still counts a batch, as torch.
    None where statistics are to be computed."""
    if P == 1:
        raise ValueError(f"BatchNorm in training needs more than 1 value per channel, got {what}")
    if momentum is None and running_mean is not None and num_batches_tracked is None:
        raise ValueError("momentum=None (cumulative average) needs num_batches_tracked")
    if P == 0:
        if num_batches_tracked is not None:
            num_batches_tracked.add_(1)
        return torch.zeros(C, device=device, dtype=dtype), torch.ones(C, device=device, dtype=dtype)
    return None


def _finalize(part, P, C, splits, per_split, running_mean, running_var, num_batches_tracked, momentum):
    """(mean, var) from per-split (mean, M2) partials [2, >= splits, C] of `per_split` rows
    each (the last split the rest of P); running stats updated as torch does."""
    stats = torch.empty((2, C), device=part.device, dtype=part.dtype)
    cumulative = momentum is None
    fin_c = 512 if interpreting() else 128
    grid = 1 if cumulative else cdiv(C, fin_c)
    _bn_finalize_kernel[(grid,)](
        part[0], part[1], stats[0], stats[1],
        running_mean if running_mean is not None else stats, running_var if running_var is not None else stats,
        num_batches_tracked if num_batches_tracked is not None else stats,
        P, C, splits, per_split, 0.0 if cumulative else float(momentum),
        HAS_RUNNING=running_mean is not None, HAS_NBT=num_batches_tracked is not None, CUMULATIVE=cumulative,
        BLOCK_S=32, BLOCK_C=fin_c)
    # Written in place by a kernel: bump their version counters as torch's in-place ops
    # would, so autograd still catches a stale saved buffer.
    for t in (running_mean, running_var, num_batches_tracked):
        if t is not None:
            torch.autograd.graph.increment_version(t)
    return stats[0], stats[1]


def batch_norm_forward(x, mean, var, weight, bias, eps, *, residual=None, activation=None):
    """act(x_hat * weight + bias + residual) with the given per-channel mean and var, in x's
    memory format."""
    N, C, H, W = x.shape
    y = torch.empty(x.shape, device=x.device, dtype=x.dtype, memory_format=memory_format(x))
    P = N * H * W
    if P and C:
        grid = lambda meta: (cdiv(P, meta["BLOCK_P"]), cdiv(C, meta["BLOCK_C"]))
        _bn_fwd_kernel[grid](
            x, residual if residual is not None else x, y, mean, var,
            weight if weight is not None else mean, bias if bias is not None else mean,
            P, C, H, W, float(eps), *x.stride(), *_stride4(residual), *y.stride(),
            HAS_AFFINE=weight is not None, HAS_RESIDUAL=residual is not None, RELU=activation == "relu",
            INDEX_64=needs_int64(x, y, residual))
    return y


def batch_norm_backward(grad_out, x, mean, var, weight, bias, eps, *, residual=None, activation=None,
                        training=True, needs_param_grads=True):
    """(dx, dweight, dbias, dresidual) of `batch_norm_forward` with the statistics it used;
    in training the statistics are x's own, so dx carries their gradient too."""
    N, C, H, W = x.shape
    P = N * H * W
    relu = activation == "relu"
    has_res = residual is not None
    y_dtype = _TL_DTYPES[x.dtype]
    affine = weight is not None
    g = torch.empty(x.shape, device=x.device, dtype=x.dtype, memory_format=memory_format(x)) \
        if (relu and has_res) else grad_out
    sums = torch.zeros((2, C), device=x.device, dtype=acc_dtype(x))
    dw = torch.empty_like(weight) if affine and needs_param_grads else None
    db = torch.empty_like(bias) if affine and needs_param_grads else None
    reduce = training or needs_param_grads or g is not grad_out
    if reduce and P:
        block_r, block_c, splits, per_split = split_plan(P, C, x.device)
        part = torch.empty((2, splits, C), device=x.device, dtype=acc_dtype(x))
        _bn_bwd_reduce_kernel[(cdiv(C, block_c), splits)](
            grad_out, x, residual if has_res else x, g, mean, var,
            weight if affine else mean, bias if affine else mean, part[0], part[1],
            P, C, H, W, per_split, float(eps),
            *grad_out.stride(), *x.stride(), *_stride4(residual), *g.stride(),
            HAS_AFFINE=affine, HAS_RESIDUAL=has_res, RELU=relu, WRITE_G=g is not grad_out, Y_DTYPE=y_dtype,
            BLOCK_R=block_r, BLOCK_C=block_c, INDEX_64=needs_int64(x, grad_out, residual))
        fin_c = 512 if interpreting() else 64
        _bn_bwd_finalize_kernel[(cdiv(C, fin_c),)](
            part[0], part[1], sums[0], sums[1], var, dw if dw is not None else sums, db if db is not None else sums,
            C, splits, float(eps), HAS_AFFINE=dw is not None, BLOCK_S=32, BLOCK_C=fin_c)
    elif dw is not None:
        dw.zero_(), db.zero_()
    dx = torch.empty(x.shape, device=x.device, dtype=x.dtype, memory_format=memory_format(x))
    if P and C:
        grid = lambda meta: (cdiv(P, meta["BLOCK_P"]), cdiv(C, meta["BLOCK_C"]))
        _bn_bwd_dx_kernel[grid](
            g, x, residual if has_res else x, dx, mean, var,
            weight if affine else mean, bias if affine else mean, sums[0], sums[1],
            P, C, H, W, float(eps), *g.stride(), *x.stride(), *_stride4(residual), *dx.stride(),
            HAS_AFFINE=affine, HAS_RESIDUAL=has_res, RELU=relu and g is grad_out, TRAINING=training,
            Y_DTYPE=y_dtype, INDEX_64=needs_int64(x, dx, grad_out, residual))
    return dx, dw, db, (g if has_res else None)


class BatchNormFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, residual, running_mean, running_var, num_batches_tracked,
                training, momentum, eps, activation, partials=None):
        if training and partials is not None:  # x's statistics, in pieces from the kernel that wrote x
            mean, var = batch_norm_stats_from_partials(partials, running_mean, running_var, num_batches_tracked,
                                                       momentum)
        elif training:
            mean, var = batch_norm_stats(x, running_mean, running_var, num_batches_tracked, momentum)
        else:
            mean, var = running_mean, running_var
        y = batch_norm_forward(x, mean, var, weight, bias, eps, residual=residual, activation=activation)
        ctx.params = (eps, activation, training)
        # The residual is needed only to recompute the ReLU mask.
        saved_res = residual if activation == "relu" else None
        ctx.has_residual = residual is not None
        ctx.save_for_backward(x, mean, var, weight, bias, saved_res)
        return y

    @staticmethod
    @first_order
    def backward(ctx, grad_out):
        x, mean, var, weight, bias, residual = ctx.saved_tensors
        eps, activation, training = ctx.params
        needs_params = ctx.needs_input_grad[1] or ctx.needs_input_grad[2]
        dx, dw, db, dres = batch_norm_backward(grad_out, x, mean, var, weight, bias, eps, residual=residual,
                                               activation=activation, training=training,
                                               needs_param_grads=needs_params)
        if ctx.has_residual and dres is None:
            dres = grad_out  # no ReLU: the residual's gradient is the output's
        return dx, dw, db, dres, None, None, None, None, None, None, None, None


def batch_norm(x, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1,
               eps=1e-5, *, residual=None, activation=None, num_batches_tracked=None, partials=None) -> torch.Tensor:
    """== act(F.batch_norm(x, running_mean, running_var, weight, bias, training, momentum,
    eps) + residual) for 4-D x, any strides; activation None or "relu". In training the
    running stats (when given) are updated in place as torch does; `num_batches_tracked`,
    when given, is incremented, and momentum=None then uses the cumulative average
    (nn.BatchNorm2d's momentum=None). Differentiable in x, weight, bias and residual.
    `partials`: x's statistics in pieces from the conv that wrote x
    (`conv.conv2d_with_stats`); used in training instead of reading x for them."""
    _check_args(x, residual, activation, weight, bias, running_mean, running_var)
    if not training and running_mean is None:
        raise ValueError("running_mean and running_var are required when training=False")
    if momentum is not None and not isinstance(momentum, (int, float)):
        raise TypeError(f"momentum must be a number or None, got {type(momentum).__name__}")
    if not isinstance(eps, (int, float)) or eps < 0:
        raise ValueError(f"eps must be a non-negative number, got {eps!r}")
    pixels = x.numel() // max(x.shape[1], 1)
    if partials is not None and (partials.count != pixels or partials.part.shape[2] != x.shape[1]):
        raise ValueError(f"partials must describe x: {partials.count} pixels of {partials.part.shape[2]} channels, "
                         f"x is {describe(x)}")
    return BatchNormFunction.apply(x, weight, bias, residual, running_mean, running_var, num_batches_tracked,
                                   bool(training), momentum, eps, activation, partials)


def batch_norm_relu_pool_forward(x, mean, var, weight, bias, eps, kernel_size, stride, padding, ceil_mode):
    """(y, code): max_pool2d(relu(x_hat * weight + bias)) with the given statistics, and the
    window argmax codes; both in x's memory format."""
    k, s, p, (OH, OW) = pool_geometry(x, kernel_size, stride, padding, 1, ceil_mode)
    N, C, H, W = x.shape
    y = torch.empty((N, C, OH, OW), device=x.device, dtype=x.dtype, memory_format=memory_format(x))
    code = torch.empty_like(y, dtype=code_dtype(k))
    P = N * OH * OW
    if P and C:
        grid = lambda meta: (cdiv(P, meta["BLOCK_P"]), cdiv(C, meta["BLOCK_C"]))
        _bn_relu_pool_fwd_kernel[grid](
            x, y, code, mean, var, weight if weight is not None else mean, bias if bias is not None else mean,
            P, C, H, W, OH, OW, p[0], p[1], float(eps), *x.stride(), *y.stride(), *code.stride(),
            HAS_AFFINE=weight is not None, KH=k[0], KW=k[1], SH=s[0], SW=s[1], INDEX_64=needs_int64(x, y))
    return y, code


class BatchNormReLUMaxPool2dFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, running_mean, running_var, num_batches_tracked, training, momentum, eps,
                kernel_size, stride, padding, ceil_mode):
        if training:
            mean, var = batch_norm_stats(x, running_mean, running_var, num_batches_tracked, momentum)
        else:
            mean, var = running_mean, running_var
        y, code = batch_norm_relu_pool_forward(x, mean, var, weight, bias, eps, kernel_size, stride, padding,
                                               ceil_mode)
        ctx.params = (eps, training, kernel_size, stride, padding)
        ctx.mark_non_differentiable(code)
        ctx.save_for_backward(x, mean, var, weight, bias, code)
        return y

    @staticmethod
    @first_order
    def backward(ctx, grad_out):
        x, mean, var, weight, bias, code = ctx.saved_tensors
        eps, training, kernel_size, stride, padding = ctx.params
        g = max_pool2d_backward(grad_out, code, x.shape, kernel_size, stride, padding, fmt=memory_format(x))
        dx, dw, db, _ = batch_norm_backward(g, x, mean, var, weight, bias, eps, activation="relu", training=training,
                                            needs_param_grads=ctx.needs_input_grad[1] or ctx.needs_input_grad[2])
        return (dx, dw, db) + (None,) * 10


def batch_norm_relu_max_pool2d(x, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1,
                               eps=1e-5, *, kernel_size, stride=None, padding=0, ceil_mode=False,
                               num_batches_tracked=None) -> torch.Tensor:
    """== F.max_pool2d(F.relu(F.batch_norm(x, running_mean, running_var, weight, bias,
    training, momentum, eps)), kernel_size, stride, padding, ceil_mode=ceil_mode), the
    normalized map never written (ResNet's stem); running stats as `batch_norm`."""
    _check_args(x, None, "relu", weight, bias, running_mean, running_var)
    if not training and running_mean is None:
        raise ValueError("running_mean and running_var are required when training=False")
    pool_geometry(x, kernel_size, stride, padding, 1, ceil_mode)
    return BatchNormReLUMaxPool2dFunction.apply(x, weight, bias, running_mean, running_var, num_batches_tracked,
                                                bool(training), momentum, eps, kernel_size, stride, padding,
                                                ceil_mode)


class BatchNorm2d(torch.nn.BatchNorm2d):
    """`nn.BatchNorm2d` run by the Triton kernels (same parameters, buffers, state_dict and
    running-stat updates), with an optional fused epilogue: forward(x, residual=None)
    returns act(bn(x) + residual), activation None or "relu"."""

    def __init__(self, *args, activation: str | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
        self.activation = activation

    def _state(self):
        """nn.BatchNorm2d's rules: batch statistics in training or without running stats;
        running stats (and the batch count) updated only in training when tracked.
        Returns (running_mean, running_var, training, num_batches_tracked) to pass on."""
        training = self.training or (self.running_mean is None and self.running_var is None)
        track = not self.training or self.track_running_stats
        counting = self.training and self.track_running_stats and self.num_batches_tracked is not None
        return (self.running_mean if track else None, self.running_var if track else None, training,
                self.num_batches_tracked if counting else None)

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        self._check_input_dim(x)
        running_mean, running_var, training, batches = self._state()
        return batch_norm(x, running_mean, running_var, self.weight, self.bias, training, self.momentum, self.eps,
                          residual=residual, activation=self.activation, num_batches_tracked=batches)

    def extra_repr(self) -> str:
        s = super().extra_repr()
        return s + (f", activation={self.activation!r}" if self.activation else "")


class ConvBatchNorm2d(BatchNorm2d):
    """A BatchNorm2d that runs the conv before it too (`conv`: that conv's module, held by
    reference and not registered, so each keeps its own parameters and state_dict keys):
    forward(x, residual=None) = act(bn(conv(x)) + residual). In training with batch
    statistics, the conv kernel's store also emits the output's per-channel statistics, so
    the BatchNorm never reads the conv output for them (one pass over it instead of two)."""

    conv: torch.nn.Conv2d

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        c = self.conv
        running_mean, running_var, training, batches = self._state()
        if not training or x.dim() != 4:
            return super().forward(conv2d(x, c.weight, c.bias, c.stride, c.padding, c.dilation, c.groups), residual)
        y, partials = conv2d_with_stats(x, c.weight, c.bias, c.stride, c.padding, c.dilation, c.groups)
        self._check_input_dim(y)
        return batch_norm(y, running_mean, running_var, self.weight, self.bias, training, self.momentum, self.eps,
                          residual=residual, activation=self.activation, num_batches_tracked=batches,
                          partials=partials)


class BatchNormReLUMaxPool2d(BatchNorm2d):
    """nn.BatchNorm2d, ReLU and nn.MaxPool2d in one module (ResNet's stem): BatchNorm2d's
    parameters and buffers; the pool's geometry as keyword arguments."""

    def __init__(self, *args, kernel_size, stride=None, padding=0, ceil_mode=False, **kwargs):
        super().__init__(*args, activation="relu", **kwargs)
        self.pool = (kernel_size, stride, padding, ceil_mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(x)
        running_mean, running_var, training, batches = self._state()
        k, s, p, ceil = self.pool
        return batch_norm_relu_max_pool2d(x, running_mean, running_var, self.weight, self.bias, training,
                                          self.momentum, self.eps, kernel_size=k, stride=s, padding=p,
                                          ceil_mode=ceil, num_batches_tracked=batches)

    def extra_repr(self) -> str:
        k, s, p, ceil = self.pool
        return super().extra_repr() + f", pool=(kernel_size={k}, stride={s}, padding={p}, ceil_mode={ceil})"
