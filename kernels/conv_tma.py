"""Stride-1 KxK convolutions (3x3, 5x5, ...) fed by TMA box loads, built for Hopper: a path
beside the generic implicit-GEMM kernel (`conv.py`), raced against it per shape (`race.py`).

An output tile is a BLOCK_H x BLOCK_W patch of one image's output pixels (BLOCK_M = their
product rows of the GEMM) by BLOCK_N output channels. For each tap (r, s) and channel block
c0 the input box [1, BLOCK_H, BLOCK_W, BLOCK_K] is loaded through a host-side 4-D NHWC
TensorDescriptor at (n, p0 - pad_h + r*dil_h, q0 - pad_w + s*dil_w, c0): the box's
out-of-bounds parts read as zeros (negative coordinates included), and that zero fill is
the padding. The box, reshaped to [BLOCK_M, BLOCK_K], is the GEMM's A tile; the filter is a
3-D [K, R*S, C] (KRSC) descriptor whose box [BLOCK_N, 1, BLOCK_K] at (k0, r*S + s, c0) is
the B tile (a channel block past C reads zeros, never the next tap's channels). No mask,
no pointer tile in the K loop; one program per SM loops over the output tiles.

  forward     y = act(conv(x, w) + bias + residual)          (`fused_epilogue`, as conv.py)
  data-grad   dx = conv(dy, w flipped and transposed), stride 1, padding dil*(R-1) - pad,
              the ReLU mask of the conv's input fused into the store (as conv.py)
  weight-grad dw[k, (r, s, c)] = sum over output pixels of dy[pix, k] * x[pix shifted by the
              tap, c]: both operands patch boxes (dy's transposed), the patches split
              across programs into fp32 partials, summed by `column_sum` (as conv.py)

`eligible_tma_kxk` says which convs and tensors the path serves, per pass: stride 1, one
group, a filter larger than 1x1, channels (in and out) multiples of 8, the operand the
boxes read a valid TMA tensor (channels innermost, 16-byte aligned base and strides), and
a pass output that a patch of the family's configs fits inside and tiles with less than
MAX_PATCH_WASTE of its pixels idle (7x7 and 13x13 outputs stay on the generic kernel,
whose tiles span images).
Outputs, bias, residual and the ReLU mask are read and written through pointers (any
strides). The filter is re-laid out by torch (a copy) where it is not KRSC already.

Tiers: `_conv_tma_fwd_kernel`, `_conv_tma_dgrad_kernel`, `_conv_tma_wgrad_kernel` ->
launchers `conv_tma_forward`, `conv_tma_input_grad`, `conv_tma_weight_grad`, called by
`conv.py`'s launchers. Imports kernels' own modules only.
"""

from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

from . import configs as _configs
from ._gemm import fused_epilogue, relu_backward, tile_ids
from ._reduce import column_sum
from ._utils import cdiv, dot_precision, needs_int64, next_pow2, sm_count
from .configs import autotune, prune_by_shared_memory
from .conv1x1 import _Descriptor
from .tuned import tuned_split

# Every autotune key: the layer's geometry (the padding only through P and Q) and the dot
# precision; the dtype is part of every triton autotune key.
_KEY = ["BATCH", "H", "W", "C", "P", "Q", "K", "R", "S", "dil_h", "dil_w", "DOT_PRECISION"]
# A patch tiling of an output may leave at most this share of its pixels idle (rows of the
# GEMM computed and thrown away) for the path to serve it.
MAX_PATCH_WASTE = 0.25
# Channels (in and out) must be multiples of this: a pixel's channels are then a whole
# number of 16-byte rows in half precision, as a TMA descriptor's strides need.
CHANNEL_MULTIPLE = 8
# The largest float64 tiles that compile without spills on sm_90: forward and data-grad
# (pixels, channels, channel step), weight-grad (out channels, in channels, pixel step).
FP64_TILE = (64, 64, 16)
FP64_WGRAD_TILE = (64, 32, 32)


# --------------------------------------------------------------------------- tiling rules
def patch_waste(rows: int, cols: int, block_h: int, block_w: int) -> float:
    """The share of a rows x cols output's patch tiling (BLOCK_H x BLOCK_W patches, one
    image each) that lies outside the output: GEMM rows computed for nothing."""
    tiled = cdiv(rows, block_h) * block_h * cdiv(cols, block_w) * block_w
    return 1 - rows * cols / tiled


def patch_serves(rows: int, cols: int, block_h: int, block_w: int) -> bool:
    """The rule a patch must pass for a rows x cols output: it fits inside the output (a
    7x7 output has no 64-pixel patch that does) and its tiling wastes less than
    MAX_PATCH_WASTE (13x13 with 8x8 patches wastes 34%, 14x14 23%, 28x28 with 4x16 12.5%)."""
    return block_h <= rows and block_w <= cols and patch_waste(rows, cols, block_h, block_w) < MAX_PATCH_WASTE


def _family_configs(interpreting: bool) -> list[triton.Config]:
    """Every config the family may launch (the whole GPU list off the interpreter, also under
    CONVBENCH_AUTOTUNE=first, whose launch takes the first config the pruning keeps)."""
    return _configs._INTERPRET["conv_tma"] if interpreting else _configs._GPU["conv_tma"]


def output_served(rows: int, cols: int) -> bool:
    """True when some patch of the family's configs serves a rows x cols output (asked at
    every stride-1 KxK launch: answered once per size and config list)."""
    return _served(rows, cols, _configs.interpreting())


@functools.cache
def _served(rows: int, cols: int, interpreting: bool) -> bool:
    return any(patch_serves(rows, cols, c.kwargs["BLOCK_H"], c.kwargs["BLOCK_W"])
               for c in _family_configs(interpreting))


def fp64_fits(config: triton.Config) -> bool:
    """Whether a float64 launch may take `config`: tiles up to FP64_TILE (FP64_WGRAD_TILE
    for the weight-grad's). Compiled for sm_90 (scripts/compile_check.py), larger float64
    tiles spill to local memory (the accumulator is twice fp32's, and there is no fp64
    wgmma)."""
    kw = config.kwargs
    patch = kw["BLOCK_H"] * kw["BLOCK_W"]
    if "BLOCK_K" in kw:  # forward / data-grad: the patch is the tile's rows
        rows, cols, depth = FP64_TILE
        return patch <= rows and kw["BLOCK_N"] <= cols and kw["BLOCK_K"] <= depth
    rows, cols, depth = FP64_WGRAD_TILE  # weight-grad: the patch is the K step
    return kw["BLOCK_M"] <= rows and kw["BLOCK_N"] <= cols and patch <= depth


def prune_patches(configs_, named_args, *, sizes: tuple[str, str], reduced: str | None, **kwargs):
    """Autotuning prunes to the configs that fit shared memory (`prune_by_shared_memory`)
    and, for float64, `fp64_fits`; of those, to the ones whose patch serves the output the
    pass tiles or sums over (named_args[sizes]: P, Q for the forward and the weight-grad,
    H, W for the data-grad) and whose channel step is no deeper than the reduced channels
    (named_args[reduced]) need: a 16-channel layer wastes 3/4 of every 64-deep step. Keeps
    the first fitting config where none passes."""
    fits = prune_by_shared_memory(configs_, named_args, **kwargs)
    if kwargs.get("FP64"):
        fits = [c for c in fits if fp64_fits(c)] or fits[-1:]
    rows, cols = (named_args[s] for s in sizes)
    depth = max(16, next_pow2(named_args[reduced])) if reduced else None
    keep = [c for c in fits if patch_serves(rows, cols, c.kwargs["BLOCK_H"], c.kwargs["BLOCK_W"])
            and (depth is None or c.kwargs["BLOCK_K"] <= depth)]
    return keep or fits[:1]


def _pruned_for(rows: str, cols: str, reduced: str | None) -> dict:
    """The autotune pruning of a kernel over the output named_args[rows] x named_args[cols]."""
    return {"early_config_prune": functools.partial(prune_patches, sizes=(rows, cols), reduced=reduced)}


# --------------------------------------------------------------------------- kernels
@triton.jit
def _patch_tile(tile, BATCH, ROWS, COLS, NCOLS,
                BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr, BLOCK_N: tl.constexpr, GROUP_M: tl.constexpr):
    """Tile number -> (image n, first output row p0, first output column q0, first output
    channel): patches of BLOCK_H x BLOCK_W pixels of one image, GROUP_M of them at a time
    for L2 reuse of the filter columns (`tile_ids`)."""
    BLOCK_M: tl.constexpr = BLOCK_H * BLOCK_W
    tiles_h = tl.cdiv(ROWS, BLOCK_H)
    tiles_w = tl.cdiv(COLS, BLOCK_W)
    patches = BATCH * tiles_h * tiles_w
    pid_m, pid_n = tile_ids(tile, patches * BLOCK_M, NCOLS, BLOCK_M, BLOCK_N, GROUP_M)
    n = pid_m // (tiles_h * tiles_w)
    hw = pid_m % (tiles_h * tiles_w)
    return n, (hw // tiles_w) * BLOCK_H, (hw % tiles_w) * BLOCK_W, pid_n * BLOCK_N


@triton.jit
def _tap_loop(a_src, b_src, n, h0, w0, k0, CIN, R, S, dil_h, dil_w,
              ACC: tl.constexpr, DOT_PRECISION: tl.constexpr,
              BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """One [BLOCK_H*BLOCK_W, BLOCK_N] output tile: the sum over taps (r, s) and channel
    blocks c0 of A = a_src's box at (n, h0 + r*dil_h, w0 + s*dil_w, c0) (rows: the patch's
    pixels) times B = b_src's box at (k0, r*S + s, c0), transposed. Boxes read zeros where
    they leave the tensors: the padding, the channel tail, the patch past the image."""
    BLOCK_M: tl.constexpr = BLOCK_H * BLOCK_W
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC)
    num_cb = tl.cdiv(CIN, BLOCK_K)
    for it in range(R * S * num_cb):
        tap = it // num_cb
        c0 = (it % num_cb) * BLOCK_K
        a = a_src.load([n, h0 + (tap // S) * dil_h, w0 + (tap % S) * dil_w, c0])
        b = b_src.load([k0, tap, c0])
        acc = tl.dot(tl.reshape(a, (BLOCK_M, BLOCK_K)), tl.reshape(b, (BLOCK_N, BLOCK_K)).T, acc,
                     input_precision=DOT_PRECISION, out_dtype=ACC)
    return acc


@triton.jit
def _patch_pixels(n, p0, q0, ROWS, COLS, INDEX_64: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr):
    """The patch's pixels as GEMM rows: (n, p, q) of each (int64 when asked) and which lie
    inside the ROWS x COLS output."""
    offs = tl.arange(0, BLOCK_H * BLOCK_W)
    p = p0 + offs // BLOCK_W
    q = q0 + offs % BLOCK_W
    mask = (p < ROWS) & (q < COLS)
    if INDEX_64:
        n = n.to(tl.int64)
        p = p.to(tl.int64)
        q = q.to(tl.int64)
    return n, p, q, offs, mask


@autotune("conv_tma", key=_KEY, prune_configs_by=_pruned_for("P", "Q", "C"))
@triton.jit
def _conv_tma_fwd_kernel(
    a_src, b_src, b_ptr, r_ptr, y_ptr,
    # problem sizes (pad_h, pad_w: the top and left padding; P and Q set the bottom and right)
    BATCH, H, W, C, P, Q, K, R, S, pad_h, pad_w, dil_h, dil_w,
    # strides, each tensor in torch's dim order: y and residual (n, k, p, q), bias (k)
    syn, syk, syp, syq,
    srn, srk, srp, srq,
    sb,
    # meta-parameters
    HAS_BIAS: tl.constexpr, HAS_RESIDUAL: tl.constexpr, RELU: tl.constexpr,
    FP64: tl.constexpr, DOT_PRECISION: tl.constexpr, INDEX_64: tl.constexpr,
    BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr,
):
    """y[n, k, p, q] = act(sum_{r,s,c} x[n, c, p - ph + r*dh, q - pw + s*dw] * w[k, c, r, s]
    + b[k] + residual[n, k, p, q]), stride 1, one group.

    a_src: x as a [BATCH, H, W, C] TensorDescriptor (box [1, BLOCK_H, BLOCK_W, BLOCK_K]);
    b_src: w as a [K, R*S, C] TensorDescriptor (box [BLOCK_N, 1, BLOCK_K]); y, residual:
    [BATCH, K, P, Q] pointers, any strides; b: [K]. FP64: float64 tensors (accumulate in
    it). Grid: one program per SM (at most one per tile), each looping over output tiles.
    """
    ACC: tl.constexpr = tl.float64 if FP64 else tl.float32
    num_tiles = BATCH * tl.cdiv(P, BLOCK_H) * tl.cdiv(Q, BLOCK_W) * tl.cdiv(K, BLOCK_N)
    for tile in range(tl.program_id(0), num_tiles, tl.num_programs(0)):
        n, p0, q0, k0 = _patch_tile(tile, BATCH, P, Q, K, BLOCK_H, BLOCK_W, BLOCK_N, GROUP_M)
        acc = _tap_loop(a_src, b_src, n, p0 - pad_h, q0 - pad_w, k0, C, R, S, dil_h, dil_w,
                        ACC, DOT_PRECISION, BLOCK_H, BLOCK_W, BLOCK_N, BLOCK_K)
        n, p, q, offs_m, mask_m = _patch_pixels(n, p0, q0, P, Q, INDEX_64, BLOCK_H, BLOCK_W)
        offs_n = k0 + tl.arange(0, BLOCK_N)
        fused_epilogue(acc, offs_m, mask_m, offs_n, offs_n < K, b_ptr, r_ptr, y_ptr,
                       n, p, q, syn, syk, syp, syq, srn, srk, srp, srq, sb,
                       HAS_BIAS, HAS_RESIDUAL, RELU)


@autotune("conv_tma", key=_KEY, prune_configs_by=_pruned_for("H", "W", "K"))
@triton.jit
def _conv_tma_dgrad_kernel(
    a_src, b_src, m_ptr, dx_ptr,
    # problem sizes: the forward conv's (its input H x W with C channels, output P x Q
    # with K; pad_h, pad_w its top and left padding)
    BATCH, H, W, C, P, Q, K, R, S, pad_h, pad_w, dil_h, dil_w,
    # strides: mask source and dx (n, c, h, w)
    smn, smc, smh, smw,
    sdxn, sdxc, sdxh, sdxw,
    # meta-parameters
    RELU_MASK: tl.constexpr, FP64: tl.constexpr, DOT_PRECISION: tl.constexpr, INDEX_64: tl.constexpr,
    BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr,
):
    """dx[n, c, h, w] = sum_{r,s,k} dy[n, k, h - ph' + r*dh, w - pw' + s*dw] * wf[c, k, r, s],
    the stride-1 conv of dy with wf[c, k, r, s] = w[k, c, R-1-r, S-1-s] and padding
    ph' = dh*(R-1) - ph (likewise along w): the forward's data gradient. Zero where m <= 0
    with RELU_MASK (the conv's input m came out of a ReLU: its backward fused here).

    a_src: dy as a [BATCH, P, Q, K] TensorDescriptor (box [1, BLOCK_H, BLOCK_W, BLOCK_K]);
    b_src: wf as a [C, R*S, K] TensorDescriptor (box [BLOCK_N, 1, BLOCK_K]); m, dx:
    [BATCH, C, H, W] pointers, any strides. Grid as the forward's.
    """
    ACC: tl.constexpr = tl.float64 if FP64 else tl.float32
    num_tiles = BATCH * tl.cdiv(H, BLOCK_H) * tl.cdiv(W, BLOCK_W) * tl.cdiv(C, BLOCK_N)
    pad_h_t = dil_h * (R - 1) - pad_h
    pad_w_t = dil_w * (S - 1) - pad_w
    for tile in range(tl.program_id(0), num_tiles, tl.num_programs(0)):
        n, h0, w0, c0 = _patch_tile(tile, BATCH, H, W, C, BLOCK_H, BLOCK_W, BLOCK_N, GROUP_M)
        acc = _tap_loop(a_src, b_src, n, h0 - pad_h_t, w0 - pad_w_t, c0, K, R, S, dil_h, dil_w,
                        ACC, DOT_PRECISION, BLOCK_H, BLOCK_W, BLOCK_N, BLOCK_K)
        n, h, w, _, mask_m = _patch_pixels(n, h0, w0, H, W, INDEX_64, BLOCK_H, BLOCK_W)
        offs_c = c0 + tl.arange(0, BLOCK_N)
        mask = mask_m[:, None] & (offs_c < C)[None, :]
        if RELU_MASK:
            m_off = (n * smn + h * smh + w * smw)[:, None] + offs_c[None, :] * smc
            acc = relu_backward(acc, m_ptr + m_off, mask)
        dx_off = (n * sdxn + h * sdxh + w * sdxw)[:, None] + offs_c[None, :] * sdxc
        tl.store(dx_ptr + dx_off, acc.to(dx_ptr.dtype.element_ty), mask=mask)


@autotune("conv_tma_wgrad", key=[*_KEY, "SPLITS"], prune_configs_by=_pruned_for("P", "Q", None))
@triton.jit
def _conv_tma_wgrad_kernel(
    a_src, b_src, dw_ptr,
    # problem sizes (the forward conv's); SPLITS: how many programs share each tile's
    # reduction over the output's patches
    BATCH, H, W, C, P, Q, K, R, S, pad_h, pad_w, dil_h, dil_w, SPLITS,
    # strides: dw (split, k, c, r, s)
    sdwz, sdwk, sdwc, sdwr, sdws,
    # meta-parameters
    FP64: tl.constexpr, DOT_PRECISION: tl.constexpr, INDEX_64: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr,
):
    """dw[split, k, c, r, s] = sum over this split's output patches of dy[n, k, p, q] *
    x[n, c, p - ph + r*dh, q - pw + s*dw]: rows are output channels, columns one tap's
    input channels, the reduction a BLOCK_H x BLOCK_W patch of one image per step.

    a_src: dy as a [BATCH, P, Q, K] TensorDescriptor (box [1, BLOCK_H, BLOCK_W, BLOCK_M],
    used transposed); b_src: x as a [BATCH, H, W, C] one (box [1, BLOCK_H, BLOCK_W,
    BLOCK_N]) at the tap's shifted coordinates (zeros outside: the padding; dy's zeros past
    the output cancel the x rows there). dw: [SPLITS, K, C, R, S], fp32 (fp64) partials, or
    the gradient itself with one split. Grid: (row tiles * column tiles * R*S, SPLITS).
    """
    ACC: tl.constexpr = tl.float64 if FP64 else tl.float32
    BLOCK_P: tl.constexpr = BLOCK_H * BLOCK_W
    pid = tl.program_id(0)
    split = tl.program_id(1)
    num_k = tl.cdiv(K, BLOCK_M)
    num_c = tl.cdiv(C, BLOCK_N)
    k0 = (pid % num_k) * BLOCK_M
    c0 = ((pid // num_k) % num_c) * BLOCK_N
    tap = pid // (num_k * num_c)
    h_off = (tap // S) * dil_h - pad_h
    w_off = (tap % S) * dil_w - pad_w
    tiles_w = tl.cdiv(Q, BLOCK_W)
    per_image = tl.cdiv(P, BLOCK_H) * tiles_w
    patches = BATCH * per_image
    share = tl.cdiv(patches, SPLITS)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC)
    for pt in range(split * share, tl.minimum(split * share + share, patches)):
        n = pt // per_image
        p0 = ((pt % per_image) // tiles_w) * BLOCK_H
        q0 = ((pt % per_image) % tiles_w) * BLOCK_W
        a = tl.reshape(a_src.load([n, p0, q0, k0]), (BLOCK_P, BLOCK_M))
        b = tl.reshape(b_src.load([n, p0 + h_off, q0 + w_off, c0]), (BLOCK_P, BLOCK_N))
        acc = tl.dot(a.T, b, acc, input_precision=DOT_PRECISION, out_dtype=ACC)
    offs_k = k0 + tl.arange(0, BLOCK_M)
    offs_c = c0 + tl.arange(0, BLOCK_N)
    z = split
    if INDEX_64:
        z = z.to(tl.int64)
    dw_off = z * sdwz + offs_k[:, None] * sdwk + offs_c[None, :] * sdwc + (tap // S) * sdwr + (tap % S) * sdws
    tl.store(dw_ptr + dw_off, acc.to(dw_ptr.dtype.element_ty), mask=(offs_k < K)[:, None] & (offs_c < C)[None, :])


# --------------------------------------------------------------------------- host side
def _nhwc_strides(t: torch.Tensor) -> list[int] | None:
    """The [n, h, w, c] strides of `t`'s 4-D TMA descriptor (`nhwc_descriptor`), or None
    where triton's rules forbid one."""
    N, C, H, W = t.shape
    if min(N, C, H, W) < 1 or (t.stride(1) != 1 and C > 1):
        return None
    size = t.element_size()
    sw = t.stride(3) if W > 1 else C
    sh = t.stride(2) if H > 1 else W * sw
    sn = t.stride(0) if N > 1 else H * sh
    if sw < C or sh < W * sw or sn < H * sh or t.data_ptr() % 16 or any((s * size) % 16 for s in (sw, sh, sn)):
        return None
    return [sn, sh, sw, 1]


def nhwc_descriptor(t: torch.Tensor) -> _Descriptor | None:
    """[N, C, H, W] `t` as a 4-D [N, H, W, C] TMA descriptor, or None where triton's rules
    forbid one: channels innermost (unit stride), 16-byte aligned base and strides, and the
    pixel dims nested in NHWC order without overlap (w steps past a pixel's channels, h
    past a row, n past an image). A size-1 dim's stride is never stepped: it gets the dense
    one. The box is a placeholder: the launching config's is set by `configs.tma_patch_boxes`."""
    strides = _nhwc_strides(t)
    if strides is None:
        return None
    N, C, H, W = t.shape
    return _Descriptor(t, [N, H, W, C], strides, [1, 1, 1, 16])


def _filter_descriptor(w: torch.Tensor) -> _Descriptor:
    """A [K, C, R, S] filter as a 3-D [K, R*S, C] (KRSC) TMA descriptor; a KRSC copy first
    where `w` is not laid out so (taps collapsing into one stride, aligned)."""
    K, C, R, S = w.shape
    size = w.element_size()
    sk, sc, sr, ss = w.stride()
    if not (sc == 1 and (R == 1 or sr == S * ss) and ss >= C and sk >= R * S * ss
            and w.data_ptr() % 16 == 0 and (ss * size) % 16 == 0 and (sk * size) % 16 == 0):
        w = w.contiguous(memory_format=torch.channels_last)
        sk, ss = w.stride(0), w.stride(3)
    return _Descriptor(w, [K, R * S, C], [sk, ss, 1], [16, 1, 16])


def geometry_served(geo, *, grad: bool = False) -> bool:
    """The shape half of `eligible_tma_kxk`: stride 1, one group (a channel block would
    straddle groups: the zero fill stops only at the tensor's end), a filter larger than
    1x1 (`conv1x1.py` serves 1x1), any dilation and padding, input and output channels
    multiples of CHANNEL_MULTIPLE, and the pass's output (P x Q for the forward, H x W for
    the data-grad: `grad`) served by a patch of the family's configs (`output_served`)."""
    rows, cols = (geo.H, geo.W) if grad else (geo.P, geo.Q)
    return (geo.stride == (1, 1) and geo.groups == 1 and geo.R * geo.S > 1 and geo.N > 0
            and geo.C > 0 and geo.K > 0 and geo.C % CHANNEL_MULTIPLE == 0 and geo.K % CHANNEL_MULTIPLE == 0
            and output_served(rows, cols))


def eligible_tma_kxk(geo, *operands: torch.Tensor, grad: bool = False) -> bool:
    """True where this path computes the pass exactly: the conv (a `conv.ConvGeometry`)
    passes `geometry_served` and each of `operands`, the tensors the boxes read (x for the
    forward, grad_out for the data-grad: `grad`, both for the weight-grad, which sums over
    the forward's output), is a valid TMA tensor (`nhwc_descriptor`)."""
    return geometry_served(geo, grad=grad) and all(_nhwc_strides(t) is not None for t in operands)


def _persistent_grid(device, batch: int, rows: int, cols: int, channels: int):
    """One program per SM, at most one per output tile."""
    def grid(meta):
        tiles = (batch * cdiv(rows, meta["BLOCK_H"]) * cdiv(cols, meta["BLOCK_W"])
                 * cdiv(channels, meta["BLOCK_N"]))
        return (min(sm_count(device), tiles),)
    return grid


def _source(t: torch.Tensor) -> _Descriptor:
    desc = nhwc_descriptor(t)
    if desc is None:
        raise ValueError(f"the TMA KxK path needs a TMA-compatible NHWC tensor (channels innermost, 16-byte aligned "
                         f"base and strides), got shape {tuple(t.shape)}, strides {t.stride()}: see eligible_tma_kxk")
    return desc


def conv_tma_forward(x, weight, bias, residual, y, geo, *, relu: bool) -> torch.Tensor:
    """y = act(conv(x, w) + bias + residual), written into `y` (any strides) and returned.

    Arguments are checked by `conv.conv2d_forward`, which calls this only where
    `eligible_tma_kxk(geo, x)`."""
    res = residual if residual is not None else y  # strides (and a dummy pointer when absent)
    b = bias if bias is not None else y
    _conv_tma_fwd_kernel[_persistent_grid(x.device, geo.N, geo.P, geo.Q, geo.K)](
        _source(x), _filter_descriptor(weight), b, res, y,
        geo.N, geo.H, geo.W, geo.C, geo.P, geo.Q, geo.K, geo.R, geo.S, *geo.padding, *geo.dilation,
        *y.stride(), *res.stride(), b.stride(0),
        HAS_BIAS=bias is not None, HAS_RESIDUAL=residual is not None, RELU=relu,
        FP64=x.dtype == torch.float64, DOT_PRECISION=dot_precision(x.dtype), INDEX_64=needs_int64(x, y, res),
    )
    return y


def conv_tma_input_grad(grad_out, weight, geo, dx, *, relu_input=None) -> torch.Tensor:
    """dx = the conv's data gradient (zero where relu_input <= 0 when given), written into
    `dx`. The filter is flipped and transposed to [C, K, R, S] by a torch layout copy (KRSC
    memory: [C, R, S, K]); only the kernel convolves."""
    flipped = weight.flip(2, 3).transpose(0, 1).contiguous(memory_format=torch.channels_last)
    mask_src = relu_input if relu_input is not None else dx
    _conv_tma_dgrad_kernel[_persistent_grid(dx.device, geo.N, geo.H, geo.W, geo.C)](
        _source(grad_out), _filter_descriptor(flipped), mask_src, dx,
        geo.N, geo.H, geo.W, geo.C, geo.P, geo.Q, geo.K, geo.R, geo.S, *geo.padding, *geo.dilation,
        *mask_src.stride(), *dx.stride(),
        RELU_MASK=relu_input is not None, FP64=dx.dtype == torch.float64, DOT_PRECISION=dot_precision(dx.dtype),
        INDEX_64=needs_int64(grad_out, dx, mask_src),
    )
    return dx


def wgrad_splits(geo, device: torch.device, split_k: int | None, dtype: torch.dtype | None = None) -> int:
    """How many programs share each weight-grad tile's reduction: `split_k` when given, else
    the card's tuned count for this geometry (and dtype), else enough to fill the device
    twice over with 128x128 tiles, each split summing at least 512 output pixels."""
    if split_k is None:
        fields = {"BATCH": geo.N, "H": geo.H, "W": geo.W, "C": geo.C, "P": geo.P, "Q": geo.Q, "K": geo.K,
                  "R": geo.R, "S": geo.S, "dil_h": geo.dilation[0], "dil_w": geo.dilation[1]}
        split_k = tuned_split("_conv_tma_wgrad_kernel", device, fields, dtype)
    if split_k is None:
        tiles = cdiv(geo.K, 128) * cdiv(geo.C, 128) * geo.R * geo.S
        split_k = min(cdiv(2 * sm_count(device), tiles), geo.N * geo.P * geo.Q // 512, 128)
    return max(1, int(split_k))


def conv_tma_weight_grad(x, grad_out, geo, weight_dtype: torch.dtype, *, split_k: int | None = None) -> torch.Tensor:
    """The weight gradient [K, C, R, S] (channels_last strides: KRSC memory), as
    `conv.conv2d_weight_grad` returns it; called only where `eligible_tma_kxk(geo, x,
    grad_out)`. A split whose share of patches is empty stores zeros."""
    splits = wgrad_splits(geo, x.device, split_k, x.dtype)
    partial_dtype = torch.float64 if weight_dtype == torch.float64 else torch.float32
    buf = torch.empty((splits, geo.K, geo.R, geo.S, geo.C), device=x.device,
                      dtype=weight_dtype if splits == 1 else partial_dtype)
    dw = buf.permute(0, 1, 4, 2, 3)  # [split, K, C, R, S] over KRSC memory
    grid = lambda meta: (cdiv(geo.K, meta["BLOCK_M"]) * cdiv(geo.C, meta["BLOCK_N"]) * geo.R * geo.S,
                         splits)
    _conv_tma_wgrad_kernel[grid](
        _source(grad_out), _source(x), dw,
        geo.N, geo.H, geo.W, geo.C, geo.P, geo.Q, geo.K, geo.R, geo.S, *geo.padding, *geo.dilation, splits,
        *dw.stride(),
        FP64=x.dtype == torch.float64, DOT_PRECISION=dot_precision(x.dtype), INDEX_64=needs_int64(buf),
    )
    if splits == 1:
        return dw[0]
    total = column_sum(buf.view(splits, -1), weight_dtype)
    return total.view(geo.K, geo.R, geo.S, geo.C).permute(0, 3, 1, 2)
