"""Compile every Triton kernel of `kernels` for an NVIDIA GPU target without a GPU.

The interpreter runs the kernels' logic on CPU but never sees the real compiler: type rules,
layouts, tl.dot shapes and precisions, register and shared-memory budgets. This lowers each
kernel to cubin (ptxas ships with triton) for sm_90 (H100/H200) by default, over the dtypes,
constexpr branches and the first and last autotune config of each family, then what the
correctness tests launch on a GPU (`gpu_test_variants`: fp64, IEEE fp32, fp16, strided views,
sizes of 1), and the stems as the space-to-depth path runs them (`stem_variants`: registers
and spills printed, spills fail). --quick: bf16 at the first configs, and the fp64 test
variants.

    python scripts/compile_check.py [--arch 90] [--quick]

Exits non-zero and names every variant that failed to compile.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback

os.environ.pop("TRITON_INTERPRET", None)  # must be unset before `kernels` is imported

import triton
import triton.language as tl
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from kernels import _reduce, batchnorm, conv, conv1x1, conv_tma, fc, inception, lrn, lrn_pool, pool, residual, stem
from kernels import configs as cfg

DTYPES = {"fp32": "fp32", "fp16": "fp16", "bf16": "bf16", "fp64": "fp64"}


def _jit(kernel):
    while not isinstance(kernel, triton.runtime.jit.JITFunction):
        kernel = kernel.fn
    return kernel


ELEMENT_SIZE = {"fp32": 4, "fp16": 2, "bf16": 2, "fp64": 8}


def _fits(config, dt, *, extra_a=False, limit=232448) -> bool:
    """Whether autotuning keeps `config` for this dtype (kernels.configs.prune_by_shared_memory
    drops tiles that cannot fit; `extra_a`: a kernel that stages a second A tile, DY_RELU)."""
    return "BLOCK_K" not in config.kwargs or cfg.gemm_shared_bytes(config, ELEMENT_SIZE[dt], extra_a=extra_a) <= limit


def _ends(configs, quick, dt="bf16", limit=232448):
    """The first config (quick), else every config of the family that autotuning keeps for
    this dtype (kernels.configs.prune_by_shared_memory drops tiles that cannot fit)."""
    if quick:
        return configs[:1]
    return [c for c in configs if _fits(c, dt, limit=limit)]


# Strides that are 1 for channels_last tensors: Triton specializes an int argument equal to 1
# at launch, so the real kernels see them as constants (contiguous, vectorizable loads).
UNIT_STRIDES = {
    "conv_fwd": ["sxc", "swc", "syk", "srk"],
    "conv_dgrad": ["sdyk", "sok", "swc", "smc", "sdxc"],
    "conv_wgrad": ["sxc", "sdyk", "sok", "sdwc", "sdbk"],
    "conv1x1_fwd": ["sxc", "swc", "syk", "srk"],
    "conv1x1_dgrad": ["sdyk", "swc", "smc", "sdxc"],
    "conv1x1_wgrad": ["sdyk", "sxc", "sdwc"],
    "conv_tma_fwd": ["syk", "srk"],
    "conv_tma_dgrad": ["smc", "sdxc"],
    "conv_tma_wgrad": ["sdwc"],
    "pointwise": ["sxc", "swc", "syak", "sybk", "sic"],
    "route": ["ssc", "sic", "sdc"],
    "colsum": ["s_in_c", "s_out_c"],
    "max_pool_fwd": ["sxc", "syc", "skc"],
    "max_pool_bwd": ["sgc", "skc", "sdc"],
    "bn_fwd": ["sxc", "src", "syc"],
    "bn_bwd_reduce": ["sdc", "sxc", "src", "sgc"],
    "bn_bwd_dx": ["sgc", "sxc", "src", "sdc"],
    "bn_relu_pool": ["sxc", "syc", "skc"],
    "bn_stats": ["sxc"],
    "lrn_pool_fwd": ["sxc", "syc", "skc"],
    "lrn_pool_bwd": ["sxc", "sgc", "skc", "sdc"],
    "pool_lrn_fwd": ["sxc", "soc"],
}


def _unit(family):
    return dict.fromkeys(UNIT_STRIDES[family], 1)


# conv._conv_fwd_kernel's space-to-depth constexprs: off, and by the stems' K_CHUNK: the 7x7/2
# stems' (C=3, z 16 channels: 64 per folded row, tap by tap) and AlexNet's 11x11/4 (48: 144)
NO_FOLD = dict(zip(conv.FOLD_ARGS, (0, 1, 1, 1, 1, 1)))
STEM_FOLD = {0: dict(zip(conv.FOLD_ARGS, (2, 2, 7, 7, 3, 16))), 16: dict(zip(conv.FOLD_ARGS, (4, 4, 11, 11, 3, 48)))}
TL_DTYPES = {"fp32": tl.float32, "fp16": tl.float16, "bf16": tl.bfloat16, "fp64": tl.float64}
POOL_3x3_2 = dict(KH=3, KW=3, SH=2, SW=2)  # the nets' overlapping pools


def pool_bn_variants(dt: str, quick: bool):
    """Max-pool, LRN + max-pool and BatchNorm kernels on channels_last (channel strides 1),
    each constexpr branch on and off (--quick: on), at every config of their families."""
    stats = dict.fromkeys(["mean_ptr", "var_ptr"], "fp32")
    params = dict.fromkeys(["w_ptr", "b_ptr"], dt)
    eps = {"eps": "fp64"}
    lrn_scalars = dict.fromkeys(["alpha_over_size", "beta", "k"], "fp64")
    ons = (True,) if quick else (True, False)
    for conf in _ends(cfg.CHANNEL_TILES, quick):
        meta, w = conf.kwargs, conf.num_warps
        for on in ons:
            yield (f"max_pool fwd {dt} i64={not on} {meta}", pool._max_pool_fwd_kernel,
                   {"x_ptr": dt, "y_ptr": dt, "code_ptr": "i8"}, {},
                   dict(INDEX_64=not on, **POOL_3x3_2, **_unit("max_pool_fwd"), **meta), w, 2)
            yield (f"max_pool bwd {dt} i64={not on} {meta}", pool._max_pool_bwd_kernel,
                   {"dy_ptr": dt, "code_ptr": "i8", "dx_ptr": dt}, {},
                   dict(INDEX_64=not on, **POOL_3x3_2, **_unit("max_pool_bwd"), **meta), w, 2)
            yield (f"bn fwd {dt} affine/residual/relu={on} i64={not on} {meta}", batchnorm._bn_fwd_kernel,
                   {**dict.fromkeys(["x_ptr", "r_ptr", "y_ptr"], dt), **stats, **params}, eps,
                   dict(HAS_AFFINE=on, HAS_RESIDUAL=on, RELU=on, INDEX_64=not on, **_unit("bn_fwd"), **meta), w, 2)
            yield (f"bn bwd dx {dt} residual/relu/training={on} i64={not on} {meta}", batchnorm._bn_bwd_dx_kernel,
                   {**dict.fromkeys(["g_ptr", "x_ptr", "r_ptr", "dx_ptr"], dt), **stats, **params,
                    **dict.fromkeys(["sg_ptr", "sgx_ptr"], "fp32")}, eps,
                   dict(HAS_AFFINE=True, HAS_RESIDUAL=on, RELU=on, TRAINING=on, Y_DTYPE=TL_DTYPES[dt],
                        INDEX_64=not on, **_unit("bn_bwd_dx"), **meta), w, 2)
            yield (f"bn+relu+pool fwd {dt} affine={on} i64={not on} {meta}", batchnorm._bn_relu_pool_fwd_kernel,
                   {"x_ptr": dt, "y_ptr": dt, "code_ptr": "i8", **stats, **params}, eps,
                   dict(HAS_AFFINE=on, INDEX_64=not on, **POOL_3x3_2, **_unit("bn_relu_pool"), **meta), w, 2)
    # the per-channel reductions, at the launcher's GPU block sizes (not autotuned)
    for on in ons:
        yield (f"bn stats {dt} i64={not on}", _reduce._bn_stats_kernel,
               {"x_ptr": dt, "mean_part_ptr": "fp32", "m2_part_ptr": "fp32"}, {},
               dict(BLOCK_R=64, BLOCK_C=32, INDEX_64=not on, **_unit("bn_stats")), 4, 2)
        yield (f"bn finalize running={on} cumulative={not on}", batchnorm._bn_finalize_kernel,
               {**dict.fromkeys(["mean_part_ptr", "m2_part_ptr", "mean_ptr", "var_ptr"], "fp32"),
                "run_mean_ptr": dt, "run_var_ptr": dt, "nbt_ptr": "i64"}, {"momentum": "fp64"},
               dict(HAS_RUNNING=on, HAS_NBT=True, CUMULATIVE=not on, BLOCK_S=32, BLOCK_C=128), 4, 1)
        yield (f"bn bwd reduce {dt} residual/relu/write_g={on} i64={not on}", batchnorm._bn_bwd_reduce_kernel,
               {**dict.fromkeys(["dy_ptr", "x_ptr", "r_ptr", "g_ptr"], dt), **stats, **params,
                **dict.fromkeys(["sg_part_ptr", "sgx_part_ptr"], "fp32")}, eps,
               dict(HAS_AFFINE=True, HAS_RESIDUAL=on, RELU=on, WRITE_G=on, Y_DTYPE=TL_DTYPES[dt], BLOCK_R=64,
                    BLOCK_C=32, INDEX_64=not on, **_unit("bn_bwd_reduce")), 4, 2)
        yield (f"bn bwd finalize {dt} affine={on}", batchnorm._bn_bwd_finalize_kernel,
               {**dict.fromkeys(["sg_part_ptr", "sgx_part_ptr", "sg_ptr", "sgx_ptr", "var_ptr"], "fp32"),
                "dw_ptr": dt, "db_ptr": dt}, eps, dict(HAS_AFFINE=on, BLOCK_S=32, BLOCK_C=64), 4, 1)
    # LRN + max-pool: AlexNet's norm2 -> pool2 (256 channels), GoogLeNet's maxpool1 -> norm1 (64)
    for block_c in (256,) if quick else (256, 64):
        conf = lrn._prune_tiles(cfg.LRN, {}, BLOCK_C=block_c)[0]
        meta = dict(SIZE=5, BLOCK_C=block_c, INDEX_64=False, **POOL_3x3_2, **conf.kwargs)
        yield (f"lrn+pool fwd {dt} {meta}", lrn_pool._lrn_pool_fwd_kernel, {"x_ptr": dt, "y_ptr": dt, "code_ptr": "i8"},
               lrn_scalars, {**meta, **_unit("lrn_pool_fwd")}, conf.num_warps, 2)
        yield (f"lrn+pool bwd {dt} {meta}", lrn_pool._lrn_pool_bwd_kernel,
               {"x_ptr": dt, "dy_ptr": dt, "code_ptr": "i8", "dx_ptr": dt}, {**lrn_scalars, "coef": "fp64"},
               {**meta, **_unit("lrn_pool_bwd")}, conf.num_warps, 2)
        yield (f"pool+lrn fwd {dt} {meta}", lrn_pool._pool_lrn_fwd_kernel,
               {"x_ptr": dt, "p_ptr": dt, "code_ptr": "i8", "y_ptr": dt}, lrn_scalars,
               {**meta, **_unit("pool_lrn_fwd")}, conf.num_warps, 2)


def conv1x1_variants(dt: str, quick: bool):
    """The 1x1 GEMM kernels, TMA-fed (host descriptors, `tensordesc` arguments with the
    config's boxes, as `configs.tma_boxes` sets them) and through pointers, at every config
    of their families (--quick: the first, TMA only). A TMA variant promises wgmma and TMA
    loads, and no spills (`main` fails it otherwise)."""
    def box(rows, cols):
        return f"tensordesc<{dt}[{rows}, {cols}]>"

    prec = "ieee" if dt == "fp64" else "tf32"
    partial = "fp64" if dt == "fp64" else "fp32"
    for family, confs in (("conv1x1", cfg.CONV1X1), ("conv1x1_wgrad", cfg.CONV1X1_WGRAD)):
        for conf in confs[:1] if quick else confs:
            meta, w, s = conf.kwargs, conf.num_warps, conf.num_stages
            bm, bn, bk = meta["BLOCK_M"], meta["BLOCK_N"], meta["BLOCK_K"]
            out_tile = family == "conv1x1"
            if cfg.gemm_shared_bytes(conf, ELEMENT_SIZE[dt], out_tile=out_tile) > 232448:
                continue  # pruned for this dtype at launch
            for tma in (True,) if quick else (True, False):
                on = tma  # the epilogue branches ride along with the TMA variant
                common = dict(USE_TMA=tma, FP64=dt == "fp64", DOT_PRECISION=prec, INDEX_64=not tma, **meta)
                if family == "conv1x1":
                    a, b_fwd, b_dg, c = ((box(bm, bk), box(bn, bk), box(bk, bn), box(bm, bn)) if tma
                                         else ("*" + dt,) * 4)
                    yield (f"conv1x1 fwd {dt} tma={tma} epilogue={on} {meta}", conv1x1._conv1x1_fwd_kernel,
                           {"a_src": a, "b_src": b_fwd, "b_ptr": dt, "r_src": c, "c_dst": c}, {},
                           dict(HAS_BIAS=on, HAS_RESIDUAL=on, RELU=on, A_TRANS=False, B_TRANS=True,
                                **_unit("conv1x1_fwd"), **common), w, s)
                    yield (f"conv1x1 dgrad {dt} tma={tma} relu_mask={on} {meta}", conv1x1._conv1x1_dgrad_kernel,
                           {"a_src": a, "b_src": b_dg, "r_src": c, "c_dst": c}, {},
                           dict(RELU_MASK=on, A_TRANS=False, B_TRANS=False, **_unit("conv1x1_dgrad"), **common), w, s)
                else:
                    a, b = (box(bk, bm), box(bk, bn)) if tma else ("*" + dt, "*" + dt)
                    yield (f"conv1x1 wgrad {dt} tma={tma} {partial} partials={on} {meta}",
                           conv1x1._conv1x1_wgrad_kernel,
                           {"a_src": a, "b_src": b, "dw_ptr": partial if on else dt}, {},
                           dict(A_TRANS=True, B_TRANS=False, **_unit("conv1x1_wgrad"), **common), w, s)


# The stems as the space-to-depth path runs them (kernels/stem.py): AlexNet's conv1 (C=3,
# 11x11/4 -> 48 channels, 3x3) and the 7x7/2 stems (C=3 -> 12 padded to 16 channels, 4x4).
S2D_STEMS = {"alexnet.conv1": 48, "7x7/2 stem": 16}  # z's channels


def stem_variants(quick: bool):
    """The s2d path on sm_90: its re-layout kernels at the stems' tiles (source unaligned: a
    3-channel image), and the rewritten conv, which runs the generic tap-by-tap kernels with
    stride and dilation 1 (specialized at launch) over channels that are a multiple of 16
    (aligned): one specialization serves both stems. Forward and weight-grad read z with the
    filter's columns folded into channels (`stem.row_geometry`: S = 1, specialized at
    launch); the data-grad runs z's own R2 x S2 taps. The rewritten conv promises no spills
    and, where the tile allows one (a warpgroup: 4+ warps, 64+ rows), wgmma (`main` fails it
    otherwise), at the first config of each family (--quick), at every config otherwise."""
    ones = dict(stride_h=1, stride_w=1, dil_h=1, dil_w=1)
    rows = dict(ones, S=1)
    for name, cz in S2D_STEMS.items():
        block_p, block_c = stem._tiles(cz)
        yield (f"s2d space_to_depth bf16 {name} BLOCK_P={block_p} BLOCK_C={block_c}", stem._space_to_depth_kernel,
               {"src_ptr": "bf16", "dst_ptr": "bf16"}, {}, dict(BLOCK_P=block_p, BLOCK_C=block_c, INDEX_64=False),
               stem.RELAYOUT_WARPS, 1, False, ("no-spills",))
    block_p, block_c = stem._tiles(3)
    for relu in (True,) if quick else (True, False):
        yield (f"s2d depth_to_space bf16 C=3 relu_mask={relu} BLOCK_P={block_p} BLOCK_C={block_c}",
               stem._depth_to_space_kernel, dict.fromkeys(["src_ptr", "m_ptr", "dst_ptr"], "bf16"), {},
               dict(RELU_MASK=relu, BLOCK_P=block_p, BLOCK_C=block_c, INDEX_64=not relu), stem.RELAYOUT_WARPS, 1,
               False, ("no-spills",))
    def promise(meta, warps):
        return ("no-spills", "wgmma") if meta["BLOCK_M"] >= 64 and warps >= 4 else ("no-spills",)

    # K_CHUNK (conv.k_chunk): AlexNet's rewritten conv has 144 channels per tap forward and
    # weight-grad (runs of 16) and 96 output channels in the data-grad, the 7x7/2 stems 64
    # (tap by tap)
    for conf in cfg.CONV_GEMM[:1] if quick else cfg.CONV_GEMM:
        meta, w, s = conf.kwargs, conf.num_warps, conf.num_stages
        for chunk in (0, 16):
            yield (f"s2d conv fwd bf16 rows bias/relu chunk={chunk} {meta}", conv._conv_fwd_kernel,
                   {**dict.fromkeys(["x_ptr", "w_ptr", "b_ptr", "r_ptr", "y_ptr"], "bf16"), "st_ptr": "fp32"}, {},
                   dict(HAS_BIAS=True, HAS_RESIDUAL=False, RELU=True, STATS=False, STATS_ROWS=64, FLAT_K=False,
                        K_CHUNK=chunk, DOT_PRECISION="tf32", INDEX_64=False, **STEM_FOLD[chunk], **rows,
                        **_unit("conv_fwd"), **meta),
                   w, s, True, promise(meta, w))
            yield (f"s2d conv dgrad bf16 chunk={chunk} {meta}", conv._conv_dgrad_kernel,
                   dict.fromkeys(["dy_ptr", "o_ptr", "w_ptr", "m_ptr", "dx_ptr"], "bf16"), {},
                   dict(DY_RELU=False, RELU_MASK=False, FLAT_K=False, K_CHUNK=chunk, DOT_PRECISION="tf32",
                        INDEX_64=False, tap_step_h=1, tap_step_w=1, **ones, **_unit("conv_dgrad"), **meta),
                   w, s, True, promise(meta, w))
    for conf in cfg.CONV_WGRAD[:1] if quick else cfg.CONV_WGRAD:
        meta, w, s = conf.kwargs, conf.num_warps, conf.num_stages
        for chunk in (0, 16):
            yield (f"s2d conv wgrad bf16 rows fp32 partials chunk={chunk} {meta}", conv._conv_wgrad_kernel,
                   {"x_ptr": "bf16", "dy_ptr": "bf16", "o_ptr": "bf16", "dw_ptr": "fp32", "db_ptr": "fp32"}, {},
                   dict(DY_RELU=False, BIAS_GRAD=False, FLAT_K=False, K_CHUNK=chunk, DOT_PRECISION="tf32",
                        INDEX_64=False, **rows, **_unit("conv_wgrad"), **meta),
                   w, s, True, promise(meta, w))

def conv_tma_variants(dt: str, quick: bool):
    """The TMA KxK conv kernels (host descriptors: the input's or output gradient's 4-D
    NHWC box [1, BLOCK_H, BLOCK_W, BLOCK_K], the filter's [BLOCK_N, 1, BLOCK_K], as
    `configs.tma_patch_boxes` sets them), forward and data-grad, epilogues on and off, at
    every config of the family that a launch in this dtype may take (shared memory, and
    `conv_tma.fp64_fits` for fp64; --quick: the first), and the weight-grad (partials or
    the gradient stored, both index widths). Always TMA-fed:
    each promises wgmma (mma.sync for fp64), TMA loads and no spills (`main` fails it
    otherwise)."""
    prec = "ieee" if dt == "fp64" else "tf32"
    confs = [c for c in cfg.CONV_TMA if conv_tma.fp64_fits(c)] if dt == "fp64" else cfg.CONV_TMA  # as launches prune
    for conf in _ends(confs, quick, dt):
        meta, w, s = conf.kwargs, conf.num_warps, conf.num_stages
        bh, bw, bn, bk = meta["BLOCK_H"], meta["BLOCK_W"], meta["BLOCK_N"], meta["BLOCK_K"]
        boxes = {"a_src": f"tensordesc<{dt}[1, {bh}, {bw}, {bk}]>", "b_src": f"tensordesc<{dt}[{bn}, 1, {bk}]>"}
        for on in (True,) if quick else (True, False):
            common = dict(FP64=dt == "fp64", DOT_PRECISION=prec, INDEX_64=not on, **meta)
            yield (f"conv_tma fwd {dt} epilogue={on} i64={not on} {meta}", conv_tma._conv_tma_fwd_kernel,
                   {**boxes, "b_ptr": dt, "r_ptr": dt, "y_ptr": dt}, {},
                   dict(HAS_BIAS=on, HAS_RESIDUAL=on, RELU=on, **_unit("conv_tma_fwd"), **common), w, s)
            yield (f"conv_tma dgrad {dt} relu_mask={on} i64={not on} {meta}", conv_tma._conv_tma_dgrad_kernel,
                   {**boxes, "m_ptr": dt, "dx_ptr": dt}, {},
                   dict(RELU_MASK=on, **_unit("conv_tma_dgrad"), **common), w, s)
    partial = "fp64" if dt == "fp64" else "fp32"
    confs = [c for c in cfg.CONV_TMA_WGRAD if conv_tma.fp64_fits(c)] if dt == "fp64" else cfg.CONV_TMA_WGRAD
    for conf in confs[:1] if quick else confs:
        meta, w, s = conf.kwargs, conf.num_warps, conf.num_stages
        if cfg.gemm_shared_bytes(conf, ELEMENT_SIZE[dt]) > 232448:
            continue  # pruned for this dtype at launch
        patch = f"1, {meta['BLOCK_H']}, {meta['BLOCK_W']}"
        boxes = {"a_src": f"tensordesc<{dt}[{patch}, {meta['BLOCK_M']}]>",
                 "b_src": f"tensordesc<{dt}[{patch}, {meta['BLOCK_N']}]>"}
        for on in (True,) if quick else (True, False):
            yield (f"conv_tma wgrad {dt} {partial} partials={on} i64={not on} {meta}", conv_tma._conv_tma_wgrad_kernel,
                   {**boxes, "dw_ptr": partial if on else dt}, {},
                   dict(FP64=dt == "fp64", DOT_PRECISION=prec, INDEX_64=not on, **_unit("conv_tma_wgrad"), **meta),
                   w, s)


# Kernels fed by TMA in every variant (no USE_TMA switch): each promises what a TMA variant does.
ALWAYS_TMA = {"_conv_tma_fwd_kernel", "_conv_tma_dgrad_kernel", "_conv_tma_wgrad_kernel"}


def promises_tma(kernel, constexprs: dict) -> bool:
    fn = kernel
    while hasattr(fn, "fn"):  # Autotuner -> JITFunction (or the interpreter's) -> the python function
        fn = fn.fn
    return bool(constexprs.get("USE_TMA")) or fn.__name__ in ALWAYS_TMA


def variants(quick: bool):
    """(label, kernel, pointer dtypes, float args, constexprs, num_warps, num_stages).

    Per dtype, two variants per kernel that between them take every constexpr branch and
    both index widths, at every config of the kernel's autotune family (the first, --quick).
    """
    dts = ["bf16"] if quick else list(DTYPES)
    for dt in dts:
        prec = "ieee" if dt == "fp64" else "tf32"  # kernels._utils.dot_precision
        for conf in _ends(cfg.CONV_GEMM, quick, dt):
            meta, w, s = conf.kwargs, conf.num_warps, conf.num_stages
            for on in (True, False):
                yield (f"conv fwd {dt} flat={not on} epilogue={on} i64={not on} {meta}", conv._conv_fwd_kernel,
                       {**dict.fromkeys(["x_ptr", "w_ptr", "b_ptr", "r_ptr", "y_ptr"], dt), "st_ptr": "fp32"}, {},
                       dict(HAS_BIAS=on, HAS_RESIDUAL=on, RELU=on, STATS=False, STATS_ROWS=64, FLAT_K=not on,
                            K_CHUNK=0 if on else 1, DOT_PRECISION=prec, INDEX_64=not on, **NO_FOLD,
                            **_unit("conv_fwd"), **meta),
                       w, s)
                if on:  # the flattened K loop in runs of 16 channels (e.g. 48 channels per group)
                    yield (f"conv fwd {dt} chunk=16 {meta}", conv._conv_fwd_kernel,
                           {**dict.fromkeys(["x_ptr", "w_ptr", "b_ptr", "r_ptr", "y_ptr"], dt), "st_ptr": "fp32"}, {},
                           dict(HAS_BIAS=True, HAS_RESIDUAL=False, RELU=True, STATS=False, STATS_ROWS=64, FLAT_K=False,
                                K_CHUNK=16, DOT_PRECISION=prec, INDEX_64=False, **NO_FOLD, **_unit("conv_fwd"),
                                **meta), w, s)
                if on:  # the BatchNorm statistics epilogue (no residual, no activation: the launcher's rule)
                    yield (f"conv fwd {dt} stats bias i64=False {meta}", conv._conv_fwd_kernel,
                           {**dict.fromkeys(["x_ptr", "w_ptr", "b_ptr", "r_ptr", "y_ptr"], dt), "st_ptr": "fp32"}, {},
                           dict(HAS_BIAS=True, HAS_RESIDUAL=False, RELU=False, STATS=True, STATS_ROWS=64, FLAT_K=False,
                                K_CHUNK=0, DOT_PRECISION=prec, INDEX_64=False, **NO_FOLD, **_unit("conv_fwd"), **meta),
                           w, s)
                if on or _fits(conf, dt, extra_a=True):  # DY_RELU stages the mask source beside dy
                    yield (f"conv dgrad {dt} relu_mask={on} dy_relu={not on} chunk={0 if on else 8} i64={not on} "
                           f"{meta}", conv._conv_dgrad_kernel,
                           dict.fromkeys(["dy_ptr", "o_ptr", "w_ptr", "m_ptr", "dx_ptr"], dt), {},
                           dict(DY_RELU=not on, RELU_MASK=on, FLAT_K=False, K_CHUNK=0 if on else 8,
                                DOT_PRECISION=prec, INDEX_64=not on, **_unit("conv_dgrad"), **meta), w, s)
                yield (f"pointwise fwd {dt} pool3={on} bias/relu={on} i64={not on} {meta}",
                       inception._pointwise_fwd_kernel,
                       {**dict.fromkeys(["x_ptr", "w_ptr", "b_ptr", "ya_ptr", "yb_ptr"], dt), "idx_ptr": "i8"}, {},
                       dict(HAS_BIAS=on, RELU=on, POOL3=on, WRITE_ARGMAX=on, DOT_PRECISION=prec, INDEX_64=not on,
                            **_unit("pointwise"), **meta), w, s)
        for conf in _ends(cfg.CONV_WGRAD, quick, dt):
            meta, w, s = conf.kwargs, conf.num_warps, conf.num_stages
            for on in (True, False):
                for chunk in ((1, 16) if _fits(conf, dt, extra_a=True) else ()) if on else (0,):
                    yield (f"conv wgrad {dt} chunk={chunk} fp32 partials={on} dy_relu/bias={on} i64={not on} {meta}",
                           conv._conv_wgrad_kernel,
                           {"x_ptr": dt, "dy_ptr": dt, "o_ptr": dt, **dict.fromkeys(["dw_ptr", "db_ptr"],
                                                                                    "fp32" if on else dt)}, {},
                           dict(DY_RELU=on, BIAS_GRAD=on, FLAT_K=chunk == 1, K_CHUNK=chunk, DOT_PRECISION=prec,
                                INDEX_64=not on, **_unit("conv_wgrad"), **meta), w, s)
        yield from conv1x1_variants(dt, quick)
        yield from conv_tma_variants(dt, quick)
        for on in (True, False):
            yield (f"colsum {dt} i64={on}", _reduce._colsum_kernel,
                   {"in_ptr": dt if on else "fp32", "out_ptr": "fp32" if on else dt}, {},
                   dict(BLOCK_R=32, BLOCK_C=128, INDEX_64=on, **_unit("colsum")), 4, 1)
            yield (f"pool3 route {dt} gather={on} i64={not on}", inception._pool3_route_kernel,
                   {"src_ptr": dt, "idx_ptr": "i8", "dst_ptr": dt}, {},
                   dict(GATHER=on, INDEX_64=not on, BLOCK_P=64, BLOCK_C=64, **_unit("route")), 4, 2)
        for conf in _ends(cfg.MEM_BOUND, quick):
            yield (f"add_relu fwd {dt} {conf.kwargs}", residual._add_relu_fwd_kernel,
                   dict.fromkeys(["x_ptr", "r_ptr", "y_ptr"], dt), {}, dict(INDEX_64=False, **conf.kwargs),
                   conf.num_warps, 2)
            yield (f"relu grad {dt} i64 {conf.kwargs}", residual._relu_grad_kernel,
                   dict.fromkeys(["g_ptr", "y_ptr", "dx_ptr"], dt), {}, dict(INDEX_64=True, **conf.kwargs),
                   conf.num_warps, 2)
        # LRN on channels_last (sc == 1, AlexNet's norm2) and NCHW (sl == 1, an even window).
        scalars = dict.fromkeys(["alpha_over_size", "beta", "k"], "fp32")
        for layout, unit, size, block_c, i64 in (("channels_last", "sc", 5, 256, False), ("NCHW", "sl", 4, 128, True)):
            conf = cfg.LRN[0]
            meta = dict(SIZE=size, BLOCK_C=block_c, INDEX_64=i64, **{unit: 1}, **conf.kwargs)
            yield (f"lrn fwd {dt} {layout} {meta}", lrn._lrn_fwd_kernel, dict.fromkeys(["x_ptr", "y_ptr"], dt),
                   scalars, meta, conf.num_warps, 2)
            yield (f"lrn bwd {dt} {layout} {meta}", lrn._lrn_bwd_kernel,
                   dict.fromkeys(["x_ptr", "dy_ptr", "dx_ptr"], dt), {**scalars, "coef": "fp32"}, meta,
                   conf.num_warps, 2)
        # LRN on channels-innermost memory: AlexNet's norm1 (96 channels, groups of 8) with
        # lg2.approx and a positive scale; 12 channels (groups of 4), a signed scale and an
        # odd integer beta, int64 indices.
        lrn64 = dict.fromkeys(["alpha_over_size", "beta", "k"], "fp64")
        for conf in _ends(cfg.LRN_GROUPS, quick):
            for C, on in ((96, False), (12, True)):
                meta = dict(C=C, V=lrn._group_width(C), SIZE=5, SIGNED=on, B_INT=on, B_ODD=on, B_ZERO=False,
                            LOG2="exact" if dt == "fp64" else ("approx" if on else "approx.ftz"), INDEX_64=on,
                            **conf.kwargs)
                yield (f"lrn groups fwd {dt} {meta}", lrn._lrn_groups_fwd_kernel,
                       dict.fromkeys(["x_ptr", "y_ptr"], dt), lrn64, meta, conf.num_warps, 1)
                yield (f"lrn groups bwd {dt} {meta}", lrn._lrn_groups_bwd_kernel,
                       dict.fromkeys(["x_ptr", "dy_ptr", "dx_ptr"], dt), {**lrn64, "coef": "fp64"},
                       {**meta, "B_EVEN": False, "B_ONE": False}, conf.num_warps, 1)
        yield from pool_bn_variants(dt, quick)
        scalars = {"p": "fp32", "scale": "fp32"}
        for on in (True, False):  # the FC epilogue: bias + ReLU + dropout (Philox), and without them
            yield (f"fc epilogue fwd {dt} bias/relu/dropout={on}", fc._fc_epilogue_fwd_kernel,
                   {**dict.fromkeys(["z_ptr", "b_ptr", "y_ptr"], dt), "seed_ptr": "i64"}, scalars,
                   dict(HAS_BIAS=on, RELU=on, DROPOUT=on, BLOCK_M=64, BLOCK_N=128), 4, 1)
            yield (f"fc epilogue bwd {dt} relu={on} dropout=True", fc._fc_epilogue_bwd_kernel,
                   {**dict.fromkeys(["g_ptr", "y_ptr", "dz_ptr"], dt), "seed_ptr": "i64"}, scalars,
                   dict(RELU=on, DROPOUT=True, BLOCK_M=64, BLOCK_N=128), 4, 1)
    if not quick:  # float64: the 1x1 and KxK paths' TMA loads feeding fp64 MMA (no wgmma for fp64)
        yield from conv1x1_variants("fp64", quick)
        yield from conv_tma_variants("fp64", quick)
    if not quick:  # fp32 with TF32 off: the IEEE path of tl.dot
        conf = cfg.CONV_GEMM[0]
        yield (f"conv fwd fp32 ieee {conf.kwargs}", conv._conv_fwd_kernel,
               dict.fromkeys(["x_ptr", "w_ptr", "b_ptr", "r_ptr", "y_ptr", "st_ptr"], "fp32"), {},
               dict(HAS_BIAS=True, HAS_RESIDUAL=True, RELU=True, STATS=False, STATS_ROWS=64, FLAT_K=False,
                    DOT_PRECISION="ieee", INDEX_64=False, **NO_FOLD, **_unit("conv_fwd"), **conf.kwargs),
               conf.num_warps, conf.num_stages)


def _launched(configs, dt, limit=232448, extra_a=False):
    """The config a launch takes under CONVBENCH_AUTOTUNE=first: the family's first config
    whose staged tiles fit the shared memory for this dtype (kernels.configs.TunedAutotuner;
    `extra_a`: as `_fits`)."""
    return next((c for c in configs if _fits(c, dt, extra_a=extra_a, limit=limit)), configs[-1])


# Integer arguments a small test problem passes as 1 (Triton specializes an int equal to 1
# into a constant at launch): batch, channels, kernel taps, strides, dilations, sizes.
ONES = {
    "conv_fwd": ["BATCH", "CG", "KG", "R", "S", "P", "Q", "stride_h", "stride_w", "dil_h", "dil_w"],
    "conv_dgrad": ["BATCH", "CG", "KG", "R", "S", "P", "Q", "stride_h", "stride_w", "dil_h", "dil_w",
                   "tap_step_h", "tap_step_w"],
    "conv_wgrad": ["BATCH", "CG", "KG", "R", "S", "P", "Q", "stride_h", "stride_w", "dil_h", "dil_w", "SPLIT_ROWS"],
    "pointwise": ["BATCH", "H", "W", "C", "NTOT", "NA"],
    "lrn": ["C", "L", "E_INT", "E_ODD"],
}


def gpu_test_variants(quick: bool):
    """What the correctness tests launch on a GPU beyond the nets' bf16: fp64 (IEEE fp64
    dot: DMMA on sm_80+), fp32 with TF32 off (IEEE: FMA), fp16; each at the config a launch
    takes under CONVBENCH_AUTOTUNE=first; strided views (no unit stride, no 16-divisibility)
    and tiny problems (sizes, strides and dilations specialized to 1). Triton 3.6 rejected
    every fp64 tl.dot that was not given out_dtype=fp64, so fp64 is in --quick."""
    gemm_ptrs = ["x_ptr", "w_ptr", "b_ptr", "r_ptr", "y_ptr"]
    cases = [("fp64", "ieee")] if quick else [("fp64", "ieee"), ("fp32", "ieee"), ("fp16", "tf32")]
    for dt, prec in cases:
        g, w = _launched(cfg.CONV_GEMM, dt), _launched(cfg.CONV_WGRAD, dt, extra_a=True)
        gd = _launched(cfg.CONV_GEMM, dt, extra_a=True)  # the data-grad with DY_RELU
        for shape in ("strided", "ones") if not quick else ("ones",):
            ones = shape == "ones"
            one = (lambda fam: dict.fromkeys(ONES[fam], 1)) if ones else (lambda fam: {})
            tag = f"{dt} {prec} {shape}"
            yield (f"conv fwd {tag} {g.kwargs}", conv._conv_fwd_kernel, dict.fromkeys([*gemm_ptrs, "st_ptr"], dt), {},
                   dict(HAS_BIAS=True, HAS_RESIDUAL=True, RELU=True, STATS=False, STATS_ROWS=64, FLAT_K=ones,
                        K_CHUNK=int(ones), DOT_PRECISION=prec, INDEX_64=False, **NO_FOLD, **one("conv_fwd"),
                        **g.kwargs),
                   g.num_warps, g.num_stages,
                   not ones)
            yield (f"conv dgrad {tag} {gd.kwargs}", conv._conv_dgrad_kernel,
                   dict.fromkeys(["dy_ptr", "o_ptr", "w_ptr", "m_ptr", "dx_ptr"], dt), {},
                   dict(DY_RELU=True, RELU_MASK=True, FLAT_K=ones, K_CHUNK=int(ones), DOT_PRECISION=prec,
                        INDEX_64=False, **one("conv_dgrad"), **gd.kwargs), gd.num_warps, gd.num_stages, not ones)
            for partials in (True, False) if not quick else (ones,):
                part = ("fp64" if dt == "fp64" else "fp32") if partials else dt
                yield (f"conv wgrad {tag} partials={partials} {w.kwargs}", conv._conv_wgrad_kernel,
                       {"x_ptr": dt, "dy_ptr": dt, "o_ptr": dt, "dw_ptr": part, "db_ptr": part},
                       {}, dict(DY_RELU=True, BIAS_GRAD=True, FLAT_K=ones, K_CHUNK=int(ones), DOT_PRECISION=prec,
                                INDEX_64=False, **one("conv_wgrad"), **w.kwargs),
                       w.num_warps, w.num_stages, not ones)
            for pool3 in (True, False) if not quick else (ones,):
                yield (f"pointwise fwd {tag} pool3={pool3} {g.kwargs}", inception._pointwise_fwd_kernel,
                       {**dict.fromkeys(["x_ptr", "w_ptr", "b_ptr", "ya_ptr", "yb_ptr"], dt), "idx_ptr": "i8"}, {},
                       dict(HAS_BIAS=True, RELU=True, POOL3=pool3, WRITE_ARGMAX=pool3, DOT_PRECISION=prec,
                            INDEX_64=False, **one("pointwise"), **g.kwargs), g.num_warps, g.num_stages, not ones)
        if dt == "fp16":
            continue  # the non-GEMM kernels below run half types as the nets' bf16 does
        lrn_scalars = dict.fromkeys(["alpha_over_size", "beta", "k"], "fp64")
        conf = cfg.LRN[0]
        for e_int in (True, False):  # integer beta (odd) with C = L = 1, and fractional beta
            ones = dict.fromkeys(ONES["lrn"], 1) if e_int else {}
            meta = dict(SIZE=3, BLOCK_C=8, INDEX_64=False, **conf.kwargs, **ones)
            yield (f"lrn fwd {dt} E_INT={e_int} {meta}", lrn._lrn_fwd_kernel, dict.fromkeys(["x_ptr", "y_ptr"], dt),
                   lrn_scalars, meta, conf.num_warps, 2, False)
            yield (f"lrn bwd {dt} E_INT={e_int} {meta}", lrn._lrn_bwd_kernel,
                   dict.fromkeys(["x_ptr", "dy_ptr", "dx_ptr"], dt), {**lrn_scalars, "coef": "fp64"},
                   {**meta, **({"E_EVEN": 1} if e_int else {})}, conf.num_warps, 2, False)
        grp = cfg.LRN_GROUPS[0]
        for beta in ("zero", "one"):  # beta 0 (no cross-channel term) and 1 (beta - 1 zero), 3 channels
            flags = dict(B_INT=True, B_ODD=beta == "one", B_EVEN=beta == "zero", B_ZERO=beta == "zero",
                         B_ONE=beta == "one")
            meta = dict(C=3, V=1, SIZE=4, SIGNED=True, LOG2="exact" if dt == "fp64" else "approx",
                        INDEX_64=False, **grp.kwargs)
            yield (f"lrn groups fwd {dt} beta={beta} {meta}", lrn._lrn_groups_fwd_kernel,
                   dict.fromkeys(["x_ptr", "y_ptr"], dt), lrn_scalars,
                   {**meta, **{f: flags[f] for f in ("B_INT", "B_ODD", "B_ZERO")}}, grp.num_warps, 1, False)
            yield (f"lrn groups bwd {dt} beta={beta} {meta}", lrn._lrn_groups_bwd_kernel,
                   dict.fromkeys(["x_ptr", "dy_ptr", "dx_ptr"], dt), {**lrn_scalars, "coef": "fp64"},
                   {**meta, **flags}, grp.num_warps, 1, False)
        mem = cfg.MEM_BOUND[0]
        yield (f"add_relu fwd {dt} {mem.kwargs}", residual._add_relu_fwd_kernel,
               dict.fromkeys(["x_ptr", "r_ptr", "y_ptr"], dt), {}, dict(INDEX_64=False, **mem.kwargs), mem.num_warps, 2,
               False)
        yield (f"relu grad {dt} {mem.kwargs}", residual._relu_grad_kernel,
               dict.fromkeys(["g_ptr", "y_ptr", "dx_ptr"], dt), {}, dict(INDEX_64=False, **mem.kwargs),
               mem.num_warps, 2, False)
        part = "fp64" if dt == "fp64" else "fp32"
        yield (f"colsum {dt}", _reduce._colsum_kernel, {"in_ptr": part, "out_ptr": dt}, {},
               dict(BLOCK_R=32, BLOCK_C=128, INDEX_64=False), 4, 1, False)
        yield (f"pool3 route {dt}", inception._pool3_route_kernel, {"src_ptr": dt, "idx_ptr": "i8", "dst_ptr": dt}, {},
               dict(GATHER=True, INDEX_64=False, BLOCK_P=64, BLOCK_C=64), 4, 2, False)


# Shared memory one block may use (bytes), by compute capability: a variant over it
# compiles but cannot launch.
SHARED_LIMIT = {80: 166912, 86: 101376, 89: 101376, 90: 232448, 100: 232448}

# Channel counts: their masks decide whether a K step loads as whole 16-byte vectors.
CHANNEL_COUNTS = {"CG", "KG", "C", "NTOT", "NA", "COLS"}


def compile_one(kernel, pointers, floats, constexprs, warps, stages, target, *, aligned=True):
    """Lower one variant to cubin. `aligned`: pointers, strides and channel counts carry the
    16-divisibility Triton attaches at launch when they have it (layers whose channels are
    multiples of 16: all but the C=3 stems, which are compiled without)."""
    fn = _jit(kernel)
    signature, attrs = {}, {}
    for i, name in enumerate(fn.arg_names):
        if name in constexprs:
            signature[name] = "constexpr"
            continue
        if name in pointers:
            kind = pointers[name]
            signature[name] = kind if kind.startswith(("tensordesc", "*")) else "*" + kind
            if signature[name].startswith("tensordesc"):
                continue  # a host TMA descriptor: its alignment is the descriptor's own rule
        else:
            signature[name] = floats.get(name, "i32")
        is_int = signature[name] == "i32"
        if aligned and (name in pointers or (is_int and (name.startswith("s") or name in CHANNEL_COUNTS))):
            attrs[(i,)] = [["tt.divisibility", 16]]
    src = ASTSource(fn, signature, constexprs=constexprs, attrs=attrs)
    return triton.compile(src, target=target, options={"num_warps": warps, "num_stages": stages})


def describe_code(compiled) -> str:
    """What the GEMM kernels lowered to: the MMA instruction and how loads are pipelined
    (TMA: bulk tensor copies; cp.async; or plain loads)."""
    ptx = compiled.asm.get("ptx", "")
    mma = "wgmma" if "wgmma" in ptx else ("mma.sync" if "mma.sync" in ptx else "no-mma")
    if "cp.async.bulk.tensor" in ptx:
        piped = "tma"
    else:
        piped = "cp.async" if "cp.async" in ptx else "sync-loads"
    return f"{mma} {piped}" if mma != "no-mma" else piped


def all_variants(quick: bool):
    yield from variants(quick)
    yield from stem_variants(quick)
    yield from gpu_test_variants(quick)


def _cuobjdump() -> str | None:
    """triton's bundled cuobjdump (the NVIDIA backend ships it), or None."""
    from triton.backends import nvidia

    path = os.path.join(os.path.dirname(nvidia.__file__), "bin", "cuobjdump")
    return path if os.path.exists(path) else None


def machine_code(compiled) -> dict | None:
    """Registers, stack bytes and SASS counts (TMA loads UTMALDG, TMA stores UTMASTG, wgmma
    HGMMA, local-memory loads LDL: spills) of a compiled kernel, read with cuobjdump; None
    where it is missing or fails."""
    import re
    import subprocess
    import tempfile

    tool = _cuobjdump()
    cubin = compiled.asm.get("cubin")
    if tool is None or cubin is None:
        return None
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        usage = subprocess.run([tool, "-res-usage", f.name], capture_output=True, text=True, check=False).stdout
        sass = subprocess.run([tool, "-sass", f.name], capture_output=True, text=True, check=False).stdout
    found = re.search(r"REG:(\d+) STACK:(\d+)", usage)
    if found is None:
        return None
    counts = {op: len(re.findall(rf"\b{op}\b", sass)) for op in ("UTMALDG", "UTMASTG", "HGMMA", "LDL")}
    return {"regs": int(found.group(1)), "stack": int(found.group(2)), **counts}


def promise_problems(constexprs: dict, compiled, code: dict | None, promises: tuple = (), *,
                     tma: bool | None = None) -> list[str]:
    """What a TMA variant (USE_TMA, or `tma`: a kernel in ALWAYS_TMA) promised and its code
    lacks: wgmma, TMA loads, no spills; or what a variant's own `promises` name ("wgmma",
    "no-spills") and its code lacks."""
    if promises:
        problems = []
        if "wgmma" in promises and "wgmma" not in compiled.asm.get("ptx", ""):
            problems.append("no wgmma in the PTX")
        if "no-spills" in promises and code is not None and (code["stack"] or code["LDL"]):
            problems.append(f"spills: {code['stack']} stack bytes, {code['LDL']} local loads")
        return problems
    if not (constexprs.get("USE_TMA") if tma is None else tma):
        return []
    ptx = compiled.asm.get("ptx", "")
    mma = "mma.sync" if constexprs.get("FP64") else "wgmma"  # sm_90 has no fp64 wgmma: DMMA
    problems = [f"no {what} in the PTX" for what, mark in ((mma, mma), ("TMA load", "cp.async.bulk.tensor"))
                if mark not in ptx]
    if code is not None:
        if not code["UTMALDG"] or not (code["HGMMA"] or constexprs.get("FP64")):
            problems.append(f"SASS lacks HGMMA or UTMALDG ({code})")
        if code["stack"] or code["LDL"]:
            problems.append(f"spills: {code['stack']} stack bytes, {code['LDL']} local loads")
    return problems


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", type=int, default=90, help="compute capability x 10 (default 90: Hopper)")
    p.add_argument("--quick", action="store_true", help="one dtype (bf16), first config, fewer branches")
    args = p.parse_args(argv)
    target = GPUTarget("cuda", args.arch, 32)
    failures, count, start = [], 0, time.time()
    for label, kernel, pointers, floats, constexprs, warps, stages, *extra in all_variants(args.quick):
        count += 1
        try:
            # FLAT_K stands for the C=3 stems; the test and s2d variants say whether they are
            # aligned, and the s2d ones what their code promises
            aligned = extra[0] if extra else not constexprs.get("FLAT_K", False)
            promises = extra[1] if len(extra) > 1 else ()
            compiled = compile_one(kernel, pointers, floats, constexprs, warps, stages, target, aligned=aligned)
            # Registers and spills are known only once loaded on a device; shared memory is not.
            shared, limit = compiled.metadata.shared, SHARED_LIMIT.get(args.arch)
            if limit and shared > limit:
                raise RuntimeError(f"needs {shared} B of shared memory, sm_{args.arch} allows {limit}")
            tma = promises_tma(kernel, constexprs)
            code = machine_code(compiled) if "USE_TMA" in constexprs or tma or promises else None
            problems = promise_problems(constexprs, compiled, code, promises, tma=tma)
            if problems:
                raise RuntimeError("; ".join(problems))
            sass = "" if code is None else (f"  regs={code['regs']} stack={code['stack']} UTMALDG={code['UTMALDG']} "
                                            f"UTMASTG={code['UTMASTG']} HGMMA={code['HGMMA']} LDL={code['LDL']}")
            print(f"ok   {label}  shared={shared} B  {describe_code(compiled)}{sass}", flush=True)
        except Exception as exc:  # collected and reported, the exit code says it failed
            failures.append(label)
            print(f"FAIL {label}\n{''.join(traceback.format_exception_only(exc))[-1500:]}", flush=True)
    print(f"{count - len(failures)}/{count} variants compiled for sm_{args.arch} in {time.time() - start:.0f}s")
    for label in failures:
        print(f"failed: {label}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
