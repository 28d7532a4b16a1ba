"""Column sums in Triton: bias gradients and the reduction of split-K fp32 partials.

`column_sum(t)` sums a 2-D [rows, cols] tensor over its rows in fp32 and casts once at the
store. Long columns (a bias gradient reduces over N*P*Q rows) are split across programs
into fp32 partials first, then summed again, so the work spreads over the whole device.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._utils import needs_int64, sm_count
from .configs import interpreting


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
    block_c = min(triton.next_power_of_2(cols), 16 if interpreting() else 128)
    block_r = 16 if interpreting() else 32
    grid_c = triton.cdiv(cols, block_c)
    # Enough splits that the column programs x splits cover the device a few times over.
    target = 4 if interpreting() else 4 * sm_count(t.device)
    splits = max(1, min(triton.cdiv(rows, 8 * block_r), triton.cdiv(target, grid_c)))
    index_64 = needs_int64(t)
    if splits == 1:
        _colsum_kernel[(grid_c, 1)](t, out, rows, cols, rows, t.stride(0), t.stride(1),
                                    out.stride(0), out.stride(1),
                                    BLOCK_R=block_r, BLOCK_C=block_c, INDEX_64=index_64)
        return out.view(cols)
    per_split = triton.cdiv(rows, splits)
    partial = torch.empty((splits, cols), device=t.device,
                          dtype=torch.float64 if t.dtype == torch.float64 else torch.float32)
    _colsum_kernel[(grid_c, splits)](t, partial, rows, cols, per_split, t.stride(0), t.stride(1),
                                     partial.stride(0), partial.stride(1),
                                     BLOCK_R=block_r, BLOCK_C=block_c, INDEX_64=index_64)
    return column_sum(partial, out_dtype)

