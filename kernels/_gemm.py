"""Jit helpers shared by the GEMM-shaped conv kernels (`conv.py`, `conv1x1.py`,
`conv_tma.py`): the program -> tile mapping, the flat pixel index decoding, the fused
forward epilogue and a gradient taken through a ReLU from its saved output.

Imports triton only.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def tile_ids(pid, M, N, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, GROUP_M: tl.constexpr):
    """Program id -> (tile row, tile col), GROUP_M row tiles at a time for L2 reuse."""
    num_m = tl.cdiv(M, BLOCK_M)
    num_n = tl.cdiv(N, BLOCK_N)
    per_group = GROUP_M * num_n
    first_m = (pid // per_group) * GROUP_M
    rows = tl.minimum(num_m - first_m, GROUP_M)
    pid_m = first_m + (pid % per_group) % rows
    pid_n = (pid % per_group) // rows
    return pid_m, pid_n


@triton.jit
def decode_pixels(offs, P, Q, INDEX_64: tl.constexpr):
    """Flat pixel index over (n, p, q) -> its three coordinates (int64 when asked)."""
    if INDEX_64:
        offs = offs.to(tl.int64)
    n = offs // (P * Q)
    pq = offs % (P * Q)
    return n, pq // Q, pq % Q


@triton.jit
def relu_backward(g, m_ptrs, mask):
    """g taken through a ReLU whose output is at m_ptrs: zero where that output is <= 0 (a
    NaN output lets g through, as torch's threshold_backward)."""
    return tl.where(tl.load(m_ptrs, mask=mask, other=0.0) <= 0, 0.0, g)


@triton.jit
def fused_epilogue(acc, offs_m, mask_m, k_out, mask_n, b_ptr, r_ptr, y_ptr,
                   n, p, q, syn, syk, syp, syq, srn, srk, srp, srq, sb,
                   HAS_BIAS: tl.constexpr, HAS_RESIDUAL: tl.constexpr, RELU: tl.constexpr):
    """y = act(acc + bias + residual) in the accumulator's dtype, cast once at the store."""
    mask = mask_m[:, None] & mask_n[None, :]
    if HAS_BIAS:
        acc += tl.load(b_ptr + k_out * sb, mask=mask_n, other=0.0).to(acc.dtype)[None, :]
    if HAS_RESIDUAL:
        r_off = n * srn + p * srp + q * srq
        acc += tl.load(r_ptr + r_off[:, None] + k_out[None, :] * srk, mask=mask, other=0.0).to(acc.dtype)
    if RELU:
        acc = tl.where(acc < 0, 0.0, acc)  # NaN stays NaN, as in torch.relu
    y_off = n * syn + p * syp + q * syq
    tl.store(y_ptr + y_off[:, None] + k_out[None, :] * syk, acc.to(y_ptr.dtype.element_ty), mask=mask)
