"""Implicit-GEMM 2-D convolution in Triton: forward, data-grad and weight-grad, with the
bias, residual add and ReLU fused into the forward GEMM's store.

Tiers: `_conv_fwd_kernel`, `_conv_dgrad_kernel`, `_conv_wgrad_kernel` -> launchers
`conv2d_forward`, `conv2d_input_grad`, `conv2d_weight_grad` -> `Conv2dFunction` ->
`Conv2d` (an `nn.Conv2d`, so state_dicts interchange with torch layers). No call into
torch's convolution anywhere: torch only allocates, changes layout, and is the test oracle.

The GEMMs, with activations NHWC (channels_last memory) and filters KRSC:
  forward     M = N*P*Q output pixels, N = C_out/groups, K = R*S*C/groups (channels innermost)
  data-grad   M = N*H*W input pixels (one dense sub-problem per stride phase), N = C/groups,
              K = taps-of-that-phase * C_out/groups, over grad_out and the filter
  weight-grad M = C_out/groups, N = R*S*C/groups, K = N*P*Q, split-K into fp32 partials
Padding is a load mask: no im2col and no padded copy of the input is ever materialized.

The K loop runs one of two ways (constexpr K_CHUNK, `k_chunk`): tap by tap with a channel
block where the channels fill every block, else over the flattened (tap, channel) decoded
per run of 16, 8, 4, 2 or 1 channels, so every K step is full: a C=3 stem packs 16+
useful values into each step instead of 3, a 48-channel tap no longer leaves a quarter of
its second step idle. FLAT_K (C < 16) stays in the autotune key, K_CHUNK follows from
the key's channel count.

Each public launcher is a dispatch point: a 1x1 stride-1 conv (one group, no padding) may
also run as a plain TMA-fed GEMM (`conv1x1.py`); a strided conv over few channels (one
group, no dilation, C*sh*sw <= 64: the stems) as a space-to-depth rewrite (`stem.py`), a
stride-1 conv over 16-multiple channels that this module's generic launchers run tap by
tap; a stride-1 KxK conv's three passes as TMA box loads over output patches
(`conv_tma.py`). `race.py` picks among the candidates per shape (forced path, tuned table
record, or a timed race) and the generic kernel serves the rest.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import triton
import triton.language as tl

from . import configs as _configs
from . import race
from ._gemm import decode_pixels, fused_epilogue, relu_backward, tile_ids
from ._reduce import channel_stats_partials, column_sum
from ._utils import (
    cdiv,
    check_float_tensor,
    check_same,
    describe,
    dot_precision,
    first_order,
    needs_int64,
    no_launch,
    pair,
    sm_count,
)
from .configs import autotune
from .conv1x1 import conv1x1_forward, conv1x1_input_grad, conv1x1_weight_grad, eligible
from .conv_tma import conv_tma_forward, conv_tma_input_grad, conv_tma_weight_grad, eligible_tma_kxk
from .residual import relu_grad
from .stem import eligible_s2d, s2d_forward, s2d_input_grad, s2d_weight_grad
from .tuned import tuned_split

# Rows per piece of the forward's statistics epilogue: the smallest output tile of any
# forward config (GPU or interpreter), which every tile size is a multiple of.
STATS_ROWS = min(c.kwargs["BLOCK_M"] for c in _configs.CONV_GEMM + _configs._INTERPRET["conv_gemm"])

# Below this many channels per group the tap-by-tap K loop wastes most of each K step.
FLAT_K_MAX_CHANNELS = 16
# The widest channel block of the tap-by-tap loops: every BLOCK_K of CONV_GEMM, and the
# 64-column weight-grad tiles (its 128-column tiles also serve multiples of 128 whole).
K_STEP_MAX = 64
ACTIVATIONS = (None, "relu")
# The forward kernel's constexprs describing a space-to-depth rewrite (`_generic_forward`'s fold)
FOLD_ARGS = ("FOLD_SH", "FOLD_SW", "FOLD_R", "FOLD_S", "FOLD_C", "FOLD_CZ")

_SHAPE_KEY = ["BATCH", "H", "W", "CG", "P", "Q", "KG", "R", "S", "stride_h", "stride_w",
              "dil_h", "dil_w", "FLAT_K", "DOT_PRECISION"]


def k_chunk(channels: int) -> int:
    """The K loop's shape for `channels` per tap (the kernels' K_CHUNK): 0, tap by tap in
    channel blocks, where every block is full (channels a multiple of K_STEP_MAX); else the
    loop over the flattened (tap, channel) in runs of the largest power of two <= 16 that
    divides `channels` (1: element by element, e.g. the C=3 stems). A 48-channel tap in
    64-wide K steps leaves 25% of each step idle, 16 channels 75%; flattened, every step but
    the last is full and each run of 8 or 16 channels is one 16- or 32-byte load."""
    if channels % K_STEP_MAX == 0:
        return 0
    return math.gcd(channels, 16) if channels else 1


def conv_output_size(size: int, kernel: int, stride: int, padding: int, dilation: int = 1) -> int:
    """Output length of a convolution along one spatial dimension (torch's formula)."""
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


# --------------------------------------------------------------------------- shared jit math
@triton.jit
def tile_stats(acc, offs_m, M, k_out, mask_n, b_ptr, sb, y_ptr, st_ptr, st_plane, KT,
               HAS_BIAS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, STATS_ROWS: tl.constexpr):
    """(mean, M2) of each column of the tile's output as stored (acc + bias, rounded to y's
    dtype) over each STATS_ROWS-row piece of it: piece t (global rows [t*STATS_ROWS, ...))
    to st_ptr[t*KT + k] and st_ptr[st_plane + t*KT + k]. Pieces of a fixed size, whatever
    the config's BLOCK_M, so the reader needs no knowledge of the launch."""
    v = acc
    if HAS_BIAS:
        v += tl.load(b_ptr + k_out * sb, mask=mask_n, other=0.0).to(acc.dtype)[None, :]
    v = v.to(y_ptr.dtype.element_ty).to(acc.dtype)
    PIECES: tl.constexpr = BLOCK_M // STATS_ROWS
    rows = tl.reshape(offs_m, (PIECES, STATS_ROWS))
    valid = (rows < M)[:, :, None] & mask_n[None, None, :]
    v = tl.reshape(v, (PIECES, STATS_ROWS, BLOCK_N))
    first = tl.min(rows, axis=1)  # each piece's first row
    count = tl.minimum(tl.maximum(M - first, 0), STATS_ROWS)
    mean = tl.sum(tl.where(valid, v, 0.0), axis=1) / tl.maximum(count, 1).to(acc.dtype)[:, None]
    d = tl.where(valid, v - mean[:, None, :], 0.0)
    m2 = tl.sum(d * d, axis=1)
    ptrs = st_ptr + (first // STATS_ROWS)[:, None] * KT + k_out[None, :]
    keep = (count > 0)[:, None] & mask_n[None, :]
    tl.store(ptrs, mean, mask=keep)
    tl.store(ptrs + st_plane, m2, mask=keep)


@triton.jit
def chunk_decode(offs, CH, K_CHUNK: tl.constexpr):
    """Flat index over (tap, channel), channels innermost, CH channels per tap -> (channel,
    tap), decoded per run of K_CHUNK channels (CH a multiple of K_CHUNK): the channel is a
    run's first channel plus offs % K_CHUNK, so the compiler sees K_CHUNK contiguous
    channels (one vector load each for channels-innermost memory). K_CHUNK = 1 decodes each
    element on its own (any CH)."""
    run = offs // K_CHUNK
    runs_per_tap = CH // K_CHUNK
    return (run % runs_per_tap) * K_CHUNK + offs % K_CHUNK, run // runs_per_tap


@triton.jit
def folded_tap(tap, c, SH: tl.constexpr, SW: tl.constexpr, R: tl.constexpr, S: tl.constexpr, C: tl.constexpr,
               CZ: tl.constexpr):
    """True where (tap row `tap`, channel `c`) of the space-to-depth rewrite's row view
    (stem.py: c = b*CZ + (i*SW + j)*C + c0) is a tap of the original R x S filter, (tap*SH + i,
    b*SW + j), not one past it nor a pad channel. The rewritten filter is zero elsewhere, and
    its input must count as zero there too: 0 * inf and 0 * NaN are NaN, in outputs whose
    torch conv never multiplies that value."""
    b = c // CZ
    blk = (c % CZ) // C
    return (blk < SH * SW) & (tap * SH + blk // SW < R) & (b * SW + blk % SW < S)


# --------------------------------------------------------------------------- kernels
@autotune("conv_gemm", key=_SHAPE_KEY)
@triton.jit
def _conv_fwd_kernel(
    x_ptr, w_ptr, b_ptr, r_ptr, y_ptr, st_ptr,
    # problem sizes (CG, KG: input / output channels per group; pad_h, pad_w: the top and
    # left padding, P and Q set the bottom and right: torch's asymmetric 'same')
    BATCH, H, W, CG, P, Q, KG, R, S,
    stride_h, stride_w, pad_h, pad_w, dil_h, dil_w,
    # strides, each tensor in torch's dim order: x (n, c, h, w), w (k, c, r, s),
    # y and residual (n, k, p, q), bias (k)
    sxn, sxc, sxh, sxw,
    swk, swc, swr, sws,
    syn, syk, syp, syq,
    srn, srk, srp, srq,
    sb,
    # STATS: the per-channel statistics pieces, dense [2, pieces, groups*KG] (plane stride
    # st_plane): the (mean, M2) of each output channel over each STATS_ROWS pixels
    st_plane,
    # meta-parameters
    HAS_BIAS: tl.constexpr, HAS_RESIDUAL: tl.constexpr, RELU: tl.constexpr, STATS: tl.constexpr,
    STATS_ROWS: tl.constexpr, FLAT_K: tl.constexpr, K_CHUNK: tl.constexpr, DOT_PRECISION: tl.constexpr,
    INDEX_64: tl.constexpr,
    # FOLD_SH > 0: x and w are a space-to-depth rewrite (stem.py) of a conv with stride
    # (FOLD_SH, FOLD_SW), an FOLD_R x FOLD_S filter and FOLD_C channels, z having FOLD_CZ
    FOLD_SH: tl.constexpr, FOLD_SW: tl.constexpr, FOLD_R: tl.constexpr, FOLD_S: tl.constexpr,
    FOLD_C: tl.constexpr, FOLD_CZ: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):
    """y[n, g*KG + k, p, q] = act(sum_{r,s,c} x[n, g*CG + c, p*sh - ph + r*dh, q*sw - pw + s*dw]
    * w[g*KG + k, c, r, s] + b[k] + residual[...]).

    x: [BATCH, groups*CG, H, W], best channels_last; w: [groups*KG, CG, R, S], best KRSC
    (channels_last); y, residual: [BATCH, groups*KG, P, Q]; b: [groups*KG]; any strides.
    Accumulates in fp32, or fp64 for fp64 tensors. Grid: (M tiles * N tiles, groups).
    STATS (launched without residual or activation): also the (mean, M2) of each output
    channel over the tile's pixels, of y as stored (rounded to y's dtype, as a BatchNorm
    reading y would see it), for a BatchNorm's statistics without another read of y.
    FOLD_SH > 0: x and w are a space-to-depth rewrite's z (row view) and w2 (stem.py); x
    counts only where w2 holds a tap of the original filter (`folded_tap`).
    """
    ACC: tl.constexpr = tl.float64 if x_ptr.dtype.element_ty == tl.float64 else tl.float32
    g = tl.program_id(1)
    M = BATCH * P * Q
    pid_m, pid_n = tile_ids(tl.program_id(0), M, KG, BLOCK_M, BLOCK_N, GROUP_M)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_m = offs_m < M
    mask_n = offs_n < KG
    n, p, q = decode_pixels(offs_m, P, Q, INDEX_64)
    ih0 = p * stride_h - pad_h
    iw0 = q * stride_w - pad_w
    x_rows = x_ptr + n * sxn + (g * CG) * sxc
    k_out = g * KG + offs_n
    w_cols = w_ptr + k_out * swk

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC)
    if K_CHUNK > 0:
        for k0 in range(0, R * S * CG, BLOCK_K):
            offs_k = k0 + tl.arange(0, BLOCK_K)
            mask_k = offs_k < R * S * CG
            c, tap = chunk_decode(offs_k, CG, K_CHUNK)
            r = tap // S
            s = tap % S
            ih = ih0[:, None] + (r * dil_h)[None, :]
            iw = iw0[:, None] + (s * dil_w)[None, :]
            ok = (mask_m[:, None] & mask_k[None, :] & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W))
            a = tl.load(x_rows[:, None] + ih * sxh + iw * sxw + c[None, :] * sxc, mask=ok, other=0.0)
            if FOLD_SH > 0:  # zeroed after the load, which keeps its vector width
                a = tl.where(folded_tap(r, c, FOLD_SH, FOLD_SW, FOLD_R, FOLD_S, FOLD_C, FOLD_CZ)[None, :], a, 0.0)
            b = tl.load(w_cols[None, :] + (c * swc + r * swr + s * sws)[:, None],
                        mask=mask_k[:, None] & mask_n[None, :], other=0.0)
            acc = tl.dot(a, b, acc, input_precision=DOT_PRECISION, out_dtype=ACC)
    else:
        num_cb = tl.cdiv(CG, BLOCK_K)
        for it in range(R * S * num_cb):
            rs = it // num_cb
            r = rs // S
            s = rs % S
            offs_k = (it % num_cb) * BLOCK_K + tl.arange(0, BLOCK_K)
            mask_k = offs_k < CG
            ih = ih0 + r * dil_h
            iw = iw0 + s * dil_w
            ok_m = mask_m & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
            a = tl.load(x_rows[:, None] + (ih * sxh + iw * sxw)[:, None] + offs_k[None, :] * sxc,
                        mask=ok_m[:, None] & mask_k[None, :], other=0.0)
            if FOLD_SH > 0:  # zeroed after the load, which keeps its vector width
                a = tl.where(folded_tap(r, offs_k, FOLD_SH, FOLD_SW, FOLD_R, FOLD_S, FOLD_C, FOLD_CZ)[None, :],
                             a, 0.0)
            b = tl.load(w_cols[None, :] + offs_k[:, None] * swc + r * swr + s * sws,
                        mask=mask_k[:, None] & mask_n[None, :], other=0.0)
            acc = tl.dot(a, b, acc, input_precision=DOT_PRECISION, out_dtype=ACC)

    if STATS:
        tile_stats(acc, offs_m, M, k_out, mask_n, b_ptr, sb, y_ptr, st_ptr, st_plane, tl.num_programs(1) * KG,
                   HAS_BIAS, BLOCK_M, BLOCK_N, STATS_ROWS)
    fused_epilogue(acc, offs_m, mask_m, k_out, mask_n, b_ptr, r_ptr, y_ptr,
                   n, p, q, syn, syk, syp, syq, srn, srk, srp, srq, sb,
                   HAS_BIAS, HAS_RESIDUAL, RELU)


@autotune("conv_gemm", key=_SHAPE_KEY)
@triton.jit
def _conv_dgrad_kernel(
    dy_ptr, o_ptr, w_ptr, m_ptr, dx_ptr,
    # problem sizes; tap_step_h = stride_h / gcd(stride_h, dil_h): the tap distance
    # between two taps that reach the same stride phase (likewise along w)
    BATCH, H, W, CG, P, Q, KG, R, S,
    stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, tap_step_h, tap_step_w,
    # strides: dy and the conv's output o (n, k, p, q), w (k, c, r, s), mask source and dx
    # (n, c, h, w)
    sdyn, sdyk, sdyp, sdyq,
    son, sok, sop, soq,
    swk, swc, swr, sws,
    smn, smc, smh, smw,
    sdxn, sdxc, sdxh, sdxw,
    # meta-parameters
    DY_RELU: tl.constexpr, RELU_MASK: tl.constexpr, FLAT_K: tl.constexpr, K_CHUNK: tl.constexpr,
    DOT_PRECISION: tl.constexpr, INDEX_64: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):
    """dx[n, g*CG + c, h, w] = sum over taps (r, s) and k of dy[n, g*KG + k, p, q] *
    w[g*KG + k, c, r, s], where h = p*sh - ph + r*dh and w = q*sw - pw + s*dw.

    Stride phases: the input pixels with h = a (mod sh), w = b (mod sw) are reached only by
    the taps with r*dh = a + ph (mod sh): r = r0 + tr * tap_step_h (none when no r0 exists),
    through p = p0 - tr * tap_step_h * dh / sh (likewise along w). Without dilation that is
    r = r0 (mod sh), p = p0 - tr. Each phase is a dense GEMM; no zero-inserted grad_out
    exists. Grid: (tiles, groups * sh * sw).
    RELU_MASK: the conv's input m came out of a ReLU; zero dx where m <= 0 (torch's
    threshold_backward), fusing that ReLU's backward into this store.
    DY_RELU: the conv's own output o went through a ReLU and dy is the grad of that ReLU's
    output: dy is read as zero where o <= 0 (threshold_backward: a NaN o lets it through), in
    the operand load (no masked copy of dy).
    FLAT_K is unused here (kept in the signature so one autotune key serves all kernels);
    K_CHUNK shapes the loop over (tap, k) as the forward's over (tap, c).
    """
    ACC: tl.constexpr = tl.float64 if dy_ptr.dtype.element_ty == tl.float64 else tl.float32
    z = tl.program_id(1)
    num_phases = stride_h * stride_w
    g = z // num_phases
    a = (z % num_phases) // stride_w
    b = (z % num_phases) % stride_w
    HP = tl.cdiv(H, stride_h)
    WP = tl.cdiv(W, stride_w)
    M = BATCH * HP * WP
    pid_m, pid_n = tile_ids(tl.program_id(0), M, CG, BLOCK_M, BLOCK_N, GROUP_M)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_c = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    n, i, j = decode_pixels(offs_m, HP, WP, INDEX_64)
    h = a + i * stride_h
    w = b + j * stride_w
    mask_m = (offs_m < M) & (h < H) & (w < W)
    mask_c = offs_c < CG
    # The first tap of this phase: the smallest r with r*dh = a + ph (mod sh); tap_step_h
    # when there is none (the phase is reached by no tap: dx is zero there).
    r0 = tap_step_h
    for r in range(tap_step_h):
        r0 = tl.where((r0 == tap_step_h) & ((r * dil_h) % stride_h == (a + pad_h) % stride_h), r, r0)
    s0 = tap_step_w
    for s in range(tap_step_w):
        s0 = tl.where((s0 == tap_step_w) & ((s * dil_w) % stride_w == (b + pad_w) % stride_w), s, s0)
    # Exact divisions (the phase makes the numerators multiples of the stride).
    p0 = (h + pad_h - r0 * dil_h) // stride_h
    q0 = (w + pad_w - s0 * dil_w) // stride_w
    p_step = tap_step_h * dil_h // stride_h
    q_step = tap_step_w * dil_w // stride_w
    taps_r = tl.where(r0 < tap_step_h, tl.cdiv(R - r0, tap_step_h), 0)  # 0 also when r0 >= R
    taps_s = tl.where(s0 < tap_step_w, tl.cdiv(S - s0, tap_step_w), 0)
    dy_rows = dy_ptr + n * sdyn
    o_rows = o_ptr + n * son
    w_cols = w_ptr + offs_c * swc

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC)
    if K_CHUNK > 0:  # K flattened over (tap of this phase, k) in runs of K_CHUNK channels
        for k0 in range(0, taps_r * taps_s * KG, BLOCK_K):
            offs_f = k0 + tl.arange(0, BLOCK_K)
            kk, t = chunk_decode(offs_f, KG, K_CHUNK)
            tr = t // taps_s
            ts = t % taps_s
            p = p0[:, None] - (tr * p_step)[None, :]
            q = q0[:, None] - (ts * q_step)[None, :]
            k_glob = g * KG + kk
            mask_k = offs_f < taps_r * taps_s * KG
            ok = mask_m[:, None] & mask_k[None, :] & (p >= 0) & (p < P) & (q >= 0) & (q < Q)
            a_tile = tl.load(dy_rows[:, None] + p * sdyp + q * sdyq + k_glob[None, :] * sdyk, mask=ok, other=0.0)
            if DY_RELU:
                a_tile = relu_backward(a_tile, o_rows[:, None] + p * sop + q * soq + k_glob[None, :] * sok, ok)
            w_tap = (r0 + tr * tap_step_h) * swr + (s0 + ts * tap_step_w) * sws
            b_tile = tl.load(w_cols[None, :] + (k_glob * swk + w_tap)[:, None],
                             mask=mask_k[:, None] & mask_c[None, :], other=0.0)
            acc = tl.dot(a_tile, b_tile, acc, input_precision=DOT_PRECISION, out_dtype=ACC)
    else:
        num_kb = tl.cdiv(KG, BLOCK_K)
        for it in range(taps_r * taps_s * num_kb):
            t = it // num_kb
            tr = t // taps_s
            ts = t % taps_s
            p = p0 - tr * p_step
            q = q0 - ts * q_step
            offs_k = (it % num_kb) * BLOCK_K + tl.arange(0, BLOCK_K)
            k_glob = g * KG + offs_k
            mask_k = offs_k < KG
            ok_m = mask_m & (p >= 0) & (p < P) & (q >= 0) & (q < Q)
            a_tile = tl.load(dy_rows[:, None] + (p * sdyp + q * sdyq)[:, None] + k_glob[None, :] * sdyk,
                             mask=ok_m[:, None] & mask_k[None, :], other=0.0)
            if DY_RELU:
                a_tile = relu_backward(a_tile, o_rows[:, None] + (p * sop + q * soq)[:, None] + k_glob[None, :] * sok,
                                       ok_m[:, None] & mask_k[None, :])
            w_tap = (r0 + tr * tap_step_h) * swr + (s0 + ts * tap_step_w) * sws
            b_tile = tl.load(w_cols[None, :] + k_glob[:, None] * swk + w_tap,
                             mask=mask_k[:, None] & mask_c[None, :], other=0.0)
            acc = tl.dot(a_tile, b_tile, acc, input_precision=DOT_PRECISION, out_dtype=ACC)

    c_glob = g * CG + offs_c
    if RELU_MASK:
        m_off = (n * smn + h * smh + w * smw)[:, None] + c_glob[None, :] * smc
        acc = relu_backward(acc, m_ptr + m_off, mask_m[:, None] & mask_c[None, :])
    dx_off = n * sdxn + h * sdxh + w * sdxw
    tl.store(dx_ptr + dx_off[:, None] + c_glob[None, :] * sdxc,
             acc.to(dx_ptr.dtype.element_ty), mask=mask_m[:, None] & mask_c[None, :])


@autotune("conv_wgrad", key=[*_SHAPE_KEY, "SPLIT_ROWS"])
@triton.jit
def _conv_wgrad_kernel(
    x_ptr, dy_ptr, o_ptr, dw_ptr, db_ptr,
    # problem sizes; SPLIT_ROWS: length of each split's share of the N*P*Q reduction (0:
    # derived from the grid's split count, each config's own)
    BATCH, H, W, CG, P, Q, KG, R, S,
    stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, SPLIT_ROWS,
    # strides: x (n, c, h, w), dy and the conv's output o (n, k, p, q), dw (split, k, c, r, s),
    # db (split, k)
    sxn, sxc, sxh, sxw,
    sdyn, sdyk, sdyp, sdyq,
    son, sok, sop, soq,
    sdwz, sdwk, sdwc, sdwr, sdws,
    sdbz, sdbk,
    # meta-parameters
    DY_RELU: tl.constexpr, BIAS_GRAD: tl.constexpr, FLAT_K: tl.constexpr, K_CHUNK: tl.constexpr,
    DOT_PRECISION: tl.constexpr, INDEX_64: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """dw[split, g*KG + k, c, r, s] = sum over this split's (n, p, q) of dy[n, g*KG + k, p, q]
    * x[n, g*CG + c, p*sh - ph + r*dh, q*sw - pw + s*dw].

    Rows are output channels, columns one tap's channel block (or, with FLAT_K, a block of
    the flattened R*S*CG). Grid: (row tiles * column tiles, splits, groups); with one split
    dw is the gradient itself, else fp32 (fp64 for fp64) partials summed afterwards.
    DY_RELU: dy read as zero where the conv's output o <= 0 (its ReLU's backward, as in the
    data-grad). BIAS_GRAD: the programs of the first column tile also sum their dy rows
    into db[split, g*KG + k], the bias gradient (or its partials), from the same loads.
    """
    ACC: tl.constexpr = tl.float64 if x_ptr.dtype.element_ty == tl.float64 else tl.float32
    pid = tl.program_id(0)
    split = tl.program_id(1)
    g = tl.program_id(2)
    num_rows = tl.cdiv(KG, BLOCK_M)
    offs_k = (pid % num_rows) * BLOCK_M + tl.arange(0, BLOCK_M)
    mask_k = offs_k < KG
    k_glob = g * KG + offs_k
    col = pid // num_rows
    if K_CHUNK > 0:
        offs_col = col * BLOCK_N + tl.arange(0, BLOCK_N)
        mask_col = offs_col < R * S * CG
        c, tap = chunk_decode(offs_col, CG, K_CHUNK)
        r = tap // S
        s = tap % S
    else:
        num_cb = tl.cdiv(CG, BLOCK_N)
        rs = col // num_cb
        c = (col % num_cb) * BLOCK_N + tl.arange(0, BLOCK_N)
        mask_col = c < CG
        r = rs // S
        s = rs % S
    x_cols = x_ptr + (g * CG + c) * sxc

    M = BATCH * P * Q
    rows = SPLIT_ROWS
    if SPLIT_ROWS == 0:  # the grid's split count: equal shares in whole K steps
        rows = tl.cdiv(tl.cdiv(M, tl.num_programs(1)), BLOCK_K) * BLOCK_K
    m_start = split * rows
    m_end = tl.minimum(m_start + rows, M)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC)
    db_acc = tl.zeros((BLOCK_M,), dtype=ACC)
    for m0 in range(m_start, m_end, BLOCK_K):
        offs_m = m0 + tl.arange(0, BLOCK_K)
        mask_m = offs_m < m_end
        n, p, q = decode_pixels(offs_m, P, Q, INDEX_64)
        a_tile = tl.load(dy_ptr + (n * sdyn + p * sdyp + q * sdyq)[None, :] + k_glob[:, None] * sdyk,
                         mask=mask_k[:, None] & mask_m[None, :], other=0.0)
        if DY_RELU:
            a_tile = relu_backward(a_tile, o_ptr + (n * son + p * sop + q * soq)[None, :] + k_glob[:, None] * sok,
                                   mask_k[:, None] & mask_m[None, :])
        if BIAS_GRAD:
            db_acc += tl.sum(a_tile.to(ACC), axis=1)
        ih = (p * stride_h - pad_h)[:, None] + r * dil_h
        iw = (q * stride_w - pad_w)[:, None] + s * dil_w
        ok = mask_m[:, None] & mask_col[None, :] & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
        b_tile = tl.load(x_cols[None, :] + (n * sxn)[:, None] + ih * sxh + iw * sxw, mask=ok, other=0.0)
        acc = tl.dot(a_tile, b_tile, acc, input_precision=DOT_PRECISION, out_dtype=ACC)

    # r, s are scalars (one tap) or vectors (K_CHUNK); either broadcasts along the columns.
    dw_off = split * sdwz + k_glob[:, None] * sdwk + (c * sdwc + r * sdwr + s * sdws)[None, :]
    tl.store(dw_ptr + dw_off, acc.to(dw_ptr.dtype.element_ty), mask=mask_k[:, None] & mask_col[None, :])
    if BIAS_GRAD:
        if col == 0:
            tl.store(db_ptr + split * sdbz + k_glob * sdbk, db_acc.to(db_ptr.dtype.element_ty), mask=mask_k)


# --------------------------------------------------------------------------- host side
class ConvGeometry:
    """Validated sizes of one convolution; every launcher derives its grid from this.

    `padding` is the (top, left) padding the kernels offset by; the bottom and right
    padding only set P and Q (torch's 'same' pads one more at the end for an odd total)."""

    __slots__ = ("C", "CG", "H", "K", "KG", "N", "P", "Q", "R", "S", "W", "dilation", "groups", "padding",
                 "stride")

    def __init__(self, x_shape, w_shape, stride, pads, dilation, groups):
        self.N, self.C, self.H, self.W = x_shape
        self.K, self.CG, self.R, self.S = w_shape
        top, bottom, left, right = pads
        self.stride, self.padding, self.dilation, self.groups = stride, (top, left), dilation, groups
        self.KG = self.K // groups
        self.P = (self.H + top + bottom - dilation[0] * (self.R - 1) - 1) // stride[0] + 1
        self.Q = (self.W + left + right - dilation[1] * (self.S - 1) - 1) // stride[1] + 1

    @property
    def out_shape(self) -> tuple[int, int, int, int]:
        """[N, K, P, Q]; [N, 0, P, Q] for an input without channels, which is what torch
        returns there (its empty-input path keeps the input's channel count)."""
        return (self.N, self.K if self.C else 0, self.P, self.Q)

    def sizes(self) -> tuple[int, ...]:
        """BATCH, H, W, CG, P, Q, KG, R, S, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w
        (kernel order)."""
        return (self.N, self.H, self.W, self.CG, self.P, self.Q, self.KG, self.R, self.S,
                *self.stride, *self.padding, *self.dilation)

    @property
    def flat_k(self) -> bool:
        return self.CG < FLAT_K_MAX_CHANNELS


def _positive_pair(v, name: str) -> tuple[int, int]:
    out = pair(v, name)
    if min(out) < 1:
        raise ValueError(f"{name} must be >= 1, got {v!r}")
    return out


def _pads(padding, R, S, stride, dilation) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) from an int, a pair, 'valid' or 'same' (torch's rules:
    'same' needs stride 1 and puts the odd one of dilation*(kernel-1) at the end)."""
    if isinstance(padding, str):
        if padding == "valid":
            return (0, 0, 0, 0)
        if padding != "same":
            raise ValueError(f"padding must be 'same', 'valid', an int or a pair of ints, got {padding!r}")
        if stride != (1, 1):
            raise ValueError(f"padding='same' is not supported for strided convolutions (stride={stride})")
        th, tw = dilation[0] * (R - 1), dilation[1] * (S - 1)
        return (th // 2, th - th // 2, tw // 2, tw - tw // 2)
    ph, pw = pair(padding, "padding")
    return (ph, ph, pw, pw)


def conv_geometry(x, weight, stride=1, padding=0, dilation=1, groups=1) -> ConvGeometry:
    """Check a conv call's arguments (raising with names and shapes) -> its geometry."""
    check_float_tensor(x, "x", ndim=4)
    check_float_tensor(weight, "weight", ndim=4)
    check_same(x, "x", weight, "weight")
    stride, dilation = _positive_pair(stride, "stride"), _positive_pair(dilation, "dilation")
    if not isinstance(groups, int) or isinstance(groups, bool) or groups < 1:
        raise ValueError(f"groups must be a positive int, got {groups!r}")
    _, C, H, W = x.shape
    K, CG, R, S = weight.shape
    pads = _pads(padding, R, S, stride, dilation)
    if min(K, R, S) < 1:
        raise ValueError(f"weight must have at least one output channel and a non-empty kernel, "
                         f"got {describe(weight)}")
    if C % groups or K % groups:
        raise ValueError(f"groups={groups} must divide x's channels ({C}) and weight's out channels "
                         f"({K}): x {describe(x)}, weight {describe(weight)}")
    if CG * groups != C:
        raise ValueError(f"channel mismatch: weight expects {CG} channels per group x {groups} groups "
                         f"= {CG * groups}, x has {C} (x {describe(x)}, weight {describe(weight)})")
    if min(H, W) < 1:  # torch: only zero batch or zero channel inputs are supported
        raise ValueError(f"x must have non-empty spatial dimensions (only N or C may be 0), got {describe(x)}")
    geo = ConvGeometry(x.shape, weight.shape, stride, pads, dilation, groups)
    if geo.P < 1 or geo.Q < 1:
        raise ValueError(f"kernel {R}x{S} (dilation {dilation}) is larger than the padded input "
                         f"{H + pads[0] + pads[1]}x{W + pads[2] + pads[3]} (x {describe(x)}, padding {padding!r})")
    return geo


def _channels_last(t: torch.Tensor) -> torch.Tensor:
    """`t` as is when channels are innermost (channels_last, or a channel slice of such a
    tensor: the kernels take strides), else a channels_last copy."""
    if t.stride(1) == 1 or t.shape[1] == 1:
        return t
    return t.contiguous(memory_format=torch.channels_last)


def _output(shape, like: torch.Tensor, out: torch.Tensor | None, name: str = "out") -> torch.Tensor:
    """A fresh channels_last output, or the caller's `out` (e.g. a channel slice of a
    concatenated buffer) after checking its shape and dtype."""
    if out is None:
        return torch.empty(shape, device=like.device, dtype=like.dtype, memory_format=torch.channels_last)
    if tuple(out.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {describe(out)}")
    check_same(like, "x", out, name)
    return out


def check_bias(bias, x, K: int, name: str = "bias") -> None:
    """`bias` must be a 1-D tensor of K values like x (any strides)."""
    check_float_tensor(bias, name, ndim=1)
    check_same(x, "x", bias, name)
    if bias.shape[0] != K:
        raise ValueError(f"{name} must have {K} elements (weight's out channels), got {describe(bias)}")


class StatsPartials(NamedTuple):
    """Per-channel statistics of a conv output, in pieces: `part[0, t]` and `part[1, t]` are
    the mean and M2 of each channel over rows [t*rows, (t+1)*rows) of the output's `count`
    pixels (the last piece may be shorter); `pieces` of them are valid. rows = STATS_ROWS."""

    part: torch.Tensor
    rows: int
    pieces: int
    count: int


def conv2d_forward(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *,
                   residual=None, activation=None, out=None, stats=False, geo: ConvGeometry | None = None):
    """act(conv2d(x, weight) + bias + residual) in one kernel; returns channels_last output,
    or writes into `out` (any strides, e.g. a channel slice of a concatenated buffer).
    Every tensor argument may have any strides (bias and residual are read through theirs).

    stats=True (no residual, no activation): returns (y, StatsPartials), the output's
    per-channel mean and M2 in pieces, from the same kernel's store (the BatchNorm after this
    conv then never reads y for its statistics; `batchnorm.batch_norm_stats_from_partials`);
    a path without that epilogue races as itself plus one statistics pass over y (site
    "conv_forward_stats").
    `geo`: this call's `conv_geometry`, when the caller has already checked the arguments."""
    if geo is None:
        geo = conv_geometry(x, weight, stride, padding, dilation, groups)
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
    if stats and (residual is not None or activation is not None):
        raise ValueError("stats=True takes the statistics of the conv's own output: no residual, no activation")
    if bias is not None:
        check_bias(bias, x, geo.K)
    if residual is not None:
        check_float_tensor(residual, "residual", ndim=4)
        check_same(x, "x", residual, "residual")
        if tuple(residual.shape) != geo.out_shape:
            raise ValueError(f"residual must have the output's shape {geo.out_shape}, got {describe(residual)}")
    y = _output(geo.out_shape, x, out)
    M = geo.N * geo.P * geo.Q
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    if no_launch(x, y) or M == 0:
        if stats:  # no pixels: no pieces (the BatchNorm refuses a batch without values)
            return y, StatsPartials(torch.empty((2, 0, geo.K), device=x.device, dtype=acc), 1, 0, M)
        return y
    x = _channels_last(x)
    weight = _channels_last(weight)
    relu = activation == "relu"
    generic = race.Candidate("generic", ("_conv_fwd_kernel",),
                             lambda: _generic_forward(x, weight, bias, residual, y, geo, relu, stats=stats))
    others = []
    if eligible(geo):
        others.append(race.Candidate("gemm1x1", ("_conv1x1_fwd_kernel",),
                                     lambda: conv1x1_forward(x, weight, bias, residual, y, relu=relu)))
    if eligible_s2d(geo):
        others.append(race.Candidate("s2d", ("_space_to_depth_kernel", "_conv_fwd_kernel"),
                                     lambda: s2d_forward(x, weight, bias, residual, y, geo, relu=relu)))
    if eligible_tma_kxk(geo, x):
        others.append(race.Candidate("tma_kxk", ("_conv_tma_fwd_kernel",),
                                     lambda: conv_tma_forward(x, weight, bias, residual, y, geo, relu=relu)))
    if stats:  # the statistics epilogue is the generic kernel's; another path reads y once more for them
        others = [race.Candidate(c.path, (*c.kernels, "_bn_stats_kernel"), lambda c=c: (c.run(), _stats_pass(y))[1])
                  for c in others]
        return race.choose("conv_forward_stats", dispatch_key(geo), x, [generic, *others]).run()
    race.choose("conv_forward", dispatch_key(geo), x, [generic, *others],
                rerun_safe=not _shares_memory(y, residual)).run()
    return y


def _stats_pass(y: torch.Tensor) -> tuple[torch.Tensor, StatsPartials]:
    """(y, its per-channel statistics in pieces) by one pass over y: for the paths whose
    kernels have no statistics epilogue."""
    part, splits, rows = channel_stats_partials(y)
    return y, StatsPartials(part, rows, splits, y.shape[0] * y.shape[2] * y.shape[3])


def _shares_memory(out: torch.Tensor, src: torch.Tensor | None) -> bool:
    """True when the output `out` lies in the same storage as the input `src` (written over
    it: the pass cannot be re-run on the same buffers)."""
    return src is not None and out.untyped_storage().data_ptr() == src.untyped_storage().data_ptr()


def dispatch_key(geo: ConvGeometry) -> dict:
    """The shape key of a pass's path choice (`race.py`, the tuned table's dispatch records):
    the GEMM sizes of a 1x1 stride-1 conv (all that its paths depend on), else the whole
    geometry (P and Q carry torch's asymmetric 'same' padding)."""
    if eligible(geo):
        return {"PIXELS": geo.N * geo.H * geo.W, "C": geo.C, "K": geo.K}
    return {"N": geo.N, "C": geo.C, "H": geo.H, "W": geo.W, "K": geo.K, "R": geo.R, "S": geo.S,
            "P": geo.P, "Q": geo.Q, "stride_h": geo.stride[0], "stride_w": geo.stride[1],
            "pad_h": geo.padding[0], "pad_w": geo.padding[1], "dil_h": geo.dilation[0],
            "dil_w": geo.dilation[1], "groups": geo.groups}


def _generic_forward(x, weight, bias, residual, y, geo: ConvGeometry, relu: bool, *, stats: bool = False,
                     fold: tuple[int, int, int, int, int, int] | None = None):
    """The implicit-GEMM forward; with `stats`, also the output's statistics pieces:
    returns (y, StatsPartials) then, else y. `fold`: x and weight are a space-to-depth
    rewrite's z and w2 (stem.py), and fold is (sh, sw, R, S, C, CZ) of the original conv and
    of z: x counts only at the original filter's taps (the kernel's FOLD_* constexprs)."""
    res = residual if residual is not None else y  # dummy pointer when absent
    b = bias if bias is not None else y
    M = geo.N * geo.P * geo.Q
    forced = _configs._FORCED.get("_conv_fwd_kernel")
    if stats and forced is not None and forced.kwargs["BLOCK_M"] % STATS_ROWS:
        raise ValueError(f"stats=True needs BLOCK_M a multiple of {STATS_ROWS}, the forced config has {forced.kwargs}")
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    part = torch.empty((2, cdiv(M, STATS_ROWS), geo.K), device=x.device, dtype=acc) if stats else y
    grid = lambda meta: (cdiv(M, meta["BLOCK_M"]) * cdiv(geo.KG, meta["BLOCK_N"]), geo.groups)
    _conv_fwd_kernel[grid](
        x, weight, b, res, y, part,
        *geo.sizes(),
        *x.stride(), *weight.stride(), *y.stride(), *res.stride(), b.stride(0),
        part.stride(0) if stats else 0,
        HAS_BIAS=bias is not None, HAS_RESIDUAL=residual is not None, RELU=relu, STATS=stats,
        STATS_ROWS=STATS_ROWS, FLAT_K=geo.flat_k, K_CHUNK=k_chunk(geo.CG), DOT_PRECISION=dot_precision(x.dtype),
        INDEX_64=needs_int64(x, y, res), **dict(zip(FOLD_ARGS, fold or (0, 1, 1, 1, 1, 1))),
    )
    if not stats:
        return y
    return y, StatsPartials(part, STATS_ROWS, cdiv(M, STATS_ROWS), M)


def _check_relu_output(relu_output, grad_out) -> None:
    """`relu_output` (the conv's output after its ReLU) must be shaped and typed as grad_out."""
    check_float_tensor(relu_output, "relu_output", ndim=4)
    check_same(grad_out, "grad_out", relu_output, "relu_output")
    if relu_output.shape != grad_out.shape:
        raise ValueError(f"relu_output must have grad_out's shape {tuple(grad_out.shape)}, got {describe(relu_output)}")


def conv2d_input_grad(grad_out, weight, geo: ConvGeometry, *, out=None, relu_input=None,
                      relu_output=None) -> torch.Tensor:
    """Gradient w.r.t. the conv input (channels_last, or written into `out`).

    `relu_input`: the conv's input, when it is a ReLU's output; the gradient is then also
    taken through that ReLU (zero where relu_input <= 0) in the same store.
    `relu_output`: the conv's output, when a ReLU followed the conv (its output, saved) and
    grad_out is the grad of that ReLU's output: the generic kernel reads grad_out through
    the ReLU's mask in its operand loads; the other paths mask a copy first.
    """
    dx = _output((geo.N, geo.C, geo.H, geo.W), grad_out, out)
    if no_launch(dx):
        return dx
    weight = _channels_last(weight)
    grad_out = _channels_last(grad_out)
    if relu_output is not None:
        _check_relu_output(relu_output, grad_out)
        relu_output = _channels_last(relu_output)
    masked = lambda: grad_out if relu_output is None else relu_grad(grad_out, relu_output)
    candidates = [race.Candidate("generic", ("_conv_dgrad_kernel",),
                                 lambda: _generic_input_grad(grad_out, weight, geo, dx, relu_input, relu_output))]
    if eligible(geo):
        candidates.append(race.Candidate("gemm1x1", ("_conv1x1_dgrad_kernel",),
                                         lambda: conv1x1_input_grad(masked(), weight, dx, relu_input=relu_input)))
    if eligible_s2d(geo):
        candidates.append(race.Candidate("s2d", ("_space_to_depth_kernel", "_conv_dgrad_kernel",
                                                 "_depth_to_space_kernel"),
                                         lambda: s2d_input_grad(masked(), weight, geo, dx, relu_input=relu_input)))
    if eligible_tma_kxk(geo, grad_out, grad=True):
        candidates.append(race.Candidate("tma_kxk", ("_conv_tma_dgrad_kernel",),
                                         lambda: conv_tma_input_grad(masked(), weight, geo, dx, relu_input=relu_input)))
    race.choose("conv_dgrad", dispatch_key(geo), dx, candidates, rerun_safe=not _shares_memory(dx, relu_input)).run()
    return dx


def _generic_input_grad(grad_out, weight, geo: ConvGeometry, dx, relu_input, relu_output=None) -> torch.Tensor:
    mask_src = relu_input if relu_input is not None else dx
    o = relu_output if relu_output is not None else grad_out  # dummy pointer when absent
    sh, sw = geo.stride
    dh, dw = geo.dilation
    M = geo.N * cdiv(geo.H, sh) * cdiv(geo.W, sw)
    grid = lambda meta: (cdiv(M, meta["BLOCK_M"]) * cdiv(geo.CG, meta["BLOCK_N"]),
                         geo.groups * sh * sw)
    _conv_dgrad_kernel[grid](
        grad_out, o, weight, mask_src, dx, *geo.sizes(), sh // math.gcd(sh, dh), sw // math.gcd(sw, dw),
        *grad_out.stride(), *o.stride(), *weight.stride(), *mask_src.stride(), *dx.stride(),
        DY_RELU=relu_output is not None, RELU_MASK=relu_input is not None, FLAT_K=geo.flat_k, K_CHUNK=k_chunk(geo.KG),
        DOT_PRECISION=dot_precision(dx.dtype),
        INDEX_64=needs_int64(grad_out, dx, mask_src, o),
    )
    return dx


def _wgrad_col_tiles(geo: ConvGeometry, block_n: int) -> int:
    """Column tiles of the weight-grad GEMM (N = R*S*CG) at BLOCK_N columns: over the
    flattened columns, or tap by tap (the kernel's K_CHUNK rule)."""
    if k_chunk(geo.CG):
        return cdiv(geo.R * geo.S * geo.CG, block_n)
    return geo.R * geo.S * cdiv(geo.CG, block_n)


def _tile_splits(geo: ConvGeometry, device: torch.device, block_m: int, block_n: int) -> int:
    """The heuristic split count for one tile size: enough programs to fill the device
    twice over with the tiles of that size, each split keeping at least 512 rows so the
    fp32 partials stay small (and at most 128 splits)."""
    tiles = cdiv(geo.KG, block_m) * _wgrad_col_tiles(geo, block_n) * geo.groups
    want = cdiv(2 * sm_count(device), tiles)
    return max(1, min(want, geo.N * geo.P * geo.Q // 512, 128))


def _wgrad_splits(geo: ConvGeometry, device: torch.device, split_k: int | None,
                  dtype: torch.dtype | None = None) -> int | None:
    """How many programs share the N*P*Q reduction: `split_k` when given, else the count the
    card's tuned table holds for this geometry (and dtype, when given), else the heuristic
    at the tile of a forced config; None when the launch's autotuning picks the tile, which
    then brings its own count (`_tile_splits`: 72 programs of 128x128 tiles need more
    splits than 288 of 64x64 to fill 132 SMs)."""
    M = geo.N * geo.P * geo.Q
    if split_k is not None:
        return max(1, min(int(split_k), M))
    fields = {"BATCH": geo.N, "H": geo.H, "W": geo.W, "CG": geo.CG, "P": geo.P, "Q": geo.Q, "KG": geo.KG,
              "R": geo.R, "S": geo.S, "stride_h": geo.stride[0], "stride_w": geo.stride[1],
              "dil_h": geo.dilation[0], "dil_w": geo.dilation[1], "FLAT_K": geo.flat_k}
    tuned = tuned_split("_conv_wgrad_kernel", device, fields, dtype)
    if tuned is not None:
        return max(1, min(tuned, M))
    forced = _configs._FORCED.get("_conv_wgrad_kernel")
    if forced is not None:
        return _tile_splits(geo, device, forced.kwargs["BLOCK_M"], forced.kwargs["BLOCK_N"])
    return None


def conv2d_weight_grad(x, grad_out, geo: ConvGeometry, weight_dtype: torch.dtype, *,
                       split_k: int | None = None, relu_output=None, bias: bool = False):
    """Gradient w.r.t. the weight [K, CG, R, S] (channels_last strides: KRSC memory); with
    `bias`, (that, the bias gradient [K]).

    `split_k` overrides the heuristic number of reduction splits (tests force both paths).
    `relu_output`: as in `conv2d_input_grad` (grad_out read through the ReLU's mask).
    `bias`: the generic kernel sums the bias gradient from the same grad_out loads; the
    other paths sum it afterwards. An empty batch gives zero gradients, as in torch.
    """
    M = geo.N * geo.P * geo.Q
    if x.is_meta or M == 0 or geo.CG == 0:
        dw = torch.empty((geo.K, geo.R, geo.S, geo.CG), device=x.device, dtype=weight_dtype)
        dw = (dw if x.is_meta else dw.zero_()).permute(0, 3, 1, 2)
        if not bias:
            return dw
        db = torch.empty(geo.K, device=x.device, dtype=weight_dtype)
        return dw, db if x.is_meta else db.zero_()
    x = _channels_last(x)
    grad_out = _channels_last(grad_out)
    if relu_output is not None:
        _check_relu_output(relu_output, grad_out)
        relu_output = _channels_last(relu_output)

    def other_path(run):  # a path without the fused mask and bias: both around it
        g = grad_out if relu_output is None else relu_grad(grad_out, relu_output)
        dw = run(g)
        return (dw, bias_grad(g, weight_dtype)) if bias else dw

    candidates = [race.Candidate("generic", ("_conv_wgrad_kernel",),
                                 lambda: _generic_weight_grad(x, grad_out, geo, weight_dtype, split_k,
                                                              relu_output, bias))]
    if eligible(geo):
        candidates.append(race.Candidate("gemm1x1", ("_conv1x1_wgrad_kernel",), lambda: other_path(
            lambda g: conv1x1_weight_grad(x, g, weight_dtype, split_k=split_k))))
    if eligible_s2d(geo):
        candidates.append(race.Candidate("s2d", ("_space_to_depth_kernel", "_conv_wgrad_kernel",
                                                 "_depth_to_space_kernel"), lambda: other_path(
            lambda g: s2d_weight_grad(x, g, geo, weight_dtype, split_k=split_k))))
    if eligible_tma_kxk(geo, x, grad_out):
        candidates.append(race.Candidate("tma_kxk", ("_conv_tma_wgrad_kernel",), lambda: other_path(
            lambda g: conv_tma_weight_grad(x, g, geo, weight_dtype, split_k=split_k))))
    return race.choose("conv_wgrad", dispatch_key(geo), x, candidates).run()


def _generic_weight_grad(x, grad_out, geo: ConvGeometry, weight_dtype, split_k, relu_output=None, bias=False):
    """The implicit-GEMM weight-grad. With a fixed split count (given, tuned or forced) each
    split's share is SPLIT_ROWS; otherwise each config's grid brings its own count
    (`_tile_splits`), the kernel derives its share from the grid (SPLIT_ROWS=0), the
    partials buffer holds the most any config asks for, and the sum reads the splits of
    the config that ran."""
    M = geo.N * geo.P * geo.Q
    fixed = _wgrad_splits(geo, x.device, split_k, x.dtype)
    if fixed is not None:
        splits_of = lambda meta: fixed
        most = fixed
    else:
        splits_of = lambda meta: _tile_splits(geo, x.device, meta["BLOCK_M"], meta["BLOCK_N"])
        # every config the launching kernel may pick: its list, and the list a first-config
        # launch picks the first fitting one from (CONVBENCH_AUTOTUNE=first)
        most = max(splits_of(c.kwargs) for c in [*_conv_wgrad_kernel.configs, *(_conv_wgrad_kernel.first_of or [])])
    # [split, K, R, S, CG] memory viewed as [split, K, CG, R, S]: KRSC per split.
    partial_dtype = torch.float64 if weight_dtype == torch.float64 else torch.float32
    buf_dtype = weight_dtype if most == 1 else partial_dtype
    buf = torch.empty((most, geo.K, geo.R, geo.S, geo.CG), device=x.device, dtype=buf_dtype)
    dw = buf.permute(0, 1, 4, 2, 3)
    db = torch.empty((most, geo.K), device=x.device, dtype=buf_dtype) if bias else buf
    o = relu_output if relu_output is not None else grad_out  # dummy pointer when absent
    grid = lambda meta: (cdiv(geo.KG, meta["BLOCK_M"]) * _wgrad_col_tiles(geo, meta["BLOCK_N"]),
                         splits_of(meta), geo.groups)
    _conv_wgrad_kernel[grid](
        x, grad_out, o, dw, db, *geo.sizes(), cdiv(M, fixed) if fixed is not None else 0,
        *x.stride(), *grad_out.stride(), *o.stride(), *dw.stride(), db.stride(0), db.stride(-1),
        DY_RELU=relu_output is not None, BIAS_GRAD=bias, FLAT_K=geo.flat_k, K_CHUNK=k_chunk(geo.CG),
        DOT_PRECISION=dot_precision(x.dtype),
        INDEX_64=needs_int64(x, grad_out, buf, o),
    )
    # the config this launch ran (each run sets it; a launch only recorded, never run, has
    # none and no values to sum: every split then, all as uninitialized as the output)
    ran = getattr(_conv_wgrad_kernel, "best_config", None)
    splits = fixed if fixed is not None else (splits_of(ran.kwargs) if ran is not None else most)
    if most == 1:
        total, db_total = dw[0], db[0]
    else:
        total = column_sum(buf[:splits].view(splits, -1), weight_dtype)
        total = total.view(geo.K, geo.R, geo.S, geo.CG).permute(0, 3, 1, 2)
        db_total = column_sum(db[:splits], weight_dtype) if bias else None
    return (total, db_total) if bias else total


def bias_grad(grad_out: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Sum of a [N, K, P, Q] gradient over everything but K (a channel slice is fine)."""
    K = grad_out.shape[1]
    return column_sum(_channels_last(grad_out).permute(0, 2, 3, 1).reshape(-1, K), dtype)


class Conv2dFunction(torch.autograd.Function):
    """act(conv2d(x, w) + b + residual); every gradient computed by the Triton kernels."""

    @staticmethod
    def forward(ctx, x, weight, bias, residual, stride, padding, dilation, groups, activation, stats=False):
        geo = conv_geometry(x, weight, stride, padding, dilation, groups)
        x_cl = _channels_last(x)
        out = conv2d_forward(x_cl, weight, bias, residual=residual, activation=activation, stats=stats, geo=geo)
        y = out[0] if stats else out
        ctx.geo = geo
        ctx.relu = activation == "relu"
        ctx.has_bias = bias is not None
        ctx.save_for_backward(x_cl, weight, y if ctx.relu else None)
        return out  # with stats: (y, StatsPartials), the pieces not differentiable

    @staticmethod
    @first_order
    def backward(ctx, grad_out, *_):
        x, weight, y = ctx.saved_tensors
        geo = ctx.geo
        need_x, need_w, need_b, need_r = ctx.needs_input_grad[:4]
        need_b = need_b and ctx.has_bias
        if ctx.relu and need_r:  # the residual's grad is the masked grad itself: written once
            g, relu_output = relu_grad(grad_out, y), None
        else:  # the ReLU's mask (from the saved output) is applied inside the GEMMs' loads
            g, relu_output = _channels_last(grad_out), (y if ctx.relu else None)
        dx = conv2d_input_grad(g, weight, geo, relu_output=relu_output) if need_x else None
        dw = db = None
        if need_w:  # the bias grad from the weight-grad's own loads of g
            out = conv2d_weight_grad(x, g, geo, weight.dtype, relu_output=relu_output, bias=need_b)
            dw, db = out if need_b else (out, None)
        elif need_b:  # no input channels: an empty output, a zero bias grad
            masked = g if relu_output is None else relu_grad(g, relu_output)
            db = bias_grad(masked, weight.dtype) if geo.C else weight.new_zeros(geo.K)
        return dx, dw, db, g if need_r else None, None, None, None, None, None, None


def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *,
           residual=None, activation=None) -> torch.Tensor:
    """act(F.conv2d(x, weight, bias, stride, padding, dilation, groups) + residual).

    Differentiable in x, weight, bias and residual; NCHW or channels_last input, or
    unbatched [C, H, W] (then residual is [K, P, Q] and so is the output); padding an int,
    a pair, 'valid' or 'same'; float32/16, bfloat16 or float64 (accumulated in float64).
    Output is channels_last. activation: None or "relu". float32 uses TF32 exactly when
    torch.backends.cudnn.allow_tf32 is True. meta tensors give a meta result, launching
    nothing; an empty batch gives an empty result.
    """
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
    check_float_tensor(x, "x", ndim=(3, 4))
    if x.dim() == 3:  # unbatched, as F.conv2d accepts
        if residual is not None:
            check_float_tensor(residual, "residual", ndim=3)
            residual = residual.unsqueeze(0)
        y = Conv2dFunction.apply(x.unsqueeze(0), weight, bias, residual, stride, padding, dilation, groups,
                                 activation)
        return y.squeeze(0)
    return Conv2dFunction.apply(x, weight, bias, residual, stride, padding, dilation, groups, activation)


def conv2d_with_stats(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """(conv2d(x, weight, bias), StatsPartials of its output): for a training BatchNorm right
    after the conv (`batchnorm.batch_norm(..., partials=)`). Differentiable in x, weight and
    bias through the output; 4-D x."""
    check_float_tensor(x, "x", ndim=4)
    return Conv2dFunction.apply(x, weight, bias, None, stride, padding, dilation, groups, None, True)


class Conv2d(torch.nn.Conv2d):
    """`nn.Conv2d` run by the Triton kernels, with an optional fused ReLU and residual.

    Parameters and state_dict keys are exactly nn.Conv2d's; padding may be 'same' or
    'valid' as there. forward(x, residual=None).
    """

    def __init__(self, *args, activation: str | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
        if self.padding_mode != "zeros":
            raise ValueError(f"padding_mode must be 'zeros' for the Triton conv, got {self.padding_mode!r}")
        self.activation = activation

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        return conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation,
                      self.groups, residual=residual, activation=self.activation)

    def extra_repr(self) -> str:
        s = super().extra_repr()
        return s + (f", activation={self.activation!r}" if self.activation else "")
