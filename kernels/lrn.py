"""Local response normalization across channels in Triton, forward and backward.

Tiers: `_lrn_groups_fwd_kernel`, `_lrn_groups_bwd_kernel` (dense channels-innermost memory:
channels_last, the nets' layout) and `_lrn_fwd_kernel`, `_lrn_bwd_kernel` (any other layout,
e.g. NCHW) -> launchers `lrn_forward`, `lrn_backward`, which pick by layout (`channels_innermost`)
-> `LocalResponseNormFunction` -> `LocalResponseNorm` module.

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
channels of them (C <= MAX_CHANNELS), so HBM sees x read once and y written once in forward.
The [P, C]-tile kernels read the window as `size` shifted loads of the same tile (L1 hits);
the group kernels hold each vector of up to 8 channels in registers and load only the
window's reach into the neighbouring vectors (see the section above them).

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

from ._utils import (
    cdiv,
    check_float_tensor,
    check_same,
    dense,
    dense_like,
    describe,
    first_order,
    needs_int64,
    next_pow2,
    no_launch,
)
from .configs import autotune, interpreting

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


# --------------------------------------------------------------------------- channels innermost
# Dense channels-innermost tensors (channels_last, or any layout whose memory is [P, C] rows)
# take these kernels; other layouts take the [BLOCK_P, BLOCK_C] kernels above.
#
# A program owns BLOCK_P whole pixels, BLOCK_P * C contiguous elements, viewed as GROUPS
# groups of V consecutive channels (V: the largest power of two up to 8 dividing C; C is a
# compile-time constant, so no channel is padded to a power of two: only the groups past
# BLOCK_P * C / V idle, at most 6.25% for the nets' 64, 96, 192 and 256 channels). A group
# is one vector access (16 bytes of bf16) held in one thread's registers, split into V
# values there; a channel's
# window reads its group's values from registers and the LO below / HI above from single
# loads of the neighbouring groups' edges (L1 hits), masked at the pixel's first and last
# channel. The power is exp2(e * log2|s|) with torch's pow rules compiled in for this beta
# and sign of the scale (see `_power`), and the division by scale**beta a product by
# scale**-beta (the same zeros, infinities and NaNs: x / 0 and x * inf, x / inf and x * 0).
# Backward's cross-channel sum uses `u` of the neighbouring groups through dx as scratch,
# as the kernels above; the pixel is whole in the tile, so the scratch never crosses programs.
GROUP_MAX = 8


def _prune_groups(configs_, named_args, **kwargs):
    """Keep tiles of at least one pixel (GROUPS * V >= C); past the largest configured
    tile, one tile of the smallest power of two of groups that holds a pixel."""
    c, v = kwargs["C"], kwargs["V"]
    kept = [cf for cf in configs_ if cf.kwargs["GROUPS"] * v >= c]
    return kept or [triton.Config({"GROUPS": next_pow2(cdiv(c, v))}, num_warps=8)]


def _lrn_groups_autotune(fn):
    # Re-runnable as is: the backward's dx scratch is written before it is read in each tile.
    return autotune("lrn_groups", key=["P", "C", "SIZE"],
                    prune_configs_by={"early_config_prune": _prune_groups})(fn)


@triton.jit
def _unpack(v, V: tl.constexpr):
    """[G, V] -> a tuple of V [G] tensors, channel i of each group (register moves only)."""
    G: tl.constexpr = v.shape[0]
    if V == 1:
        out = (tl.reshape(v, [G]),)
    elif V == 2:
        c0, c1 = tl.split(v)
        out = (c0, c1)
    elif V == 4:
        e, o = tl.split(tl.reshape(v, [G, 2, 2]))  # channels (0, 2), (1, 3)
        c0, c2 = tl.split(e)
        c1, c3 = tl.split(o)
        out = (c0, c1, c2, c3)
    else:
        e, o = tl.split(tl.reshape(v, [G, 4, 2]))  # channels (0, 2, 4, 6), (1, 3, 5, 7)
        e0, e1 = tl.split(tl.reshape(e, [G, 2, 2]))
        o0, o1 = tl.split(tl.reshape(o, [G, 2, 2]))
        c0, c4 = tl.split(e0)
        c2, c6 = tl.split(e1)
        c1, c5 = tl.split(o0)
        c3, c7 = tl.split(o1)
        out = (c0, c1, c2, c3, c4, c5, c6, c7)
    return out


@triton.jit
def _pack(t, V: tl.constexpr):
    """The inverse of `_unpack`: V [G] tensors -> [G, V]."""
    G: tl.constexpr = t[0].shape[0]
    if V == 1:
        out = tl.reshape(t[0], [G, 1])
    elif V == 2:
        out = tl.join(t[0], t[1])
    elif V == 4:
        out = tl.reshape(tl.join(tl.join(t[0], t[2]), tl.join(t[1], t[3])), [G, 4])
    else:
        e = tl.reshape(tl.join(tl.join(t[0], t[4]), tl.join(t[2], t[6])), [G, 4])
        o = tl.reshape(tl.join(tl.join(t[1], t[5]), tl.join(t[3], t[7])), [G, 4])
        out = tl.reshape(tl.join(e, o), [G, 8])
    return out


@triton.jit
def _log2_abs(v, LOG2: tl.constexpr):
    """log2(|v|). LOG2 "approx": the GPU's lg2.approx.f32 (fp32 on a GPU: one MUFU op plus
    the scaling of subnormal inputs; absolute error under 2**-22 near 1, which the power
    turns into a relative error of about |e| * 2**-22.5); "approx.ftz": the same without the
    subnormal scaling, for a scale bounded below by a normal k; "exact": Triton's log2
    (libdevice's, about 25 instructions on sm_90; numpy's on the interpreter; fp64's)."""
    if LOG2 == "approx":
        out = tl.inline_asm_elementwise("lg2.approx.f32 $0, $1;", "=r,r", [tl.abs(v)], dtype=tl.float32,
                                        is_pure=True, pack=1)
    elif LOG2 == "approx.ftz":
        out = tl.inline_asm_elementwise("lg2.approx.ftz.f32 $0, $1;", "=r,r", [tl.abs(v)], dtype=tl.float32,
                                        is_pure=True, pack=1)
    else:
        out = tl.log2(tl.abs(v))
    return out


@triton.jit
def _power(v, log2_abs_v, e, SIGNED: tl.constexpr, E_INT: tl.constexpr, E_ODD: tl.constexpr,
           E_ZERO: tl.constexpr):
    """torch.pow(v, e) for a scalar e known at compile time to be zero (E_ZERO), an integer
    (E_INT), an odd one (E_ODD): |v|**e, with the sign of v for odd e and NaN for a finite
    negative v and fractional e (SIGNED: v may be negative), 1 for e == 0 (at v = 0 or NaN too)."""
    if E_ZERO:
        p = tl.full(v.shape, 1.0, v.dtype)
    else:
        p = tl.exp2(e * log2_abs_v)
        if SIGNED:
            if E_INT:
                if E_ODD:
                    p = tl.where(v < 0, -p, p)
            else:
                p = tl.where((v < 0) & (v > float("-inf")), float("nan"), p)
    return p


@triton.jit
def _groups(P, C: tl.constexpr, V: tl.constexpr, GROUPS: tl.constexpr, INDEX_64: tl.constexpr):
    """This program's groups: (first element, first channel, in-bounds mask) of each."""
    BLOCK_P: tl.constexpr = GROUPS * V // C
    q = tl.arange(0, GROUPS)
    first = tl.program_id(0)
    if INDEX_64:
        first = first.to(tl.int64)
    first = first * BLOCK_P
    pixel = q * V // C
    return first * C + q * V, q * V - pixel * C, (q < BLOCK_P * C // V) & (first + pixel < P)


@triton.jit
def _edges(ptr, start, cb, ok, BELOW: tl.constexpr, ABOVE: tl.constexpr, C: tl.constexpr, V: tl.constexpr,
           ACC: tl.constexpr):
    """The BELOW channels under each group (farthest first) and the ABOVE over it (nearest
    first), 0 outside the pixel: the window's reach into the neighbouring groups."""
    below = ()
    for j in tl.static_range(BELOW, 0, -1):
        below = below + (tl.load(ptr + start - j, mask=ok & (cb >= j), other=0.0).to(ACC),)
    above = ()
    for j in tl.static_range(1, ABOVE + 1):
        above = above + (tl.load(ptr + start + (V - 1 + j), mask=ok & (cb + (V - 1 + j) < C), other=0.0).to(ACC),)
    return below, above


@triton.jit
def _window_sums(below, center, above, SIZE: tl.constexpr, V: tl.constexpr):
    """For each of the V center values, the sum of the SIZE consecutive values of
    below + center + above starting at its position (in channel order, as torch sums)."""
    ext = below + center + above
    out = ()
    for i in tl.static_range(V):
        acc = ext[i]
        for d in tl.static_range(1, SIZE):
            acc = acc + ext[i + d]
        out = out + (acc,)
    return out


@triton.jit
def _squares(t, N: tl.constexpr):
    out = ()
    for i in tl.static_range(N):
        out = out + (t[i] * t[i],)
    return out


@_lrn_groups_autotune
@triton.jit
def _lrn_groups_fwd_kernel(
    x_ptr, y_ptr,
    # problem size: x and y are [P, C] rows, channels innermost (P = N * spatial positions)
    P,
    # LRN parameters (fp64 scalars)
    alpha_over_size: tl.float64, beta: tl.float64, k: tl.float64,
    # meta-parameters: channels, the group width V, the window, what pow must handle (the
    # scale may be negative; beta an integer, an odd one, zero), how log2 is taken (`_log2_abs`)
    C: tl.constexpr, V: tl.constexpr, SIZE: tl.constexpr, SIGNED: tl.constexpr, B_INT: tl.constexpr,
    B_ODD: tl.constexpr, B_ZERO: tl.constexpr, LOG2: tl.constexpr, GROUPS: tl.constexpr,
    INDEX_64: tl.constexpr,
):
    """y = x * (k + alpha/size * window sum of x**2) ** -beta for BLOCK_P whole pixels."""
    ACC: tl.constexpr = tl.float64 if x_ptr.dtype.element_ty == tl.float64 else tl.float32
    start, cb, ok = _groups(P, C, V, GROUPS, INDEX_64)
    offs = start[:, None] + tl.arange(0, V)[None, :]
    x = _unpack(tl.load(x_ptr + offs, mask=ok[:, None], other=0.0).to(ACC), V)
    below, above = _edges(x_ptr, start, cb, ok, SIZE // 2, (SIZE - 1) // 2, C, V, ACC)
    sums = _window_sums(_squares(below, SIZE // 2), _squares(x, V), _squares(above, (SIZE - 1) // 2), SIZE, V)
    a = tl.full((), alpha_over_size, ACC)
    kk = tl.full((), k, ACC)
    e = -tl.full((), beta, ACC)
    y = ()
    for i in tl.static_range(V):
        s = kk + a * sums[i]
        y = y + (x[i] * _power(s, _log2_abs(s, LOG2), e, SIGNED, B_INT, B_ODD, B_ZERO),)
    tl.store(y_ptr + offs, _pack(y, V).to(y_ptr.dtype.element_ty), mask=ok[:, None])


@_lrn_groups_autotune
@triton.jit
def _lrn_groups_bwd_kernel(
    x_ptr, dy_ptr, dx_ptr,
    # problem size: all three are [P, C] rows, channels innermost
    P,
    # LRN parameters (fp64 scalars); coef = 2 * alpha / size
    alpha_over_size: tl.float64, beta: tl.float64, k: tl.float64, coef: tl.float64,
    # meta-parameters as the forward's; B_EVEN: beta is an even integer, B_ONE: beta == 1
    C: tl.constexpr, V: tl.constexpr, SIZE: tl.constexpr, SIGNED: tl.constexpr, B_INT: tl.constexpr,
    B_ODD: tl.constexpr, B_EVEN: tl.constexpr, B_ZERO: tl.constexpr, B_ONE: tl.constexpr, LOG2: tl.constexpr,
    GROUPS: tl.constexpr, INDEX_64: tl.constexpr,
):
    """dx for BLOCK_P whole pixels: dy * r - coef * x * (sum of u over the channels whose
    window holds this one), r = scale**-beta, u = dy * ((x * r) * r) * beta * scale**(beta-1)."""
    ACC: tl.constexpr = tl.float64 if x_ptr.dtype.element_ty == tl.float64 else tl.float32
    LO: tl.constexpr = SIZE // 2
    HI: tl.constexpr = (SIZE - 1) // 2
    start, cb, ok = _groups(P, C, V, GROUPS, INDEX_64)
    offs = start[:, None] + tl.arange(0, V)[None, :]
    x = _unpack(tl.load(x_ptr + offs, mask=ok[:, None], other=0.0).to(ACC), V)
    dy = _unpack(tl.load(dy_ptr + offs, mask=ok[:, None], other=0.0).to(ACC), V)
    below, above = _edges(x_ptr, start, cb, ok, LO, HI, C, V, ACC)
    sums = _window_sums(_squares(below, SIZE // 2), _squares(x, V), _squares(above, (SIZE - 1) // 2), SIZE, V)
    a = tl.full((), alpha_over_size, ACC)
    kk = tl.full((), k, ACC)
    e = tl.full((), beta, ACC)
    r = ()
    u = ()
    for i in tl.static_range(V):
        s = kk + a * sums[i]
        log2_abs_s = _log2_abs(s, LOG2)
        r_i = _power(s, log2_abs_s, -e, SIGNED, B_INT, B_ODD, B_ZERO)
        r = r + (r_i,)
        if not B_ZERO:  # beta - 1: an integer with beta, odd when beta is even, zero at beta == 1
            q = _power(s, log2_abs_s, e - 1, SIGNED, B_INT, B_EVEN, B_ONE)
            u = u + (dy[i] * ((x[i] * r_i) * r_i) * (e * q),)
    dx = ()
    if B_ZERO:  # torch's pow backward is exactly 0 for a 0 exponent: dx = dy * 1
        for i in tl.static_range(V):
            dx = dx + (dy[i] * r[i],)
    else:
        tl.store(dx_ptr + offs, _pack(u, V).to(dx_ptr.dtype.element_ty), mask=ok[:, None])
        tl.debug_barrier()
        # channel j collects u from i in [j - HI, j + LO]: HI below, LO above
        u_below, u_above = _edges(dx_ptr, start, cb, ok, HI, LO, C, V, ACC)
        usum = _window_sums(u_below, u, u_above, SIZE, V)
        c2 = tl.full((), coef, ACC)
        for i in tl.static_range(V):
            dx = dx + (dy[i] * r[i] - c2 * x[i] * usum[i],)
        tl.debug_barrier()  # every thread has read its neighbours' scratch before any overwrite
    tl.store(dx_ptr + offs, _pack(dx, V).to(dx_ptr.dtype.element_ty), mask=ok[:, None])


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


def channels_innermost(x: torch.Tensor) -> bool:
    """True when dense x's memory is [P, C] rows, P = N * spatial positions (channels_last,
    or one position per image): the layout `_lrn_groups_*` serve."""
    xv = _as_ncl(x)
    (N, C, L), (sn, sc, sl) = xv.shape, xv.stride()
    return (C == 1 or sc == 1) and (L == 1 or sl == C) and (N == 1 or sn == C * L)


def _group_width(C: int) -> int:
    """V: the largest power of two up to GROUP_MAX that divides C."""
    return min(GROUP_MAX, C & -C)


def _power_meta(alpha, beta, k) -> dict:
    """What the power must handle, as the group kernels' constexprs: a scale that may be
    negative (alpha or k below 0), beta an integer (odd or even), zero or one."""
    b = float(beta)
    is_int = b.is_integer()
    return dict(SIGNED=not (alpha >= 0 and k >= 0), B_INT=is_int, B_ODD=is_int and b % 2 == 1,
                B_EVEN=is_int and b % 2 == 0, B_ZERO=b == 0, B_ONE=b == 1)


def _launch(kernel, x, tensors, size, extra):
    if no_launch(x):
        return
    N, C = x.shape[:2]
    xv = _as_ncl(x)
    L = xv.shape[2]
    block_c = next_pow2(C)
    grid = lambda meta: (cdiv(L, meta["BLOCK_P"]), N)
    kernel[grid](*[_as_ncl(t) for t in tensors], C, L, *xv.stride(), *extra,
                 SIZE=size, BLOCK_C=block_c, INDEX_64=needs_int64(x))


def _log2_kind(dtype: torch.dtype, signed: bool, k: float) -> str:
    """`_log2_abs`'s LOG2: exact on the interpreter and in fp64; on a GPU lg2.approx, with
    subnormals flushed when the scale k + alpha/size * sum x**2 >= k is a normal fp32."""
    if interpreting() or dtype == torch.float64:
        return "exact"
    return "approx.ftz" if not signed and k >= torch.finfo(torch.float32).tiny else "approx"


def _launch_groups(kernel, x, tensors, size, scalars, meta):
    """Launch a channels-innermost kernel on dense x (`channels_innermost`)."""
    if no_launch(x):
        return
    C = x.shape[1]
    P = x.numel() // C
    V = _group_width(C)
    grid = lambda m: (cdiv(P, m["GROUPS"] * V // C),)
    kernel[grid](*tensors, P, *scalars, C=C, V=V, SIZE=size, LOG2=_log2_kind(x.dtype, meta["SIGNED"], scalars[2]),
                 INDEX_64=needs_int64(x), **meta)


def lrn_forward(x, size, alpha=1e-4, beta=0.75, k=1.0) -> torch.Tensor:
    """F.local_response_norm(x, size, alpha, beta, k); output in x's memory layout."""
    _check_args(x, size, alpha, beta, k)
    x = dense(x)
    y = torch.empty_like(x)  # dense x: identical strides
    if channels_innermost(x):
        meta = _power_meta(alpha, beta, k)
        meta = {name: meta[name] for name in ("SIGNED", "B_INT", "B_ODD", "B_ZERO")}
        _launch_groups(_lrn_groups_fwd_kernel, x, (x, y), size, (alpha / size, beta, k), meta)
    else:
        _launch(_lrn_fwd_kernel, x, (x, y), size, (alpha / size, beta, k, *_power_flags(beta)))
    return y


def lrn_backward(grad_out, x, size, alpha=1e-4, beta=0.75, k=1.0) -> torch.Tensor:
    """Gradient of `lrn_forward` w.r.t. x, recomputing the scale from x."""
    check_same(x, "x", grad_out, "grad_out")
    dy = dense_like(grad_out, x)
    dx = torch.empty_like(x)
    if channels_innermost(x):
        _launch_groups(_lrn_groups_bwd_kernel, x, (x, dy, dx), size, (alpha / size, beta, k, 2.0 * alpha / size),
                       _power_meta(alpha, beta, k))
    else:
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
    @first_order
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

