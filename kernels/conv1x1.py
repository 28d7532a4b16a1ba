"""1x1 stride-1 convolutions as plain GEMMs over channels_last memory, built for Hopper:
operands loaded through host-side TMA tensor descriptors where the tensors allow, tiles and
stages sized for wgmma, fp32 accumulation (fp64 for fp64 tensors).

With x channels_last, a 1x1 stride-1 conv (no padding, one group) is
  forward     y[P, K]  = x[P, C] @ w[K, C]^T      (+ bias, + residual, ReLU: as `conv.py`)
  data-grad   dx[P, C] = dy[P, K] @ w[K, C]        (ReLU mask of the conv's input, as `conv.py`)
  weight-grad dw[K, C] = dy[P, K]^T @ x[P, C]      (the P = N*H*W reduction split as `conv.py`)
Every launcher here is a candidate that `conv.py` races against its generic kernel per shape
(`race.py`); `eligible` says which convolutions it may serve at all.

Operands: a TMA descriptor (USE_TMA) needs a 2-D [P, channels] view with channels innermost
and 16-byte aligned base and pixel stride: the pixel dims of a channels_last tensor must
collapse into one stride (a channel slice of a wider buffer does). Otherwise the same kernels
run their pointer variant, which reads any strides. The descriptors' boxes are the config's
tiles (`configs.tma_boxes`, a config pre-hook). Forward and data-grad run a persistent loop
over output tiles on one program per SM; weight-grad one program per (tile, split).

Tiers: `_conv1x1_fwd_kernel`, `_conv1x1_dgrad_kernel`, `_conv1x1_wgrad_kernel` -> launchers
`conv1x1_forward`, `conv1x1_input_grad`, `conv1x1_weight_grad`, called by `conv.py`'s
launchers (and so by `Conv2dFunction` / `Conv2d`). Imports kernels' own modules only.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from triton.tools.tensor_descriptor import TensorDescriptor

from ._gemm import decode_pixels, fused_epilogue, relu_backward, tile_ids
from ._reduce import column_sum
from ._utils import cdiv, dot_precision, needs_int64, sm_count
from .configs import autotune
from .tuned import tuned_split

# Every autotune key: the GEMM's sizes (P pixels, C in, K out channels), the load variant
# and the dot precision.
_KEY = ["PIXELS", "C", "K", "USE_TMA", "DOT_PRECISION"]
# A weight-grad split's share of the pixels is a multiple of this (every CONV1X1_WGRAD
# BLOCK_K divides it): a TMA box then never reaches into the next split's rows.
SPLIT_ALIGN = 256


# --------------------------------------------------------------------------- kernels
@triton.jit
def _k_loop(a_src, b_src, a_rows, off_m, off_n, offs_n, mask_m, mask_n, K, sak, sbk, sbn,
            ACC: tl.constexpr, B_TRANS: tl.constexpr, USE_TMA: tl.constexpr, DOT_PRECISION: tl.constexpr,
            BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """One [BLOCK_M, BLOCK_N] tile of A[M, K] @ B[K, N]. TMA: A's box at (off_m, k), B's at
    (k, off_n), or (off_n, k) transposed when B_TRANS; the boxes' out-of-bounds parts read
    as zeros. Pointers: A row r at a_rows[r] + k * sak, B at k * sbk + n * sbn, masked."""
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC)
    if USE_TMA:
        for k0 in range(0, K, BLOCK_K):
            a = a_src.load([off_m, k0])
            if B_TRANS:
                b = b_src.load([off_n, k0]).T
            else:
                b = b_src.load([k0, off_n])
            acc = tl.dot(a, b, acc, input_precision=DOT_PRECISION, out_dtype=ACC)
    else:
        for k0 in range(0, K, BLOCK_K):
            offs_k = k0 + tl.arange(0, BLOCK_K)
            mask_k = offs_k < K
            a = tl.load(a_rows[:, None] + offs_k[None, :] * sak, mask=mask_m[:, None] & mask_k[None, :], other=0.0)
            b = tl.load(b_src + offs_k[:, None] * sbk + offs_n[None, :] * sbn,
                        mask=mask_k[:, None] & mask_n[None, :], other=0.0)
            acc = tl.dot(a, b, acc, input_precision=DOT_PRECISION, out_dtype=ACC)
    return acc


@autotune("conv1x1", key=_KEY)
@triton.jit
def _conv1x1_fwd_kernel(
    a_src, b_src, b_ptr, r_src, c_dst,
    # problem sizes: PIXELS = BATCH*H*W, C in and K out channels
    PIXELS, C, K, H, W,
    # strides, each tensor in torch's dim order: x (n, c, h, w) (pointer variant), w (k, c),
    # y and residual (n, k, h, w), bias (k)
    sxn, sxc, sxh, sxw,
    swk, swc,
    syn, syk, syh, syw,
    srn, srk, srh, srw,
    sb,
    # meta-parameters (A_TRANS / B_TRANS: how the operands' TMA boxes lie, see configs.tma_boxes)
    HAS_BIAS: tl.constexpr, HAS_RESIDUAL: tl.constexpr, RELU: tl.constexpr,
    USE_TMA: tl.constexpr, A_TRANS: tl.constexpr, B_TRANS: tl.constexpr,
    FP64: tl.constexpr, DOT_PRECISION: tl.constexpr, INDEX_64: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):
    """y[n, k, h, w] = act(sum_c x[n, c, h, w] * w[k, c] + b[k] + residual[n, k, h, w]).

    USE_TMA: a_src is x's [PIXELS, C] view, b_src w's [K, C], r_src the residual's and
    c_dst y's [PIXELS, K] views, all TensorDescriptors (the output stored by TMA, clipped
    at its edges). Else pointers: x [BATCH, C, H, W], w [K, C, 1, 1], residual and y
    [BATCH, K, H, W], any strides. b: [K] (a pointer either way). FP64: the tensors are
    float64 (accumulate in it). Grid: one program per SM (at most one per tile), each
    looping over output tiles.
    """
    ACC: tl.constexpr = tl.float64 if FP64 else tl.float32
    num_tiles = tl.cdiv(PIXELS, BLOCK_M) * tl.cdiv(K, BLOCK_N)
    for tile in range(tl.program_id(0), num_tiles, tl.num_programs(0)):
        pid_m, pid_n = tile_ids(tile, PIXELS, K, BLOCK_M, BLOCK_N, GROUP_M)
        offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        mask_m = offs_m < PIXELS
        mask_n = offs_n < K
        n, h, w = decode_pixels(offs_m, H, W, INDEX_64)
        if USE_TMA:
            a_rows = offs_m  # unused: the descriptor addresses the rows
        else:
            a_rows = a_src + n * sxn + h * sxh + w * sxw
        acc = _k_loop(a_src, b_src, a_rows, pid_m * BLOCK_M, pid_n * BLOCK_N, offs_n, mask_m, mask_n, C,
                      sxc, swc, swk, ACC, B_TRANS, USE_TMA, DOT_PRECISION, BLOCK_M, BLOCK_N, BLOCK_K)
        if USE_TMA:
            # No [BLOCK_M, BLOCK_N] tile of pointers: residual in and y out move by TMA.
            if HAS_BIAS:
                acc += tl.load(b_ptr + offs_n * sb, mask=mask_n, other=0.0).to(ACC)[None, :]
            if HAS_RESIDUAL:
                acc += r_src.load([pid_m * BLOCK_M, pid_n * BLOCK_N]).to(ACC)
            if RELU:
                acc = tl.where(acc < 0, 0.0, acc)  # NaN stays NaN, as in torch.relu
            c_dst.store([pid_m * BLOCK_M, pid_n * BLOCK_N], acc.to(c_dst.dtype))
        else:
            fused_epilogue(acc, offs_m, mask_m, offs_n, mask_n, b_ptr, r_src, c_dst,
                           n, h, w, syn, syk, syh, syw, srn, srk, srh, srw, sb,
                           HAS_BIAS, HAS_RESIDUAL, RELU)


@autotune("conv1x1", key=_KEY)
@triton.jit
def _conv1x1_dgrad_kernel(
    a_src, b_src, r_src, c_dst,
    # problem sizes: PIXELS = BATCH*H*W, C in and K out channels
    PIXELS, C, K, H, W,
    # strides: dy (n, k, h, w) (pointer variant), w (k, c), mask source and dx (n, c, h, w)
    sdyn, sdyk, sdyh, sdyw,
    swk, swc,
    smn, smc, smh, smw,
    sdxn, sdxc, sdxh, sdxw,
    # meta-parameters
    RELU_MASK: tl.constexpr, USE_TMA: tl.constexpr, A_TRANS: tl.constexpr, B_TRANS: tl.constexpr,
    FP64: tl.constexpr, DOT_PRECISION: tl.constexpr, INDEX_64: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):
    """dx[n, c, h, w] = sum_k dy[n, k, h, w] * w[k, c], zero where m <= 0 with RELU_MASK
    (the conv's input m, r_src here, came out of a ReLU: that ReLU's backward fused into
    this store).

    USE_TMA: a_src is dy's [PIXELS, K] view, b_src w's [K, C], r_src m's and c_dst dx's
    [PIXELS, C] views, all TensorDescriptors. Else pointers: dy [BATCH, K, H, W], w
    [K, C, 1, 1], m and dx [BATCH, C, H, W], any strides. Grid as the forward's.
    """
    ACC: tl.constexpr = tl.float64 if FP64 else tl.float32
    num_tiles = tl.cdiv(PIXELS, BLOCK_M) * tl.cdiv(C, BLOCK_N)
    for tile in range(tl.program_id(0), num_tiles, tl.num_programs(0)):
        pid_m, pid_n = tile_ids(tile, PIXELS, C, BLOCK_M, BLOCK_N, GROUP_M)
        offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        offs_c = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        mask_m = offs_m < PIXELS
        mask_c = offs_c < C
        n, h, w = decode_pixels(offs_m, H, W, INDEX_64)
        if USE_TMA:
            a_rows = offs_m  # unused: the descriptor addresses the rows
        else:
            a_rows = a_src + n * sdyn + h * sdyh + w * sdyw
        acc = _k_loop(a_src, b_src, a_rows, pid_m * BLOCK_M, pid_n * BLOCK_N, offs_c, mask_m, mask_c, K,
                      sdyk, swk, swc, ACC, B_TRANS, USE_TMA, DOT_PRECISION, BLOCK_M, BLOCK_N, BLOCK_K)
        if USE_TMA:
            if RELU_MASK:
                acc = tl.where(r_src.load([pid_m * BLOCK_M, pid_n * BLOCK_N]) <= 0, 0.0, acc)
            c_dst.store([pid_m * BLOCK_M, pid_n * BLOCK_N], acc.to(c_dst.dtype))
        else:
            mask = mask_m[:, None] & mask_c[None, :]
            if RELU_MASK:
                m_off = (n * smn + h * smh + w * smw)[:, None] + offs_c[None, :] * smc
                acc = relu_backward(acc, r_src + m_off, mask)
            dx_off = n * sdxn + h * sdxh + w * sdxw
            tl.store(c_dst + dx_off[:, None] + offs_c[None, :] * sdxc, acc.to(c_dst.dtype.element_ty), mask=mask)


@autotune("conv1x1_wgrad", key=[*_KEY, "SPLIT_ROWS"])
@triton.jit
def _conv1x1_wgrad_kernel(
    a_src, b_src, dw_ptr,
    # problem sizes; SPLIT_ROWS: each split's share of the PIXELS reduction (a multiple of
    # SPLIT_ALIGN, so that a TMA box of BLOCK_K rows never straddles two splits)
    PIXELS, C, K, H, W, SPLIT_ROWS,
    # strides: dy (n, k, h, w) and x (n, c, h, w) (pointer variant), dw (split, k, c)
    sdyn, sdyk, sdyh, sdyw,
    sxn, sxc, sxh, sxw,
    sdwz, sdwk, sdwc,
    # meta-parameters
    USE_TMA: tl.constexpr, A_TRANS: tl.constexpr, B_TRANS: tl.constexpr,
    FP64: tl.constexpr, DOT_PRECISION: tl.constexpr, INDEX_64: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """dw[split, k, c] = sum over this split's pixels p of dy[p, k] * x[p, c].

    a_src: dy as a [PIXELS, K] descriptor (boxes [BLOCK_K, BLOCK_M], used transposed) or a
    pointer to [BATCH, K, H, W]; b_src: x as a [PIXELS, C] descriptor or a pointer to
    [BATCH, C, H, W]; dw: [splits, K, C], fp32 (fp64) partials, or the gradient itself with
    one split. Grid: (row tiles * column tiles, splits).
    """
    ACC: tl.constexpr = tl.float64 if FP64 else tl.float32
    pid = tl.program_id(0)
    split = tl.program_id(1)
    num_rows = tl.cdiv(K, BLOCK_M)
    offs_k = (pid % num_rows) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_c = (pid // num_rows) * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_k = offs_k < K
    mask_c = offs_c < C
    m_start = split * SPLIT_ROWS
    m_end = tl.minimum(m_start + SPLIT_ROWS, PIXELS)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC)
    if USE_TMA:
        # rows past PIXELS read as zeros; m_end < PIXELS only at a multiple of BLOCK_K
        for m0 in range(m_start, m_end, BLOCK_K):
            a = a_src.load([m0, (pid % num_rows) * BLOCK_M]).T
            b = b_src.load([m0, (pid // num_rows) * BLOCK_N])
            acc = tl.dot(a, b, acc, input_precision=DOT_PRECISION, out_dtype=ACC)
    else:
        for m0 in range(m_start, m_end, BLOCK_K):
            offs_m = m0 + tl.arange(0, BLOCK_K)
            mask_m = offs_m < m_end
            n, h, w = decode_pixels(offs_m, H, W, INDEX_64)
            a = tl.load(a_src + (n * sdyn + h * sdyh + w * sdyw)[None, :] + offs_k[:, None] * sdyk,
                        mask=mask_k[:, None] & mask_m[None, :], other=0.0)
            b = tl.load(b_src + (n * sxn + h * sxh + w * sxw)[:, None] + offs_c[None, :] * sxc,
                        mask=mask_m[:, None] & mask_c[None, :], other=0.0)
            acc = tl.dot(a, b, acc, input_precision=DOT_PRECISION, out_dtype=ACC)
    dw_off = split * sdwz + offs_k[:, None] * sdwk + offs_c[None, :] * sdwc
    tl.store(dw_ptr + dw_off, acc.to(dw_ptr.dtype.element_ty), mask=mask_k[:, None] & mask_c[None, :])


# --------------------------------------------------------------------------- host side
def eligible(geo) -> bool:
    """True for the convolutions (a `conv.ConvGeometry`) this GEMM computes exactly: a 1x1
    filter, stride 1, no padding on any side (the output is the input's size), one group
    and channels on both sides (dilation does not move a 1x1 tap)."""
    return ((geo.R, geo.S) == (1, 1) and geo.stride == (1, 1) and geo.padding == (0, 0)
            and (geo.P, geo.Q) == (geo.H, geo.W) and geo.groups == 1 and geo.C > 0 and geo.K > 0)


def pixel_matrix(t: torch.Tensor) -> tuple[int, int] | None:
    """(pixel stride, channel stride) when the [N, C, H, W] tensor `t` is a 2-D [N*H*W, C]
    matrix in memory (its pixel dims collapse into one stride), else None."""
    n, _, h, w = t.shape
    sn, sc, sh, sw = t.stride()
    step = sw if w > 1 else (sh if h > 1 else sn)
    if h > 1 and sh != w * step:
        return None
    if n > 1 and sn != h * w * step:
        return None
    return step, sc


class _Descriptor(TensorDescriptor):
    """triton's host TensorDescriptor (specialized and launched exactly as one), compared and
    hashed by what a launch specializes on: element type, box and padding, as a tensor
    argument specializes on its dtype and alignment. Launch records that count distinct
    compiles (benchmarks.sweep.record_launches) need arguments they can hash; the dataclass's
    own equality would compare the base tensors element-wise. Each launch builds its own."""

    def specialization(self) -> tuple:
        return (str(self.base.dtype), tuple(self.block_shape), self.padding)

    def __eq__(self, other) -> bool:
        return isinstance(other, _Descriptor) and self.specialization() == other.specialization()

    def __hash__(self) -> int:
        return hash(self.specialization())


def _descriptor(t: torch.Tensor, rows: int, cols: int, row_stride: int, col_stride: int) -> TensorDescriptor | None:
    """A TMA descriptor over a [rows, cols] matrix view of `t`, or None where triton's
    TensorDescriptor rules forbid one (unit column stride, 16-byte aligned base and row
    stride) or rows overlap (an expanded view's stride 0: left to the pointer variant).
    Its box is a placeholder: configs.tma_boxes sets the launching config's."""
    size = t.element_size()
    if (col_stride != 1 and cols != 1) or t.data_ptr() % 16 or (row_stride * size) % 16 or rows < 1 or cols < 1:
        return None
    if rows > 1 and row_stride < cols:
        return None
    return _Descriptor(t, [rows, cols], [row_stride, 1], [16, 16])


def _pixel_descriptor(t: torch.Tensor) -> TensorDescriptor | None:
    """[N, ch, H, W] `t` as a [N*H*W, ch] TMA descriptor, or None."""
    n, ch, h, w = t.shape
    pix = pixel_matrix(t)
    return None if pix is None else _descriptor(t, n * h * w, ch, *pix)


def _weight_descriptor(w: torch.Tensor) -> TensorDescriptor | None:
    """A [K, C, 1, 1] filter as a [K, C] TMA descriptor, or None."""
    return _descriptor(w, w.shape[0], w.shape[1], w.stride(0), w.stride(1))


def _sources(tensors: list, describers: list, use_tma: bool | None) -> tuple[bool, list]:
    """(use_tma, what the kernel gets for each tensor): every tensor as its TMA descriptor
    when all of them allow one and `use_tma` is not False, else the tensors themselves."""
    descs = [None if t is None else d(t) for t, d in zip(tensors, describers)]
    possible = all(d is not None for t, d in zip(tensors, descs) if t is not None)
    if use_tma is None:
        use_tma = possible
    elif use_tma and not possible:
        strides = [None if t is None else t.stride() for t in tensors]
        raise ValueError(f"use_tma=True, but a tensor cannot be a TMA descriptor (strides {strides}; needed: "
                         "channels innermost, pixel dims collapsing into one stride, 16-byte aligned base and strides)")
    return use_tma, (descs if use_tma else list(tensors))


def _persistent_grid(device, rows: int, cols: int):
    """One program per SM, at most one per output tile."""
    tiles = lambda meta: cdiv(rows, meta["BLOCK_M"]) * cdiv(cols, meta["BLOCK_N"])
    return lambda meta: (min(sm_count(device), tiles(meta)),)


def conv1x1_forward(x, weight, bias, residual, y, *, relu: bool, use_tma: bool | None = None) -> torch.Tensor:
    """y = act(x @ w^T + bias + residual), written into `y` (any strides) and returned.

    Arguments are checked by `conv.conv2d_forward`, which calls this only where `eligible`.
    `use_tma`: None uses descriptors where every tensor allows them; True / False force a
    variant (tests; True raises where descriptors are impossible)."""
    N, C, H, W = x.shape
    K = weight.shape[0]
    use_tma, (a_src, b_src, r_src, c_dst) = _sources(
        [x, weight, residual, y], [_pixel_descriptor, _weight_descriptor, _pixel_descriptor, _pixel_descriptor],
        use_tma)
    res = residual if residual is not None else y  # strides (and, without TMA, a dummy pointer)
    b = bias if bias is not None else weight
    _conv1x1_fwd_kernel[_persistent_grid(x.device, N * H * W, K)](
        a_src, b_src, b, r_src if residual is not None else c_dst, c_dst,
        N * H * W, C, K, H, W,
        *x.stride(), weight.stride(0), weight.stride(1), *y.stride(), *res.stride(), b.stride(0),
        HAS_BIAS=bias is not None, HAS_RESIDUAL=residual is not None, RELU=relu,
        USE_TMA=use_tma, A_TRANS=False, B_TRANS=True, FP64=x.dtype == torch.float64,
        DOT_PRECISION=dot_precision(x.dtype), INDEX_64=needs_int64(x, y, res),
    )
    return y


def conv1x1_input_grad(grad_out, weight, dx, *, relu_input=None, use_tma: bool | None = None) -> torch.Tensor:
    """dx = grad_out @ w (zero where relu_input <= 0 when given), written into `dx`."""
    N, K, H, W = grad_out.shape
    C = weight.shape[1]
    use_tma, (a_src, b_src, r_src, c_dst) = _sources(
        [grad_out, weight, relu_input, dx], [_pixel_descriptor, _weight_descriptor, _pixel_descriptor,
                                             _pixel_descriptor], use_tma)
    mask_src = relu_input if relu_input is not None else dx
    _conv1x1_dgrad_kernel[_persistent_grid(dx.device, N * H * W, C)](
        a_src, b_src, r_src if relu_input is not None else c_dst, c_dst,
        N * H * W, C, K, H, W,
        *grad_out.stride(), weight.stride(0), weight.stride(1), *mask_src.stride(), *dx.stride(),
        RELU_MASK=relu_input is not None, USE_TMA=use_tma, A_TRANS=False, B_TRANS=False,
        FP64=dx.dtype == torch.float64, DOT_PRECISION=dot_precision(dx.dtype),
        INDEX_64=needs_int64(grad_out, dx, mask_src),
    )
    return dx


def wgrad_split_rows(pixels: int, K: int, C: int, device: torch.device, split_k: int | None,
                     dtype: torch.dtype | None = None) -> int:
    """Each split's share of the pixel reduction, a multiple of SPLIT_ALIGN: from `split_k`
    when given, else the card's tuned split count for (PIXELS, C, K), else enough splits to
    fill the device twice over with 128x128 tiles, each at least 512 rows."""
    if split_k is None:
        fields = {"PIXELS": pixels, "C": C, "K": K}
        split_k = tuned_split("_conv1x1_wgrad_kernel", device, fields, dtype)
    if split_k is None:
        tiles = cdiv(K, 128) * cdiv(C, 128)
        split_k = max(1, min(cdiv(2 * sm_count(device), tiles), pixels // 512, 128))
    rows = cdiv(pixels, max(1, int(split_k)))
    return cdiv(rows, SPLIT_ALIGN) * SPLIT_ALIGN


def conv1x1_weight_grad(x, grad_out, weight_dtype: torch.dtype, *, split_k: int | None = None,
                        use_tma: bool | None = None) -> torch.Tensor:
    """dw [K, C, 1, 1] (channels_last strides) = grad_out^T @ x over every pixel.

    `split_k` asks for that many reduction splits (rounded so each share is a multiple of
    SPLIT_ALIGN pixels: the count launched may be lower). `x` and `grad_out` are [N, C, H, W]
    and [N, K, H, W] with any strides, non-empty."""
    N, C, H, W = x.shape
    K = grad_out.shape[1]
    pixels = N * H * W
    split_rows = wgrad_split_rows(pixels, K, C, x.device, split_k, x.dtype)
    splits = cdiv(pixels, split_rows)
    use_tma, (a_src, b_src) = _sources([grad_out, x], [_pixel_descriptor, _pixel_descriptor], use_tma)
    partial_dtype = torch.float64 if weight_dtype == torch.float64 else torch.float32
    buf = torch.empty((splits, K, C), device=x.device, dtype=weight_dtype if splits == 1 else partial_dtype)
    grid = lambda meta: (cdiv(K, meta["BLOCK_M"]) * cdiv(C, meta["BLOCK_N"]), splits)
    _conv1x1_wgrad_kernel[grid](
        a_src, b_src, buf,
        pixels, C, K, H, W, split_rows,
        *grad_out.stride(), *x.stride(), *buf.stride(),
        USE_TMA=use_tma, A_TRANS=True, B_TRANS=False, FP64=x.dtype == torch.float64,
        DOT_PRECISION=dot_precision(x.dtype), INDEX_64=needs_int64(x, grad_out, buf),
    )
    dw = buf[0] if splits == 1 else column_sum(buf.view(splits, -1), weight_dtype).view(K, C)
    return dw[:, :, None, None]
