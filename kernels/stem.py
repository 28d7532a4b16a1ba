"""Dense stems: a strided conv over few input channels (AlexNet's 11x11/4 and the 7x7/2
stems of GoogLeNet and ResNet, over RGB) rewritten by space-to-depth as a stride-1 conv
over many channels, which the generic kernel runs tap by tap with contiguous loads.

A conv of stride (sh, sw), top/left padding (ph, pw), C channels and an R x S filter equals
a stride-1, unpadded conv of z = s2d(x) with the filter w2 = s2d(w), both channels_last:
  z[n, (i*sw + j)*C + c, u, v]  = x[n, c, u*sh + i - ph, v*sw + j - pw]   (zero outside x)
  w2[k, (i*sw + j)*C + c, a, b] = w[k, c, a*sh + i, b*sw + j]             (zero past R, S)
for i < sh, j < sw, a < R2 = ceil(R/sh), b < S2 = ceil(S/sw); z has P + R2 - 1 rows and
Q + S2 - 1 columns, the output is the conv's own [N, K, P, Q]. Each x value lands in at most
one z value (exactly one unless no output reads it), so the gradients fold back one to one:
  data-grad    dx[n, c, h, w] = dz[n, ((h+ph)%sh*sw + (w+pw)%sw)*C + c, (h+ph)//sh, (w+pw)//sw]
               (zero where that z pixel lies past z: input no output reads)
  weight-grad  dw[k, c, r, s] = dw2[k, (r%sh*sw + s%sw)*C + c, r//sh, s//sw]   (the padded
               taps dropped)

z's channel count C*sh*sw is padded with zero channels to CZ, a multiple of 16: then
CZ >= FLAT_K_MAX_CHANNELS, so the generic kernel runs its tap-by-tap K loop (a channel block
of consecutive memory per pixel and tap: 16-byte vector loads) instead of the flattened
K loop that gathers element by element; every pixel row of z is a multiple of 32 bytes
(bf16), so its strides carry the 16-divisibility triton specializes on; and 16 is the K
granularity of the bf16 MMA. AlexNet (C=3, s=4) needs no padding: 48 channels, a 3x3
filter. The 7x7/2 stems get 12 -> 16 channels, a 4x4 filter (the same as padding C to 4).
Forward and weight-grad, which only read z, also fold the filter's columns into channels
through an overlapping view of z (`row_geometry`, no copy): R2 taps of S2*CZ channels, so
the 7x7/2 stems fill each 64-wide K step (4 taps of 64 channels, not 16 taps of 16).

Non-finite values: w2's taps past R, S are zeros, and 0 * inf or 0 * NaN is NaN. The
forward zeroes z at those taps after loading it (the generic kernel's FOLD_* constexprs,
`conv.folded_tap`), so a NaN or inf in x reaches exactly the outputs whose windows read it,
as in torch (weight-grad drops those taps' sums, so it is exact too). The data-grad has no
such mask (a tap's zero columns share the dot with its real ones): a NaN or inf in grad_out
also reaches, as NaN, the input pixels inside its rewritten window (R2*sh x S2*sw) but
outside its R x S one, where torch's input gradient is finite.

The re-layouts are Triton kernels, one pass each: `_space_to_depth_kernel` writes z (or
w2) straight from x (or w) through their strides, NCHW or channels_last or any view, zeros
for the padding and the pad channels included; `_depth_to_space_kernel` writes dx from dz
with the ReLU mask of `relu_input` applied in the same store, and dw from dw2. In torch the
same would be a pad, a permute copy and a channel-padded copy: two or three passes.

Tiers: the two re-layout kernels -> `eligible_s2d` and the launchers `s2d_forward`,
`s2d_input_grad`, `s2d_weight_grad`, candidates "s2d" that `conv.py`'s launchers race
against the generic kernel (`race.py`); the rewritten conv runs on conv.py's generic
launchers (imported when called: conv.py imports this module for its dispatch).
Imports kernels' own modules only.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._gemm import decode_pixels
from ._utils import cdiv, needs_int64, next_pow2

# z's channels are padded to a multiple of this (see the module docstring).
CHANNEL_MULTIPLE = 16
# The rewrite serves convs whose C*sh*sw is at most this: the stems. Larger products are
# strided convs over many channels, which the generic tap-by-tap kernel already serves
# with full K steps (z would only grow the problem by the zero taps).
MAX_S2D_CHANNELS = 64
# Elements and warps per program of the re-layout kernels (memory-bound copies, 4 KB of
# bf16 a program): 8 values a thread, 56 registers or fewer on sm_90 (triton 3.6), where
# 4096 on 4 warps took 212 (scripts/compile_check.py; not yet timed on a GPU).
RELAYOUT_ELEMENTS = 2048
RELAYOUT_WARPS = 8


# --------------------------------------------------------------------------- kernels
@triton.jit
def _space_to_depth_kernel(
    src_ptr, dst_ptr,
    # problem sizes: src [BATCH, C, H, W], dst [BATCH, CZ, HZ, WZ]; (SH, SW) the block folded
    # into channels, (PAD_H, PAD_W) the src padding at the top and left
    BATCH, C, H, W, CZ, HZ, WZ, SH, SW, PAD_H, PAD_W,
    # strides, each tensor in torch's dim order: src (n, c, h, w), dst (n, cz, u, v)
    ssn, ssc, ssh, ssw,
    sdn, sdc, sdu, sdv,
    # meta-parameters
    BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr, INDEX_64: tl.constexpr,
):
    """dst[n, (i*SW + j)*C + c, u, v] = src[n, c, u*SH + i - PAD_H, v*SW + j - PAD_W], zero
    outside src and in the channels from C*SH*SW to CZ.

    A tile is BLOCK_P dst pixels by all their channels (BLOCK_C >= CZ); any strides. Grid:
    (pixel tiles,)."""
    offs_p = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
    offs_c = tl.arange(0, BLOCK_C)
    mask_p = offs_p < BATCH * HZ * WZ
    n, u, v = decode_pixels(offs_p, HZ, WZ, INDEX_64)
    block = offs_c // C  # i*SW + j
    c = offs_c % C
    h = (u * SH - PAD_H)[:, None] + (block // SW)[None, :]
    w = (v * SW - PAD_W)[:, None] + (block % SW)[None, :]
    inside = mask_p[:, None] & (block < SH * SW)[None, :] & (h >= 0) & (h < H) & (w >= 0) & (w < W)
    val = tl.load(src_ptr + (n * ssn)[:, None] + (c * ssc)[None, :] + h * ssh + w * ssw, mask=inside, other=0.0)
    dst = dst_ptr + (n * sdn + u * sdu + v * sdv)[:, None] + (offs_c * sdc)[None, :]
    tl.store(dst, val, mask=mask_p[:, None] & (offs_c < CZ)[None, :])


@triton.jit
def _depth_to_space_kernel(
    src_ptr, m_ptr, dst_ptr,
    # problem sizes: dst [BATCH, C, H, W], src [BATCH, CZ, HZ, WZ] (CZ >= C*SH*SW); (SH, SW)
    # and (PAD_H, PAD_W) as in _space_to_depth_kernel
    BATCH, C, H, W, HZ, WZ, SH, SW, PAD_H, PAD_W,
    # strides: src (n, cz, u, v), mask source and dst (n, c, h, w)
    ssn, ssc, ssu, ssv,
    smn, smc, smh, smw,
    sdn, sdc, sdh, sdw,
    # meta-parameters
    RELU_MASK: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr, INDEX_64: tl.constexpr,
):
    """dst[n, c, h, w] = src[n, (i*SW + j)*C + c, u, v] with (u, i) = divmod(h + PAD_H, SH)
    and (v, j) = divmod(w + PAD_W, SW): the inverse of _space_to_depth_kernel (its gradient),
    zero where (u, v) lies past src. RELU_MASK: also zero where m <= 0 (the input m came out
    of a ReLU: its backward, torch's threshold_backward, in this store).

    A tile is BLOCK_P dst pixels by all their channels (BLOCK_C >= C); any strides. Grid:
    (pixel tiles,)."""
    offs_p = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
    offs_c = tl.arange(0, BLOCK_C)
    mask_p = offs_p < BATCH * H * W
    mask_c = offs_c < C
    n, h, w = decode_pixels(offs_p, H, W, INDEX_64)
    u = (h + PAD_H) // SH
    v = (w + PAD_W) // SW
    first = (((h + PAD_H) % SH) * SW + (w + PAD_W) % SW) * C
    ok = mask_p & (u < HZ) & (v < WZ)
    src = src_ptr + (n * ssn + u * ssu + v * ssv + first * ssc)[:, None] + (offs_c * ssc)[None, :]
    val = tl.load(src, mask=ok[:, None] & mask_c[None, :], other=0.0)
    mask = mask_p[:, None] & mask_c[None, :]
    if RELU_MASK:
        m = tl.load(m_ptr + (n * smn + h * smh + w * smw)[:, None] + (offs_c * smc)[None, :], mask=mask, other=0.0)
        val = tl.where(m <= 0, 0.0, val)
    tl.store(dst_ptr + (n * sdn + h * sdh + w * sdw)[:, None] + (offs_c * sdc)[None, :], val, mask=mask)


# --------------------------------------------------------------------------- host side
def eligible_s2d(geo) -> bool:
    """True for the convolutions (a `conv.ConvGeometry`) the rewrite serves: one group, no
    dilation, a stride above 1 along at least one dim (the two may differ), and at most
    MAX_S2D_CHANNELS channels after folding: C*sh*sw <= 64 (the C=3 stems: 48 at 11x11/4,
    12 at 7x7/2). Any filter size and padding, a filter smaller than the stride included."""
    sh, sw = geo.stride
    return (geo.groups == 1 and geo.dilation == (1, 1) and sh * sw > 1 and geo.C > 0
            and geo.C * sh * sw <= MAX_S2D_CHANNELS)


def s2d_geometry(geo):
    """The rewritten conv's geometry: z [N, CZ, P + R2 - 1, Q + S2 - 1], w2 [K, CZ, R2, S2],
    stride 1, no padding, no dilation; its output is `geo`'s [N, K, P, Q]."""
    from .conv import ConvGeometry

    sh, sw = geo.stride
    r2, s2 = cdiv(geo.R, sh), cdiv(geo.S, sw)
    cz = cdiv(geo.C * sh * sw, CHANNEL_MULTIPLE) * CHANNEL_MULTIPLE
    return ConvGeometry((geo.N, cz, geo.P + r2 - 1, geo.Q + s2 - 1), (geo.K, cz, r2, s2), (1, 1), (0, 0, 0, 0),
                        (1, 1), 1)


def _tiles(channels: int) -> tuple[int, int]:
    """(BLOCK_P, BLOCK_C) of a re-layout tile: every channel of a pixel in one tile."""
    block_c = next_pow2(channels)
    return max(1, RELAYOUT_ELEMENTS // block_c), block_c


def space_to_depth(src: torch.Tensor, stride: tuple[int, int], padding: tuple[int, int], cz: int, hz: int,
                   wz: int) -> torch.Tensor:
    """z [N, cz, hz, wz] (channels_last) from `src` [N, C, H, W] (any strides): the s x s
    pixel blocks of src padded by `padding` at the top and left, folded into channels."""
    n, c, h, w = src.shape
    z = torch.empty((n, cz, hz, wz), device=src.device, dtype=src.dtype, memory_format=torch.channels_last)
    block_p, block_c = _tiles(cz)
    _space_to_depth_kernel[(cdiv(n * hz * wz, block_p),)](
        src, z, n, c, h, w, cz, hz, wz, *stride, *padding, *src.stride(), *z.stride(),
        BLOCK_P=block_p, BLOCK_C=block_c, INDEX_64=needs_int64(src, z), num_warps=RELAYOUT_WARPS,
    )
    return z


def depth_to_space(src: torch.Tensor, dst: torch.Tensor, stride: tuple[int, int], padding: tuple[int, int], *,
                   relu_input: torch.Tensor | None = None) -> torch.Tensor:
    """Writes dst [N, C, H, W] (any strides) from `src` [N, CZ, HZ, WZ], the inverse fold of
    `space_to_depth`, zero where relu_input <= 0 when given; returns dst."""
    n, c, h, w = dst.shape
    _, _, hz, wz = src.shape
    mask_src = relu_input if relu_input is not None else dst
    block_p, block_c = _tiles(c)
    _depth_to_space_kernel[(cdiv(n * h * w, block_p),)](
        src, mask_src, dst, n, c, h, w, hz, wz, *stride, *padding,
        *src.stride(), *mask_src.stride(), *dst.stride(),
        RELU_MASK=relu_input is not None, BLOCK_P=block_p, BLOCK_C=block_c,
        INDEX_64=needs_int64(src, dst, mask_src), num_warps=RELAYOUT_WARPS,
    )
    return dst


def _filter_to_depth(weight: torch.Tensor, geo, geo2) -> torch.Tensor:
    """w2 [K, CZ, R2, S2] (KRSC memory) from the filter [K, C, R, S]: an s2d of the filter
    seen as an image (batch K, no padding)."""
    return space_to_depth(weight, geo.stride, (0, 0), geo2.C, geo2.R, geo2.S)


def row_geometry(geo2):
    """The rewritten conv with its filter's S2 columns folded into channels too, for the passes
    that only read z (forward, weight-grad): an R2 x 1 filter over S2*CZ channels.

    In channels_last memory the S2 pixels of z along a row from (u, v) are S2*CZ consecutive
    values, so z seen as [N, S2*CZ, HZ, Q] with a pixel step of CZ (`_z_rows`: an
    overlapping view, read only, no copy) holds at channel b*CZ + c what tap (a, b) reads at
    channel c, and w2's KRSC memory [K, R2, S2, CZ] is [K, R2, 1, S2*CZ] already
    (`_w_rows`). One tap of the generic kernel then takes a whole filter row: the 7x7/2
    stems run 4 K steps of 64 channels instead of 16 steps of 16 (the rest of each 64-wide
    K step masked), AlexNet's 3 taps of 144 channels instead of 9 of 48."""
    from .conv import ConvGeometry

    c = geo2.S * geo2.C
    return ConvGeometry((geo2.N, c, geo2.H, geo2.Q), (geo2.K, c, geo2.R, 1), (1, 1), (0, 0, 0, 0), (1, 1), 1)


def _z_rows(z: torch.Tensor, geo2) -> torch.Tensor:
    """z [N, CZ, HZ, WZ] (channels_last) as `row_geometry`'s input [N, S2*CZ, HZ, Q]."""
    return z.as_strided((geo2.N, geo2.S * geo2.C, geo2.H, geo2.Q), (z.stride(0), 1, z.stride(2), z.stride(3)))


def _w_rows(w2: torch.Tensor) -> torch.Tensor:
    """w2 [K, CZ, R2, S2] (KRSC memory) as `row_geometry`'s filter [K, S2*CZ, R2, 1]."""
    k, cz, r2, s2 = w2.shape
    return w2.as_strided((k, s2 * cz, r2, 1), (w2.stride(0), 1, w2.stride(2), 1))


def s2d_forward(x, weight, bias, residual, y, geo, *, relu: bool) -> torch.Tensor:
    """y = act(conv(x, w) + bias + residual) through the rewrite (`row_geometry`),
    written into `y` (any strides) and returned. Arguments are checked by
    `conv.conv2d_forward`, which calls this only where `eligible_s2d`; the bias, residual and
    ReLU are the generic epilogue's."""
    from .conv import _generic_forward

    geo2 = s2d_geometry(geo)
    z = space_to_depth(x, geo.stride, geo.padding, geo2.C, geo2.H, geo2.W)
    w2 = _filter_to_depth(weight, geo, geo2)
    fold = (*geo.stride, geo.R, geo.S, geo.C, geo2.C)  # z is read at the original filter's taps only
    return _generic_forward(_z_rows(z, geo2), _w_rows(w2), bias, residual, y, row_geometry(geo2), relu, fold=fold)


def s2d_input_grad(grad_out, weight, geo, dx, *, relu_input=None) -> torch.Tensor:
    """dx (written, any strides, and returned) = the conv's input gradient: the rewritten
    conv's data-grad dz, folded back (zero where relu_input <= 0 when given). Over z's own
    geometry: a gradient written through the overlapping row view would need its sums."""
    from .conv import _generic_input_grad

    geo2 = s2d_geometry(geo)
    dz = torch.empty((geo2.N, geo2.C, geo2.H, geo2.W), device=dx.device, dtype=dx.dtype,
                     memory_format=torch.channels_last)
    _generic_input_grad(grad_out, _filter_to_depth(weight, geo, geo2), geo2, dz, None)
    return depth_to_space(dz, dx, geo.stride, geo.padding, relu_input=relu_input)


def s2d_weight_grad(x, grad_out, geo, weight_dtype: torch.dtype, *, split_k: int | None = None) -> torch.Tensor:
    """The filter gradient [K, C, R, S] (channels_last strides: KRSC memory): the rewritten
    conv's weight-grad over z's row view (its split-K as the generic kernel's), folded back."""
    from .conv import _generic_weight_grad

    geo2 = s2d_geometry(geo)
    z = space_to_depth(x, geo.stride, geo.padding, geo2.C, geo2.H, geo2.W)
    dwr = _generic_weight_grad(_z_rows(z, geo2), grad_out, row_geometry(geo2), weight_dtype, split_k)
    # [K, S2*CZ, R2, 1] in KRSC memory is [K, R2, S2, CZ]: w2's gradient, then folded back
    dw2 = dwr.permute(0, 2, 3, 1).reshape(geo.K, geo2.R, geo2.S, geo2.C).permute(0, 3, 1, 2)
    dw = torch.empty((geo.K, geo.R, geo.S, geo.C), device=x.device, dtype=weight_dtype).permute(0, 3, 1, 2)
    return depth_to_space(dw2, dw, geo.stride, (0, 0))
