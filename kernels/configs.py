"""Every autotune config list of the kernels, each with a line saying where it came from.

On a GPU the lists below are autotuned (results cached on disk where the installed triton
supports `cache_results`). Under the interpreter (no GPU) each family gets one small config:
the interpreter's cost is per program and per op, and autotuning there would time nothing
real. The key of each autotuned kernel names every argument that changes the best tile.
"""

from __future__ import annotations

import inspect
import os

import triton


def interpreting() -> bool:
    """True when triton kernels run on the CPU interpreter (TRITON_INTERPRET=1)."""
    return os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on", "yes")


def _cfg(bm, bn, bk, warps, stages, **extra):
    return triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, **extra},
                         num_warps=warps, num_stages=stages)


# Implicit-GEMM conv forward and data-grad (a GEMM with M = N*P*Q output pixels).
# Source: the Hopper rows of Triton's tutorial 03-matrix-multiplication, trimmed to tiles
# whose K step fits a conv's channel loop (BLOCK_K <= 64); not yet measured on our layers.
CONV_GEMM = [
    _cfg(128, 128, 64, 8, 3, GROUP_M=8),
    _cfg(128, 256, 64, 8, 3, GROUP_M=8),
    _cfg(256, 128, 64, 8, 3, GROUP_M=8),
    _cfg(128, 64, 64, 4, 4, GROUP_M=8),
    _cfg(64, 128, 64, 4, 4, GROUP_M=8),
    _cfg(128, 128, 32, 4, 4, GROUP_M=8),
    _cfg(64, 64, 32, 4, 5, GROUP_M=8),
    _cfg(64, 32, 32, 2, 5, GROUP_M=8),
]
# Weight-grad: M = C_out, N = R*S*C, reduction over N*P*Q (long), split-K across programs.
# Source: same tutorial rows; BLOCK_K is the step along N*P*Q, so larger K steps are kept.
CONV_WGRAD = [
    _cfg(128, 128, 64, 8, 3),
    _cfg(64, 128, 64, 4, 4),
    _cfg(128, 64, 64, 4, 4),
    _cfg(64, 64, 64, 4, 4),
    _cfg(64, 64, 128, 4, 3),
    _cfg(32, 64, 64, 4, 4),
]
# Element-wise and sliding-window kernels (LRN, add+ReLU): one block size axis.
# Source: Liger-Kernel / Triton tutorial 02 practice (4 to 16 KB of each operand per CTA).
MEM_BOUND = [
    triton.Config({"BLOCK": b}, num_warps=w) for b, w in ((1024, 4), (2048, 8), (4096, 8), (8192, 16))
]
# LRN: BLOCK_P spatial positions per tile; the host sets BLOCK_C = next_pow2(C) (all
# channels of a position in one tile) and configs over 16K elements are pruned.
# Source: sized so a tile is 4-32 KB, the range where shifted re-reads hit L1 on Hopper.
LRN = [
    triton.Config({"BLOCK_P": p}, num_warps=w)
    for p, w in ((8, 4), (16, 4), (32, 4), (32, 8), (64, 8), (128, 8))
]
# Pixel x channel tiles (max-pool, BatchNorm normalize and backward): BLOCK_P pixels by
# BLOCK_C channels. Source: the LRN sizing (4-32 KB tiles), channels innermost for NHWC.
CHANNEL_TILES = [
    triton.Config({"BLOCK_P": p, "BLOCK_C": c}, num_warps=w)
    for p, c, w in ((32, 64, 4), (64, 64, 4), (16, 128, 4), (64, 128, 8), (128, 64, 8))
]

# One config per family on the interpreter. Its cost is per program and per block op,
# nearly independent of the block's size, so tiles are large (fewer loop trips on the nets'
# 512-channel layers); the tests' odd sizes still leave every tile partly masked.
_INTERPRET = {
    "conv_gemm": [_cfg(64, 64, 64, 4, 1, GROUP_M=4)],
    "conv_wgrad": [_cfg(64, 64, 64, 4, 1)],
    "mem_bound": [triton.Config({"BLOCK": 4096}, num_warps=4)],
    "lrn": [triton.Config({"BLOCK_P": 16}, num_warps=4)],
    "channel_tiles": [triton.Config({"BLOCK_P": 32, "BLOCK_C": 256}, num_warps=4)],
}
_GPU = {"conv_gemm": CONV_GEMM, "conv_wgrad": CONV_WGRAD, "mem_bound": MEM_BOUND, "lrn": LRN,
        "channel_tiles": CHANNEL_TILES}


def configs(family: str) -> list[triton.Config]:
    """The config list of `family` for the machine this process runs on.

    CONVBENCH_AUTOTUNE=first keeps only the first GPU config of each family: correctness
    runs then compile once per specialization instead of autotuning every test shape.
    """
    if interpreting():
        return _INTERPRET[family]
    if os.environ.get("CONVBENCH_AUTOTUNE", "full") == "first":
        return _GPU[family][:1]
    return _GPU[family]


_CACHE_RESULTS = "cache_results" in inspect.signature(triton.autotune).parameters


def gemm_shared_bytes(config: triton.Config, element_size: int) -> int:
    """Shared memory a pipelined GEMM tile stages: num_stages x (A + B tiles). Checked
    against the compiler's own numbers for sm_90 (scripts/compile_check.py)."""
    kw = config.kwargs
    return config.num_stages * (kw["BLOCK_M"] * kw["BLOCK_K"] + kw["BLOCK_K"] * kw["BLOCK_N"]) * element_size


def _shared_limit(device) -> int | None:
    if device.type != "cuda":
        return None
    from triton.runtime import driver

    return driver.active.utils.get_device_properties(device.index or 0)["max_shared_mem"]


def prune_by_shared_memory(configs_, named_args, **kwargs):
    """Drop GEMM configs whose staged tiles exceed the device's shared memory for this
    dtype (fp32 at 128x256x64 x 3 stages needs 288 KB; Hopper allows 227 KB): they could
    only fail to launch. Keeps the smallest config if none fits."""
    tensor = next((v for v in named_args.values() if hasattr(v, "element_size")), None)
    limit = _shared_limit(tensor.device) if tensor is not None else None
    if limit is None:
        return configs_
    fits = [c for c in configs_ if gemm_shared_bytes(c, tensor.element_size()) <= limit]
    return fits or [min(configs_, key=lambda c: gemm_shared_bytes(c, tensor.element_size()))]


def autotune(family: str, key: list[str], **kwargs):
    """`triton.autotune` over `configs(family)`, caching results on disk when supported;
    GEMM families are pruned to the configs that fit the device's shared memory."""
    if _CACHE_RESULTS:
        kwargs.setdefault("cache_results", True)
    if family in ("conv_gemm", "conv_wgrad"):
        kwargs.setdefault("prune_configs_by", {"early_config_prune": prune_by_shared_memory})
    return triton.autotune(configs=configs(family), key=key, **kwargs)
