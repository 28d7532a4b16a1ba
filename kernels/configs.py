"""Every autotune config list of the kernels, each with a line saying where it came from,
and the autotuner the kernels use (`autotune` -> `TunedAutotuner`).

On a GPU the lists below are autotuned (results cached on disk where the installed triton
supports `cache_results`), except where the card's tuned table (`kernels/tuned/`, loaded by
`tuned.py`) holds the launch's shape key: then its measured winner launches with no
autotuning. Under the interpreter (no GPU) each family gets one small config: the
interpreter's cost is per program and per op, and autotuning there would time nothing
real. The key of each autotuned kernel names every argument that changes the best tile.
"""

from __future__ import annotations

import functools
import inspect
import os
from collections import Counter
from contextlib import contextmanager

import torch
import triton
from triton.runtime.autotuner import Autotuner
from triton.tools.tensor_descriptor import TensorDescriptor

from . import tuned


@functools.cache
def interpreting() -> bool:
    """True when triton kernels run on the CPU interpreter (TRITON_INTERPRET=1). Read once:
    `triton.jit` decides it when our kernels are defined, at import, and a later change of
    the variable does not move them (this runs several times per launch)."""
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


def tma_boxes(nargs: dict) -> None:
    """Config pre-hook of the 1x1 GEMM kernels (`conv1x1.py`): a host TensorDescriptor's box
    is its tile, so it is set from the launching config. Operand A is [BLOCK_M, BLOCK_K]
    ([BLOCK_K, BLOCK_M] when A_TRANS), B [BLOCK_K, BLOCK_N] ([BLOCK_N, BLOCK_K] when
    B_TRANS), an output tile and its residual / mask [BLOCK_M, BLOCK_N]; plain pointers
    (the kernels' pointer variant) are left alone."""
    bm, bn, bk = nargs["BLOCK_M"], nargs["BLOCK_N"], nargs["BLOCK_K"]
    boxes = {"a_src": [bk, bm] if nargs["A_TRANS"] else [bm, bk], "b_src": [bn, bk] if nargs["B_TRANS"] else [bk, bn],
             "r_src": [bm, bn], "c_dst": [bm, bn]}
    for name, box in boxes.items():
        if hasattr(nargs.get(name), "block_shape"):
            nargs[name].block_shape = box


def tma_patch_boxes(nargs: dict) -> None:
    """Config pre-hook of the TMA KxK conv kernels (`conv_tma.py`): the input's (or the
    output gradient's) 4-D NHWC box is one [BLOCK_H, BLOCK_W] patch of pixels by BLOCK_K
    channels, the filter's 3-D [K, R*S, C] box BLOCK_N rows of one tap's BLOCK_K channels."""
    nargs["a_src"].block_shape = [1, nargs["BLOCK_H"], nargs["BLOCK_W"], nargs["BLOCK_K"]]
    nargs["b_src"].block_shape = [nargs["BLOCK_N"], 1, nargs["BLOCK_K"]]


def tma_wgrad_boxes(nargs: dict) -> None:
    """Config pre-hook of the TMA KxK weight-grad (`conv_tma.py`): one [BLOCK_H, BLOCK_W]
    patch of pixels, by BLOCK_M output-gradient channels (a_src) and by BLOCK_N input
    channels (b_src)."""
    nargs["a_src"].block_shape = [1, nargs["BLOCK_H"], nargs["BLOCK_W"], nargs["BLOCK_M"]]
    nargs["b_src"].block_shape = [1, nargs["BLOCK_H"], nargs["BLOCK_W"], nargs["BLOCK_N"]]


def _tma_cfg(bm, bn, bk, warps, stages, **extra):
    return triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, **extra},
                         num_warps=warps, num_stages=stages, pre_hook=tma_boxes)


# 1x1 stride-1 conv as a plain GEMM over channels_last, TMA-fed, forward and data-grad
# (M = pixels, persistent over tiles). Source: the Hopper configs of Triton's tutorial
# 09-persistent-matmul (128-row tiles, 64-deep K steps: 128-byte bf16 rows, wgmma's
# swizzle width; 3-4 stages), plus 64-wide tiles for the 64-channel layers; no 128x128 tile
# on 4 warps (250 registers with the epilogue on sm_90, spills without TMA). Not yet
# measured on our layers. Every BLOCK_K divides 256 (see CONV1X1_WGRAD).
CONV1X1 = [
    _tma_cfg(128, 128, 64, 8, 3, GROUP_M=8),
    _tma_cfg(128, 256, 64, 8, 3, GROUP_M=8),
    _tma_cfg(128, 64, 64, 4, 4, GROUP_M=8),
    _tma_cfg(64, 128, 64, 4, 4, GROUP_M=8),
    _tma_cfg(128, 128, 64, 8, 4, GROUP_M=8),
    _tma_cfg(64, 64, 64, 4, 4, GROUP_M=8),
    _tma_cfg(64, 64, 32, 4, 3, GROUP_M=8),  # the one that fits float64 (131,072 bytes with its out tile)
]
# 1x1 weight-grad: M = C_out, N = C_in, the reduction over pixels split across programs
# in shares of a multiple of 256 rows, so a TMA box (BLOCK_K rows, a divisor of 256) never
# reaches into the next share. Source: the same tutorial rows, with a 128-deep K step kept
# for the long reduction.
CONV1X1_WGRAD = [
    _tma_cfg(128, 128, 64, 8, 3),
    _tma_cfg(128, 128, 128, 8, 3),
    _tma_cfg(64, 128, 64, 4, 4),
    _tma_cfg(128, 64, 64, 4, 4),
    _tma_cfg(64, 64, 128, 4, 3),
    _tma_cfg(64, 64, 32, 4, 3),  # the one that fits float64 (98,304 bytes)
]
# Stride-1 KxK conv fed by TMA boxes (`conv_tma.py`): BLOCK_H x BLOCK_W output pixels of one
# image (BLOCK_M = 64 or 128 GEMM rows) by BLOCK_N channels, persistent over tiles, forward
# and data-grad. Source: the CONV1X1 rows above (Triton's 09-persistent-matmul Hopper
# configs: 128x128x64 on 8 warps, 3 stages; 64-row tiles on 4 warps, 4 stages; no 128x256:
# it spills on sm_90 with this path's pointer epilogue) with their
# 128 rows as 8x16 or 16x8 patches and 64 rows as 8x8 or 4x16 (4x16 tiles 27- and 28-row
# outputs with 12-19% idle rows where 8x8 leaves 23-29%), a 32-deep and a 16-deep K step for
# the 16- and 32-channel layers (GoogLeNet's 5x5 branches: a 64-deep box would be 3/4 zeros),
# and a 64x64x16 tile for float64. Not yet measured on our layers.
def _patch_cfg(bh, bw, bn, bk, warps, stages):
    return triton.Config({"BLOCK_H": bh, "BLOCK_W": bw, "BLOCK_N": bn, "BLOCK_K": bk, "GROUP_M": 8},
                         num_warps=warps, num_stages=stages, pre_hook=tma_patch_boxes)


CONV_TMA = [
    _patch_cfg(8, 16, 128, 64, 8, 3),
    _patch_cfg(16, 8, 128, 64, 8, 3),
    _patch_cfg(8, 16, 64, 64, 4, 4),
    _patch_cfg(8, 8, 128, 64, 4, 4),
    _patch_cfg(4, 16, 128, 64, 4, 4),
    _patch_cfg(8, 8, 64, 64, 4, 4),
    _patch_cfg(8, 16, 64, 32, 4, 4),
    _patch_cfg(8, 16, 64, 16, 4, 4),
    _patch_cfg(8, 8, 64, 16, 4, 4),  # the one float64 takes (conv_tma.FP64_TILE: larger ones spill on sm_90)
]
# Its weight-grad: BLOCK_M output by BLOCK_N input channels of one tap, the reduction over
# the output's pixels a BLOCK_H x BLOCK_W patch (64 or 128 pixels) per step, split across
# programs. Source: the CONV1X1_WGRAD rows (128x128 with 64- and 128-deep steps on 8 warps,
# 64-wide tiles on 4), the steps as 8x8 / 8x16 / 4x16 patches, and a 64x32 tile with 32-pixel
# steps for float64. Not yet measured on our layers.
def _wgrad_patch_cfg(bm, bn, bh, bw, warps, stages):
    return triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_H": bh, "BLOCK_W": bw},
                         num_warps=warps, num_stages=stages, pre_hook=tma_wgrad_boxes)


CONV_TMA_WGRAD = [
    _wgrad_patch_cfg(128, 128, 8, 8, 8, 3),
    _wgrad_patch_cfg(128, 128, 8, 16, 8, 3),
    _wgrad_patch_cfg(64, 128, 8, 8, 4, 4),
    _wgrad_patch_cfg(128, 64, 8, 8, 4, 4),
    _wgrad_patch_cfg(64, 64, 8, 16, 4, 3),
    _wgrad_patch_cfg(64, 128, 4, 16, 4, 4),
    _wgrad_patch_cfg(64, 32, 4, 8, 4, 3),  # the one float64 takes (conv_tma.FP64_WGRAD_TILE)
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
# LRN on channels-innermost tensors (`lrn._lrn_groups_*`): GROUPS vector groups of up to 8
# channels per tile (whole pixels: GROUPS * 8 // C of them at C % 8 == 0), so 1K-8K
# elements per CTA, 1 to 4 groups per thread. Source: the MEM_BOUND block sizes above.
LRN_GROUPS = [
    triton.Config({"GROUPS": g}, num_warps=w) for g, w in ((256, 4), (128, 4), (512, 8), (1024, 8))
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
    "conv1x1": [_tma_cfg(64, 64, 64, 4, 1, GROUP_M=4)],
    "conv1x1_wgrad": [_tma_cfg(64, 64, 64, 4, 1)],
    # 4x4 patches: the tests' odd 7- to 15-pixel outputs still get several tiles a side
    "conv_tma": [_patch_cfg(4, 4, 16, 16, 4, 1)],
    "conv_tma_wgrad": [_wgrad_patch_cfg(16, 16, 4, 4, 4, 1)],
    "mem_bound": [triton.Config({"BLOCK": 4096}, num_warps=4)],
    "lrn": [triton.Config({"BLOCK_P": 16}, num_warps=4)],
    "lrn_groups": [triton.Config({"GROUPS": 64}, num_warps=4)],
    "channel_tiles": [triton.Config({"BLOCK_P": 32, "BLOCK_C": 256}, num_warps=4)],
}
_GPU = {"conv_gemm": CONV_GEMM, "conv_wgrad": CONV_WGRAD, "conv1x1": CONV1X1, "conv1x1_wgrad": CONV1X1_WGRAD,
        "conv_tma": CONV_TMA, "conv_tma_wgrad": CONV_TMA_WGRAD, "mem_bound": MEM_BOUND, "lrn": LRN,
        "lrn_groups": LRN_GROUPS, "channel_tiles": CHANNEL_TILES}
_GPU_FIRST = {family: listed[:1] for family, listed in _GPU.items()}  # one list object per family
# GEMM families: their configs are pruned by shared memory.
GEMM_FAMILIES = ("conv_gemm", "conv_wgrad", "conv1x1", "conv1x1_wgrad", "conv_tma", "conv_tma_wgrad")
# A family whose kernels need a hook before every launch: configs from a tuned table or
# `forced_config` (built without it) get the family's.
_LAUNCH_HOOKS = {"conv1x1": tma_boxes, "conv1x1_wgrad": tma_boxes, "conv_tma": tma_patch_boxes,
                 "conv_tma_wgrad": tma_wgrad_boxes}


def configs(family: str) -> list[triton.Config]:
    """The config list of `family` for the machine this process runs on.

    CONVBENCH_AUTOTUNE=first keeps only the first GPU config of each family: correctness
    runs then compile once per specialization instead of autotuning every test shape
    (a launch the first config cannot serve, fp64 tiles over the shared memory, takes the
    family's first config that fits: `TunedAutotuner.first_of`).
    """
    if interpreting():
        return _INTERPRET[family]
    if os.environ.get("CONVBENCH_AUTOTUNE", "full") == "first":
        return _GPU_FIRST[family]
    return _GPU[family]


_CACHE_RESULTS = "cache_results" in inspect.signature(triton.autotune).parameters


def gemm_shared_bytes(config: triton.Config, element_size: int, *, out_tile: bool = False,
                      extra_a: bool = False) -> int:
    """Shared memory a pipelined GEMM tile stages: num_stages x (A + B tiles), plus the
    output tile a TMA store stages (`out_tile`: the 1x1 kernels' forward and data-grad), and
    a second A-sized tile per stage where the kernel loads one beside A (`extra_a`: the
    conv backward's ReLU mask source, DY_RELU). Checked against the compiler's own numbers
    for sm_90 (scripts/compile_check.py)."""
    kw = config.kwargs
    # conv_tma's patch of pixels: the rows of its forward's tile, the K step of its weight-grad
    rows = kw["BLOCK_M"] if "BLOCK_M" in kw else kw["BLOCK_H"] * kw["BLOCK_W"]
    depth = kw["BLOCK_K"] if "BLOCK_K" in kw else kw["BLOCK_H"] * kw["BLOCK_W"]
    staged = config.num_stages * ((2 if extra_a else 1) * rows * depth + depth * kw["BLOCK_N"])
    return (staged + (rows * kw["BLOCK_N"] if out_tile else 0)) * element_size


def cuda_index(device: torch.device) -> int:
    """The index of a cuda `device`; an unindexed one is the current device."""
    return torch.cuda.current_device() if device.index is None else device.index


def _shared_limit(device) -> int | None:
    """Shared memory per block on `device` (None off the GPU), asked at every pruned launch."""
    if device.type != "cuda":
        return None
    return _cuda_shared_limit(cuda_index(device))


@functools.cache
def _cuda_shared_limit(index: int) -> int:  # a device's limit never changes
    from triton.runtime import driver

    return driver.active.utils.get_device_properties(index)["max_shared_mem"]


# Constexprs outside the autotune keys (and the tuned tables' keys) that change the shared
# memory a config stages (`_shared_need`).
_STAGING = ("DY_RELU",)


def _operand(value):
    """The tensor of a launch argument: itself, a TMA descriptor's base, or None."""
    value = value.base if isinstance(value, TensorDescriptor) else value
    return value if isinstance(value, torch.Tensor) else None


def _shared_need(named_args, kwargs):
    """(bytes a config needs, the device's limit) for one launch, or None off the GPU. The
    staged tiles have the dtype of the kernel's first operand (the GEMM's A: x or grad_out,
    a tensor or a TMA descriptor's base), not of whatever tensor comes first: the TMA
    kernels' first tensor argument can be an fp32 partials buffer, or there is none."""
    tensor = next((t for t in map(_operand, named_args.values()) if t is not None), None)
    limit = _shared_limit(tensor.device) if tensor is not None else None
    if limit is None:
        return None
    out_tile = bool(kwargs.get("USE_TMA")) and "c_dst" in named_args  # a TMA-stored output tile
    extra_a = bool(kwargs.get("DY_RELU"))  # the ReLU mask's source, loaded beside grad_out
    return lambda c: gemm_shared_bytes(c, tensor.element_size(), out_tile=out_tile, extra_a=extra_a), limit


def prune_by_shared_memory(configs_, named_args, **kwargs):
    """Drop GEMM configs whose staged tiles exceed the device's shared memory for this
    dtype (fp32 at 128x256x64 x 3 stages needs 288 KB; Hopper allows 227 KB): they could
    only fail to launch. Keeps the smallest config if none fits."""
    shared = _shared_need(named_args, kwargs)
    if shared is None:
        return configs_
    need, limit = shared
    fits = [c for c in configs_ if need(c) <= limit]
    if kwargs.get("USE_TMA") is False:  # the 1x1 kernels' pointer variant spills above 128x128 on sm_90
        fits = [c for c in fits if c.kwargs["BLOCK_M"] * c.kwargs["BLOCK_N"] <= 128 * 128]
    return fits or [min(configs_, key=need)]


class TunedAutotuner(Autotuner):
    """triton's Autotuner, asked first for a forced config (sweeps, tests), then for the
    tuned table of the card it runs on (`kernels/tuned.py`); a hit launches that config with
    no benchmarking, a miss autotunes as triton does. Built on the constructor and `run`
    that triton 3.6 and 3.8+ share; `last_kernel` keeps the compiled kernel of the last
    launch (its n_regs, n_spills and metadata.shared tell a sweep what the config cost)."""

    def __init__(self, fn, arg_names, configs_, key, family: str, *, first_of: list | None = None, **kwargs):
        super().__init__(fn, arg_names, configs_, key, kwargs.pop("reset_to_zero", None),
                         kwargs.pop("restore_value", None), **kwargs)
        self.family = family
        # CONVBENCH_AUTOTUNE=first: the family's whole list, from which each launch takes the
        # first config the pruning keeps (triton never prunes a one-config list, so a first
        # config too large for a dtype's shared memory, fp64 GEMM tiles, would fail to launch)
        self.first_of = first_of
        self.name = self.base_fn.__name__
        self.last_kernel = None
        self.last_key: dict | None = None
        self._init_kwargs = kwargs
        # triton's in-process autotune cache, one per staging variant (`_STAGING`)
        self._caches: dict[tuple, dict] = {}

    def shape_key(self, args, kwargs) -> dict:
        """The autotune key values of one launch, by name."""
        named = {**dict(zip(self.arg_names, args)), **kwargs}
        return {k: named[k] for k in self.keys}

    def _choice(self, args, kwargs) -> triton.Config | None:
        forced = _FORCED.get(self.name)
        if forced is not None:
            return forced
        # the first operand's dtype and device (a TMA kernel's first tensor argument can be
        # an fp32 partials buffer, or there is none: `_operand`)
        tensor = next((t for t in map(_operand, args) if t is not None), None)
        if tensor is None:
            return None
        table = tuned.table_for(tensor.device)
        if table is not None:
            dtype = str(tensor.dtype).removeprefix("torch.")
            config = table.config(self.name, self.last_key, dtype)
            if config is not None and not self._too_big(config, args, kwargs):
                TABLE_HITS[self.name] += 1
                return config
            TABLE_MISSES[(self.name, dtype, _key_items(self.last_key))] += 1
        if self.first_of is not None:
            return self.first_fitting(args, kwargs)
        return None

    def _too_big(self, config: triton.Config, args, kwargs) -> bool:
        """A table config this launch's variant cannot stage in shared memory (the table's
        key leaves out constexprs such as DY_RELU that stage more): a miss, not a failed
        launch."""
        if self.early_config_prune is not prune_by_shared_memory:
            return False
        shared = _shared_need(dict(zip(self.arg_names, args)), kwargs)
        return shared is not None and shared[0](config) > shared[1]

    def first_fitting(self, args, kwargs) -> triton.Config:
        """The first config of `first_of` that this kernel's pruning keeps for the launch."""
        if self.early_config_prune is None:
            return self.first_of[0]
        return self.early_config_prune(self.first_of, dict(zip(self.arg_names, args)), **kwargs)[0]

    def run(self, *args, **kwargs):
        self.last_key = self.shape_key(args, kwargs)
        config = self._choice(args, kwargs)
        if config is None:
            # triton keys its cache by the autotune key alone: a variant that stages more
            # (DY_RELU) must not take the winner of one that stages less (OutOfResources)
            self.cache = self._caches.setdefault(tuple(kwargs.get(name) for name in _STAGING), {})
            ret = super().run(*args, **kwargs)
        else:
            self.nargs = dict(zip(self.arg_names, args))
            self.best_config = config
            hook = config.pre_hook or _LAUNCH_HOOKS.get(self.family)
            try:
                if hook is not None:
                    hook({**self.nargs, **kwargs, **config.all_kwargs()})
                ret = self.fn.run(*args, **kwargs, **config.all_kwargs())
            finally:
                self.nargs = None
        self.last_kernel = ret
        return ret

    def with_configs(self, configs_: list[triton.Config], **overrides) -> TunedAutotuner:
        """A copy over other configs (same key, hooks and restore/reset lists), e.g. two
        configs and a CPU timer to check that autotuning leaves the answer intact."""
        kwargs = {**self._init_kwargs, "reset_to_zero": self.reset_to_zero,
                  "restore_value": self.restore_value, **overrides}
        if "do_bench" in overrides and "cache_results" in kwargs:
            kwargs["cache_results"] = False  # another timer's results stay out of the disk cache
        return TunedAutotuner(self.fn, self.arg_names, configs_, self.keys, self.family, **kwargs)


# Every kernel built by `autotune`, by its jit function's name (the tuned tables' "kernel").
TUNABLE: dict[str, TunedAutotuner] = {}
_FORCED: dict[str, triton.Config] = {}
# Launches a tuned table served (by kernel name), and launches that found no entry in it (by
# kernel, dtype and key items), since the process started or `reset_table_counts`: whether a
# run used tuned configs. Forced launches and launches with no table are in neither.
TABLE_HITS: Counter = Counter()
TABLE_MISSES: Counter = Counter()


def _key_items(key: dict) -> tuple:
    return tuple(sorted(key.items()))


def reset_table_counts() -> None:
    TABLE_HITS.clear()
    TABLE_MISSES.clear()


@contextmanager
def forced_config(kernel: str, config: triton.Config):
    """Within the block, every launch of `kernel` (a TUNABLE name) uses `config`: no table,
    no autotuning. Sweeps time and check each config through the public launchers so."""
    if kernel not in TUNABLE:
        raise ValueError(f"kernel must be one of {sorted(TUNABLE)}, got {kernel!r}")
    if not isinstance(config, triton.Config):
        raise TypeError(f"config must be a triton.Config, got {type(config).__name__}")
    with overriding(_FORCED, kernel, config):
        yield


@contextmanager
def overriding(mapping: dict, key, value):
    """Within the block, mapping[key] is value; afterwards what it was (absent stays absent)."""
    previous = mapping.get(key)
    mapping[key] = value
    try:
        yield
    finally:
        if previous is None:
            mapping.pop(key, None)
        else:
            mapping[key] = previous


def autotune(family: str, key: list[str], **kwargs):
    """Autotuning over `configs(family)` that first consults the tuned table of the card
    (`TunedAutotuner`), caching results on disk when supported; GEMM families are pruned to
    the configs that fit the device's shared memory. `restore_value` / `reset_to_zero` must
    name every argument a launch updates in place or accumulates into: tuning re-runs it."""
    if family not in _GPU:
        raise ValueError(f"family must be one of {sorted(_GPU)}, got {family!r}")
    if _CACHE_RESULTS:
        kwargs.setdefault("cache_results", True)
    if family in GEMM_FAMILIES:
        kwargs.setdefault("prune_configs_by", {"early_config_prune": prune_by_shared_memory})

    def decorator(fn):
        listed = configs(family)
        first_of = _GPU[family] if not interpreting() and len(listed) < len(_GPU[family]) else None
        tuner = TunedAutotuner(fn, fn.arg_names, listed, key, family, first_of=first_of, **kwargs)
        if tuner.name in TUNABLE:
            raise ValueError(f"two autotuned kernels are named {tuner.name}")
        TUNABLE[tuner.name] = tuner
        return tuner

    return decorator


def constexpr_names(tuner: TunedAutotuner) -> set[str]:
    """The tl.constexpr parameters of an autotuned kernel (read from its signature, so the
    same under the interpreter and the compiler)."""
    params = inspect.signature(tuner.base_fn).parameters.values()
    return {p.name for p in params if "constexpr" in str(p.annotation)}


def entry_problems(entry: dict) -> list[str]:
    """Why no kernel could use a tuned-table entry (empty when one can): an unknown kernel or
    family, key fields that are not the kernel's autotune key, config parameters that are not
    the family's tuned constexprs, or a split count that does not give the key's SPLIT_ROWS
    (or is not its SPLITS)."""
    tuner = TUNABLE.get(entry.get("kernel"))
    if tuner is None:
        return [f"unknown kernel {entry.get('kernel')!r} (autotuned kernels: {sorted(TUNABLE)})"]
    problems = []
    if entry.get("family") != tuner.family:
        problems.append(f"family {entry.get('family')!r} is not {tuner.name}'s {tuner.family!r}")
    key = entry.get("key", {})
    if set(key) != set(tuner.keys):
        problems.append(f"key fields {sorted(key)} are not {tuner.name}'s autotune key {sorted(tuner.keys)}")
    spec = entry.get("config", {})
    params = set(spec.get("kwargs", {}))
    tuned_params = {name for config in _GPU[tuner.family] for name in config.kwargs}
    if params != tuned_params or not params <= constexpr_names(tuner):
        problems.append(f"config parameters {sorted(params)} are not the tuned constexprs {sorted(tuned_params)} "
                        f"of {tuner.name}")
    warps, stages = spec.get("num_warps"), spec.get("num_stages")
    if not (isinstance(warps, int) and warps in (1, 2, 4, 8, 16, 32)):
        problems.append(f"num_warps must be a power of two up to 32, got {warps!r}")
    if not (isinstance(stages, int) and stages >= 1):
        problems.append(f"num_stages must be a positive int, got {stages!r}")
    if entry.get("dtype") not in ("float16", "bfloat16", "float32", "float64"):
        problems.append(f"dtype must be a float dtype name, got {entry.get('dtype')!r}")
    split = entry.get("split_k")
    if "SPLITS" in tuner.keys:  # the split count itself is the key (conv_tma's weight-grad)
        if split != key.get("SPLITS"):
            problems.append(f"split_k {split!r} is not the key's SPLITS {key.get('SPLITS')!r}")
    elif "SPLIT_ROWS" in tuner.keys:
        if not (isinstance(split, int) and split >= 1):
            problems.append(f"{tuner.name} needs split_k, a positive int, got {split!r}")
        elif {"BATCH", "P", "Q", "SPLIT_ROWS"} <= set(key):
            rows = key["BATCH"] * key["P"] * key["Q"]
            if key["SPLIT_ROWS"] != triton.cdiv(rows, split):
                problems.append(f"SPLIT_ROWS {key['SPLIT_ROWS']} != cdiv({rows}, split_k={split})")
    elif split is not None:
        problems.append(f"split_k must be null for {tuner.name}, got {split!r}")
    for field in ("ms", "runner_up_ms", "cudnn_ms"):
        value = entry.get(field)
        if value is not None and not (isinstance(value, (int, float)) and value > 0):
            problems.append(f"{field} must be a positive number of ms or null, got {value!r}")
    if not (isinstance(entry.get("ms"), (int, float))):
        problems.append("ms (the winner's time) must be measured")
    return problems
