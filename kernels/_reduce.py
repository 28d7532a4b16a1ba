"""Reductions in Triton: column sums (bias gradients, the reduction of split-K fp32
partials) and per-channel statistics partials (BatchNorm's batch statistics).

`column_sum(t)` sums a 2-D [rows, cols] tensor over its rows in fp32 and casts once at the
store. Long columns (a bias gradient reduces over N*P*Q rows) are split across programs
into fp32 partials first, then summed again, so the work spreads over the whole device.

`channel_stats_partials(x)` gives the (mean, M2) of each channel of an [N, C, H, W] tensor
over ranges of its pixels (blocks merged by Chan's update; `batchnorm.py` says why not sum
and sum of squares), which BatchNorm's finalize merges: the statistics of a BatchNorm's
input, and of a conv output whose path has no statistics epilogue (`conv.py`).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._utils import cdiv, needs_int64, next_pow2, sm_count
from .configs import interpreting


@triton.jit
def pixel_rows(offs, H, W):
    """n, h, w of flat pixel indices over [N, H, W]."""
    return offs // (H * W), (offs // W) % H, offs % W


@triton.jit
def _colsum_kernel(
    in_ptr, out_ptr,
    # problem sizes
    ROWS, COLS, ROWS_PER_SPLIT,
    # strides: input (row, col), output (split, col)
    s_in_r, s_in_c,
    s_out_s, s_out_c,
    BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr, INDEX_64: tl.constexpr,
):
    """out[split, c] = sum of in[r, c] for r in this split's row range (fp32 accumulation,
    fp64 for fp64 input)."""
    ACC: tl.constexpr = tl.float64 if in_ptr.dtype.element_ty == tl.float64 else tl.float32
    pid_c = tl.program_id(0)
    split = tl.program_id(1)
    offs_c = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    mask_c = offs_c < COLS
    r_start = split * ROWS_PER_SPLIT
    r_end = tl.minimum(r_start + ROWS_PER_SPLIT, ROWS)
    acc = tl.zeros((BLOCK_R, BLOCK_C), dtype=ACC)
    for r0 in range(r_start, r_end, BLOCK_R):
        offs_r = r0 + tl.arange(0, BLOCK_R)
        if INDEX_64:
            offs_r = offs_r.to(tl.int64)
        mask = (offs_r[:, None] < r_end) & mask_c[None, :]
        ptrs = in_ptr + offs_r[:, None] * s_in_r + offs_c[None, :] * s_in_c
        acc += tl.load(ptrs, mask=mask, other=0.0).to(ACC)
    total = tl.sum(acc, axis=0)
    tl.store(out_ptr + split * s_out_s + offs_c * s_out_c,
             total.to(out_ptr.dtype.element_ty), mask=mask_c)


def column_sum(t: torch.Tensor, out_dtype: torch.dtype | None = None) -> torch.Tensor:
    """Sum a 2-D tensor over dim 0 -> [cols], fp32 accumulation (fp64 for fp64), cast once
    to `out_dtype`. A meta tensor gives a meta result; no rows give zeros."""
    if t.dim() != 2:
        raise ValueError(f"column_sum expects a 2-D tensor, got shape {tuple(t.shape)}")
    rows, cols = t.shape
    out_dtype = out_dtype or t.dtype
    out = torch.empty((1, cols), device=t.device, dtype=out_dtype)
    if t.is_meta or cols == 0:
        return out.view(cols)
    if rows == 0:
        return out.zero_().view(cols)
    block_c = min(next_pow2(cols), 16 if interpreting() else 128)
    block_r = 16 if interpreting() else 32
    grid_c = cdiv(cols, block_c)
    # Enough splits that the column programs x splits cover the device a few times over.
    target = 4 if interpreting() else 4 * sm_count(t.device)
    splits = max(1, min(cdiv(rows, 8 * block_r), cdiv(target, grid_c)))
    index_64 = needs_int64(t)
    if splits == 1:
        _colsum_kernel[(grid_c, 1)](t, out, rows, cols, rows, t.stride(0), t.stride(1),
                                    out.stride(0), out.stride(1),
                                    BLOCK_R=block_r, BLOCK_C=block_c, INDEX_64=index_64)
        return out.view(cols)
    per_split = cdiv(rows, splits)
    partial = torch.empty((splits, cols), device=t.device,
                          dtype=torch.float64 if t.dtype == torch.float64 else torch.float32)
    _colsum_kernel[(grid_c, splits)](t, partial, rows, cols, per_split, t.stride(0), t.stride(1),
                                     partial.stride(0), partial.stride(1),
                                     BLOCK_R=block_r, BLOCK_C=block_c, INDEX_64=index_64)
    return column_sum(partial, out_dtype)


@triton.jit
def _bn_stats_kernel(
    x_ptr, mean_part_ptr, m2_part_ptr,
    # problem sizes: x [N, C, H, W] with P = N*H*W pixels, split in ranges of ROWS_PER_SPLIT
    P, C, H, W, ROWS_PER_SPLIT,
    # strides: x (n, c, h, w); the partials are dense [splits, C]
    sxn, sxc, sxh, sxw,
    BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr, INDEX_64: tl.constexpr,
):
    """(mean, M2) of each channel over this split's pixels, blocks merged by Chan's update."""
    ACC: tl.constexpr = tl.float64 if x_ptr.dtype.element_ty == tl.float64 else tl.float32
    offs_c = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
    mask_c = offs_c < C
    split = tl.program_id(1)
    r_start = split * ROWS_PER_SPLIT
    r_end = tl.minimum(r_start + ROWS_PER_SPLIT, P)
    count = tl.full((), 0.0, ACC)
    mean = tl.zeros((BLOCK_C,), dtype=ACC)
    m2 = tl.zeros((BLOCK_C,), dtype=ACC)
    for r0 in range(r_start, r_end, BLOCK_R):
        offs_r = r0 + tl.arange(0, BLOCK_R)
        if INDEX_64:
            offs_r = offs_r.to(tl.int64)
        n, h, w = pixel_rows(offs_r, H, W)
        mask = (offs_r < r_end)[:, None] & mask_c[None, :]
        v = tl.load(x_ptr + (n * sxn + h * sxh + w * sxw)[:, None] + (offs_c * sxc)[None, :],
                    mask=mask, other=0.0).to(ACC)
        nb = tl.minimum(r_end - r0, BLOCK_R).to(ACC)
        mean_b = tl.sum(v, axis=0) / nb
        d = tl.where(mask, v - mean_b[None, :], 0.0)
        m2_b = tl.sum(d * d, axis=0)
        total = count + nb
        delta = mean_b - mean
        mean += delta * (nb / total)
        m2 += m2_b + delta * delta * (count * nb / total)
        count = total
    tl.store(mean_part_ptr + split * C + offs_c, mean, mask=mask_c)
    tl.store(m2_part_ptr + split * C + offs_c, m2, mask=mask_c)


def acc_dtype(x: torch.Tensor) -> torch.dtype:
    """The statistics' and partial sums' dtype: fp32, fp64 for float64 tensors."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def split_plan(P: int, C: int, device) -> tuple[int, int, int, int]:
    """(BLOCK_R, BLOCK_C, splits, rows per split) for the per-channel reductions: enough
    programs to fill the device a few times over, each looping over >= 8 row blocks."""
    block_c = min(next_pow2(C), 256 if interpreting() else 32)
    block_r = 64
    grid_c = cdiv(C, block_c)
    target = 4 if interpreting() else 4 * sm_count(device)
    splits = max(1, min(cdiv(P, 8 * block_r), cdiv(target, grid_c)))
    per_split = cdiv(cdiv(P, splits), block_r) * block_r
    return block_r, block_c, cdiv(P, per_split), per_split


def channel_stats_partials(x: torch.Tensor) -> tuple[torch.Tensor, int, int]:
    """(part, splits, rows per split): part[0, s] and part[1, s] are the mean and M2 of each
    channel of x [N, C, H, W] (any strides, N*H*W > 0) over pixels [s*rows, (s+1)*rows)."""
    N, C, H, W = x.shape
    P = N * H * W
    block_r, block_c, splits, per_split = split_plan(P, C, x.device)
    part = torch.empty((2, splits, C), device=x.device, dtype=acc_dtype(x))
    _bn_stats_kernel[(cdiv(C, block_c), splits)](
        x, part[0], part[1], P, C, H, W, per_split, *x.stride(),
        BLOCK_R=block_r, BLOCK_C=block_c, INDEX_64=needs_int64(x))
    return part, splits, per_split
