"""The GPU sweep: every distinct conv / Inception / max-pool / LRN+max-pool / BatchNorm(+ReLU)
(+residual) layer (and any LRN or add+ReLU layer) of AlexNet, GoogLeNet and ResNet-50
(benchmarks/gpu_shapes.py) at batch 128, bf16 channels_last, each pass apart, under every
config of its kernel, timed with do_bench beside cuDNN/ATen in the same process and checked
against cuDNN's output; the winners become the card's tuned table. The references are
torch's eager ops: cuDNN convs and BatchNorm (then add_ and relu_ in place, as the torch
backend), torch's max_pool2d, F.local_response_norm then max_pool2d (either order).

Steps (`python -m benchmarks.sweep STEP --out DIR`), run in this order by scripts/gpu_check.sh:
  compile  every (kernel, specialization, config) the later steps launch, compiled first by
           worker processes that share one TRITON_CACHE_DIR, each claiming the next launch of
           the plan (longest compiles first) until none is left, and launching it once through
           the public launchers. With a tuned table of the card (the base table: the committed
           one unless told), that is the configs of the items the table lacks, the table's
           config of every item it serves (what the nets and the bench launch), the first
           config of the items known to spill, and the bench's per-branch Inception launches;
           `--full` plans every config of every item. A launch rather than
           `JITFunction.warmup(*args, grid=..., **constexprs)` (the compile-only path of triton
           3.6 and 3.8+ alike): triton 3.6 builds each signature's C launcher only at a first
           real launch, and that gcc step belongs in the parallel workers and the shared cache too
  sweep    time and check every item x config the base table lacks (`--full`: every item), but
           for items every config of which spilled in earlier rows of the card (`--known-rows`);
           rows go to sweep.csv as they are measured; the table (the base table's entries and
           the new winners: winner, runner-up, cuDNN ms) is written at the end or on SIGINT.
           cuDNN runs with torch's defaults (its heuristics pick the algorithm: cudnn.benchmark off)
  bench    the device's copy bandwidth (a large bf16 copy, bytes read + written); each
           memory-bound item (LRN, LRN + max-pool, max-pool, BatchNorm) under the table's
           config beside its ATen op, as achieved bandwidth and % of the copy's; each Inception
           block's 1x1 GEMMs four ways: our fused launch, our kernel once per branch (each at
           its best config), cuDNN once per branch, one cuDNN conv over the concatenated filters
  nets     training images/s of the three nets on the torch, compile and triton backends
           (triton with the table: no autotuning), and how many launches the table served
Every step stops cleanly on SIGINT (`timeout -s INT`) and keeps what it measured.

Times are of a pass as its launcher runs it (every kernel it launches: a weight-grad's
split partials and their column sum too), CUDA events around each call, L2 flushed between.

Correctness bound for one output against cuDNN's: both are bf16 results of fp32
accumulation, each within (atol, rtol) of the exact answer (tests/helpers.py's derivation:
rtol = 2u, atol = u + 16 * 2**-24 * sqrt(K) * log2(K+1) for unit-scale products, rescaled
here to the products' and the result's scale), so they differ by at most twice that.
One exception, said where it is made: eager BatchNorm + residual rounds twice (BatchNorm's
bf16 output, then the sum), so near zero its ReLU mask differs from the fused kernel's
(one rounding) and elements differ by a whole gradient; those items are checked against the
same torch ops in fp32 rounded once to bf16, and still timed against the eager bf16 ops.
And a ReLU's gradient mask is a sign decision: where the pre-activation lies within fp32
rounding of zero (|z| <= 1e-5 of its largest value; fp32 evaluation orders differ by a few
2**-24 of the terms), the two masks may legitimately differ by a whole gradient, so BatchNorm
+ ReLU backward items leave those elements (a few per million) out of the comparison.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import torch
import torch.nn.functional as F
import triton

import kernels.conv as kconv
from kernels import configs as kconfigs
from kernels import tuned
from kernels.batchnorm import batch_norm_backward, batch_norm_forward, batch_norm_relu_pool_forward, batch_norm_stats
from kernels.conv import conv2d_forward, conv2d_input_grad, conv2d_weight_grad, conv_geometry
from kernels.inception import pointwise_forward
from kernels.lrn import _group_width, _prune_groups, _prune_tiles, lrn_backward, lrn_forward
from kernels.lrn_pool import lrn_max_pool2d_backward, lrn_max_pool2d_forward, max_pool2d_lrn_forward
from kernels.pool import code_dtype, max_pool2d_backward, max_pool2d_forward
from kernels.residual import add_relu_forward, relu_grad

from .gpu_shapes import BNShape, InceptionShape, LRNPoolShape, PoolShape, all_layers
from .shapes import ConvShape

BATCH = 128
DTYPE = torch.bfloat16
ROUNDOFF = {torch.bfloat16: 2.0**-8, torch.float16: 2.0**-11, torch.float32: 2.0**-24}
# do_bench budget per timed measurement (ms). 1 + 4 ms (was 2 + 6): still >= 8 timed runs of
# a 0.5 ms kernel, hundreds of the small ones; the first H100 run took ~0.1 s per measurement
# with its checks (gpu_plan.py's MEASURE_S).
WARMUP_MS, REP_MS = 1, 4
NET_ARCHS = ("alexnet", "googlenet", "resnet50")
NET_BACKENDS = ("torch", "triton", "compile")  # torch.compile last: its build time is the least known
# Weight-grad split counts tried: the host heuristic's and its double (1..128).
SPLIT_FACTORS = (1, 2)


@dataclass
class Item:
    """One timed unit: a layer's pass on one kernel (and one split count for weight-grad)."""
    layer: str
    kind: str
    pass_: str
    kernel: str
    make: Callable  # (device, init: bool) -> dict of inputs at BATCH, DTYPE
    triton: Callable  # inputs -> zero-argument closure through the public launcher
    reference: Callable  # inputs -> zero-argument closure through cuDNN / ATen
    reduction: int  # K of the tolerance: the length of each output's sum
    shape_key: tuple = ()  # the layer's sizes; equal keys are one item
    split_k: int | None = None
    flops: float = 0.0
    nbytes: float = 0.0
    block_c: int | None = None  # LRN: the launcher's channel tile, which bounds BLOCK_P
    channels: int | None = None  # LRN on channels_last (lrn_groups family): C, which bounds GROUPS from below
    follows: bool = False  # times only the winner of the item before it (another split count)
    check: Callable | None = None  # inputs -> closure of the output compared, if not `reference`'s
    ambiguous: Callable | None = None  # inputs -> bool mask of elements left out of the check
    # the conv path the item runs (kernels/race.py; benchmarks/gpu_paths.py) and, for a path
    # other than the generic kernel's, the layer's dispatch key (kernels.conv.dispatch_key)
    path: str = "generic"
    dispatch_key: dict | None = None

    @property
    def id(self) -> str:
        split = f"/split{self.split_k}" if self.split_k else ""
        path = f"@{self.path}" if self.path != "generic" else ""
        return f"{self.layer}:{self.pass_}{split}{path}"

    @property
    def family(self) -> str:
        return kconfigs.TUNABLE[self.kernel].family


def _cl(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous(memory_format=torch.channels_last) if t.dim() == 4 else t


def _tensor(shape, device, init: bool, scale: float = 1.0) -> torch.Tensor:
    """A bf16 input on the GPU. On the CPU (no bf16 in the interpreter): fp16 when `init` is
    False, for launch recording (2 bytes like bf16, and apart from the fp32 split-K
    partials, so the same specializations are seen), else fp32 (every reference op exists)."""
    if torch.device(device).type == "cuda":
        dtype = DTYPE
    else:
        dtype = torch.float32 if init else torch.float16
    if not init:
        return torch.empty(shape, device=device, dtype=dtype, memory_format=torch.channels_last) \
            if len(shape) == 4 else torch.empty(shape, device=device, dtype=dtype)
    return _cl(torch.randn(shape, device=device, dtype=dtype) * scale)


def _conv_backward(dy, x, w, s: ConvShape, mask):
    return torch.ops.aten.convolution_backward(dy, x, w, None, [s.stride] * 2, [s.padding] * 2, [1, 1], False,
                                               [0, 0], s.groups, mask)


def conv_items(s: ConvShape, passes=("forward", "dgrad", "wgrad"), splits=None) -> list[Item]:
    p, q = s.out_hw()
    out_shape = (BATCH, s.K, p, q)

    def make(device, init):
        return {"x": _tensor(s.x_shape(BATCH), device, init), "dy": _tensor(out_shape, device, init),
                "w": _tensor(s.w_shape(), device, init, s.reduction() ** -0.5)}

    geo = lambda i: conv_geometry(i["x"], i["w"], s.stride, s.padding, 1, s.groups)
    key = ("conv", s.C, s.H, s.width, s.K, s.R, s.kw, s.stride, s.padding, s.groups)
    flops = s.flops(BATCH)
    io = 2 * (BATCH * s.C * s.H * s.width + BATCH * s.K * p * q + math.prod(s.w_shape()))
    items = []
    if "forward" in passes:
        items.append(Item(s.name, "conv", "forward", "_conv_fwd_kernel", make,
                          lambda i: lambda: conv2d_forward(i["x"], i["w"], None, s.stride, s.padding, 1, s.groups),
                          lambda i: lambda: F.conv2d(i["x"], i["w"], None, s.stride, s.padding, 1, s.groups),
                          s.reduction(), key, flops=flops, nbytes=io))
    if "dgrad" in passes and s.C > 3:  # a net's image input needs no gradient
        items.append(Item(s.name, "conv", "dgrad", "_conv_dgrad_kernel", make,
                          lambda i: lambda: conv2d_input_grad(i["dy"], i["w"], geo(i)),
                          lambda i: lambda: _conv_backward(i["dy"], i["x"], i["w"], s, [True, False, False])[0],
                          (s.K // s.groups) * s.R * s.kw, key, flops=flops, nbytes=io))
    if "wgrad" in passes:
        for n, split in enumerate(splits or wgrad_splits(s)):
            items.append(Item(s.name, "conv", "wgrad", "_conv_wgrad_kernel", make,
                              lambda i, split=split: lambda: conv2d_weight_grad(i["x"], i["dy"], geo(i), i["x"].dtype,
                                                                                split_k=split),
                              lambda i: lambda: _conv_backward(i["dy"], i["x"], i["w"], s, [False, True, False])[1],
                              BATCH * p * q, key, split_k=split, flops=flops, nbytes=io, follows=n > 0))
    return items


def wgrad_splits(s: ConvShape, sm_count: int = 132) -> list[int]:
    """The split counts tried for a weight-grad, the host heuristic's at 64x64 tiles first
    (on a device of `sm_count` SMs, an H100's 132 unless told), then its double, within
    1..128 and at least 512 rows per split. Every config is timed at the first; the others
    time its winner."""
    geo = s.geometry(BATCH)
    with mock.patch.dict(os.environ, {"CONVBENCH_TUNED": "off"}), \
            mock.patch.object(kconv, "sm_count", lambda device: sm_count):
        h = kconv._tile_splits(geo, torch.device("cuda"), 64, 64)
    most = max(1, min(128, geo.N * geo.P * geo.Q // 512))
    return list(dict.fromkeys(max(1, min(most, round(h * f))) for f in SPLIT_FACTORS))


def inception_items(b: InceptionShape) -> list[Item]:
    n_fused = b.c1 + b.r3 + b.r5

    def make(device, init):
        return {"x": _tensor((BATCH, b.C, b.H, b.H), device, init),
                "w": _tensor((n_fused, b.C), device, init, b.C ** -0.5), "b": _tensor((n_fused,), device, init, 0.1),
                "wp": _tensor((b.pool_proj, b.C), device, init, b.C ** -0.5),
                "bp": _tensor((b.pool_proj,), device, init, 0.1)}

    io = lambda n: 2 * (BATCH * b.C * b.H * b.H + BATCH * n * b.H * b.H + n * b.C)
    fl = lambda n: 2 * BATCH * b.H * b.H * b.C * n
    items = [
        Item(f"{b.name}.fused1x1", "inception", "forward", "_pointwise_fwd_kernel", make,
             lambda i: lambda: pointwise_forward(i["x"], i["w"], i["b"]),
             lambda i: lambda: F.relu(F.conv2d(i["x"], i["w"][:, :, None, None], i["b"])), b.C,
             ("pointwise", b.C, b.H, n_fused, False), flops=fl(n_fused), nbytes=io(n_fused)),
        Item(f"{b.name}.pool_proj", "inception", "forward", "_pointwise_fwd_kernel", make,
             lambda i: lambda: pointwise_forward(i["x"], i["wp"], i["bp"], pool3=True),
             lambda i: lambda: F.relu(F.conv2d(F.max_pool2d(i["x"], 3, 1, 1), i["wp"][:, :, None, None], i["bp"])),
             b.C, ("pointwise", b.C, b.H, b.pool_proj, True), flops=fl(b.pool_proj), nbytes=io(b.pool_proj)),
    ]
    # Their backward runs as 1x1 conv data-grad and weight-grad GEMMs.
    for suffix, n in (("fused1x1", n_fused), ("pool_proj", b.pool_proj)):
        items += conv_items(ConvShape(f"{b.name}.{suffix}", b.C, b.H, n, 1), passes=("dgrad", "wgrad"))
    return items


def lrn_items(s) -> list[Item]:
    shape = (BATCH, s.C, s.H, s.H)

    def make(device, init):
        return {"x": _tensor(shape, device, init), "dy": _tensor(shape, device, init)}

    def ref_backward(i):
        x = i["x"].detach().requires_grad_()
        y = F.local_response_norm(x, s.size, s.alpha, s.beta, s.k)
        return lambda: torch.autograd.grad(y, x, i["dy"], retain_graph=True)[0]

    nbytes = 2 * math.prod(shape)
    key = ("lrn", s.C, s.H, s.size, s.alpha, s.beta, s.k)
    # channels_last inputs: the launchers run the channels-innermost (group) kernels
    return [
        Item(s.name, "lrn", "forward", "_lrn_groups_fwd_kernel", make,
             lambda i: lambda: lrn_forward(i["x"], s.size, s.alpha, s.beta, s.k),
             lambda i: lambda: F.local_response_norm(i["x"], s.size, s.alpha, s.beta, s.k), s.size, key,
             nbytes=2 * nbytes, channels=s.C),
        Item(s.name, "lrn", "backward", "_lrn_groups_bwd_kernel", make,
             lambda i: lambda: lrn_backward(i["dy"], i["x"], s.size, s.alpha, s.beta, s.k), ref_backward,
             2 * s.size, key, nbytes=3 * nbytes, channels=s.C),
    ]


def add_relu_items(s) -> list[Item]:
    shape = (BATCH, s.C, s.H, s.H)

    def make(device, init):
        return {"x": _tensor(shape, device, init), "r": _tensor(shape, device, init),
                "dy": _tensor(shape, device, init)}

    nbytes = 2 * math.prod(shape)
    key = ("eltwise", s.C, s.H)
    return [
        Item(s.name, "add_relu", "forward", "_add_relu_fwd_kernel", make,
             lambda i: lambda: add_relu_forward(i["x"], i["r"]), lambda i: lambda: F.relu(i["x"] + i["r"]), 2, key,
             nbytes=3 * nbytes),
        Item(s.name, "add_relu", "backward", "_relu_grad_kernel", make,
             lambda i: lambda: relu_grad(i["dy"], i["x"]),
             lambda i: lambda: torch.ops.aten.threshold_backward(i["dy"], i["x"], 0), 1, key, nbytes=3 * nbytes),
    ]


def _pool_codes(idx: torch.Tensor, s: PoolShape) -> torch.Tensor:
    """The kernels' window codes (kh * KW + kw) of torch's max-pool indices (flat h * W + w
    in the input plane): backward items start from torch's winners without a forward launch."""
    oh = torch.arange(idx.shape[2], device=idx.device).view(1, 1, -1, 1)
    ow = torch.arange(idx.shape[3], device=idx.device).view(1, 1, 1, -1)
    kh = idx // s.H - (oh * s.stride - s.padding)
    kw = idx % s.H - (ow * s.stride - s.padding)
    return _cl((kh * s.kernel + kw).to(code_dtype((s.kernel, s.kernel))))


def _pool_inputs(s: PoolShape, device, init: bool, pooled_of=None) -> dict:
    """x, the pooled grad dy and the window codes (with torch's indices when `init`) of a
    max-pool of `pooled_of(x)` (x itself by default)."""
    oh = s.out_h()
    x = _tensor((BATCH, s.C, s.H, s.H), device, init)
    out = {"x": x, "dy": _tensor((BATCH, s.C, oh, oh), device, init)}
    if init:
        src = pooled_of(x) if pooled_of else x
        _, idx = F.max_pool2d(src, s.kernel, s.stride, s.padding, ceil_mode=s.ceil_mode, return_indices=True)
        out.update(idx=idx, code=_pool_codes(idx, s))
    else:
        out["code"] = torch.empty((BATCH, s.C, oh, oh), device=device, dtype=code_dtype((s.kernel, s.kernel)),
                                  memory_format=torch.channels_last)
    return out


def max_pool_items(s: PoolShape) -> list[Item]:
    pool = (s.kernel, s.stride, s.padding)
    oh = s.out_h()
    key = ("max_pool", s.C, s.H, *pool, s.ceil_mode)
    x_bytes, y_bytes = 2 * BATCH * s.C * s.H * s.H, 2 * BATCH * s.C * oh * oh
    return [
        Item(s.name, "max_pool", "forward", "_max_pool_fwd_kernel", lambda d, init: _pool_inputs(s, d, init),
             lambda i: lambda: max_pool2d_forward(i["x"], *pool, s.ceil_mode)[0],
             lambda i: lambda: F.max_pool2d(i["x"], *pool, ceil_mode=s.ceil_mode), 1, key,
             nbytes=x_bytes + 1.5 * y_bytes),
        # each input pixel sums the gradients of the windows that chose it: at most 4 at 3x3/2
        Item(s.name, "max_pool", "backward", "_max_pool_bwd_kernel", lambda d, init: _pool_inputs(s, d, init),
             lambda i: lambda: max_pool2d_backward(i["dy"], i["code"], i["x"].shape, *pool, fmt=torch.channels_last),
             lambda i: lambda: torch.ops.aten.max_pool2d_with_indices_backward(
                 i["dy"], i["x"], [s.kernel] * 2, [s.stride] * 2, [s.padding] * 2, [1, 1], s.ceil_mode, i["idx"]),
             -(-s.kernel // s.stride) ** 2, key, nbytes=x_bytes + 1.5 * y_bytes),
    ]


def lrn_pool_items(s: LRNPoolShape) -> list[Item]:
    """The fused forward; backward fused for LRN -> pool, and for pool -> LRN its two passes
    (the LRN backward at the pooled size, then the pool's gather) as their own items."""
    lrn = (s.size, s.alpha, s.beta, s.k)
    pool = (s.kernel, s.stride, s.padding)
    p = s.pool()
    oh = p.out_h()
    key = ("lrn_pool", s.order, s.C, s.H, *lrn, *pool, s.ceil_mode)
    block_c = triton.next_power_of_2(s.C)
    x_bytes, y_bytes = 2 * BATCH * s.C * s.H * s.H, 2 * BATCH * s.C * oh * oh
    torch_pool = lambda t: F.max_pool2d(t, *pool, ceil_mode=s.ceil_mode)
    torch_lrn = lambda t: F.local_response_norm(t, *lrn)
    if s.order == "pool_lrn":
        forward = Item(s.name, "lrn_pool", "forward", "_pool_lrn_fwd_kernel", lambda d, init: _pool_inputs(p, d, init),
                       lambda i: lambda: max_pool2d_lrn_forward(i["x"], *pool, s.ceil_mode, *lrn)[0],
                       lambda i: lambda: torch_lrn(torch_pool(i["x"])), s.size, key,
                       nbytes=x_bytes + 3.5 * y_bytes, block_c=block_c)
        return [forward, lrn_items(s.lrn())[1], max_pool_items(p)[1]]

    def ref_backward(i):
        x = i["x"].detach().requires_grad_()
        y = torch_pool(torch_lrn(x))
        return lambda: torch.autograd.grad(y, x, i["dy"], retain_graph=True)[0]

    make = lambda d, init: _pool_inputs(p, d, init, pooled_of=torch_lrn)
    return [
        Item(s.name, "lrn_pool", "forward", "_lrn_pool_fwd_kernel", make,
             lambda i: lambda: lrn_max_pool2d_forward(i["x"], *lrn, *pool, s.ceil_mode)[0],
             lambda i: lambda: torch_pool(torch_lrn(i["x"])), s.size, key, nbytes=x_bytes + 1.5 * y_bytes,
             block_c=block_c),
        Item(s.name, "lrn_pool", "backward", "_lrn_pool_bwd_kernel", make,
             lambda i: lambda: lrn_max_pool2d_backward(i["dy"], i["code"], i["x"], *lrn, *pool), ref_backward,
             2 * s.size + 4, key, nbytes=2 * x_bytes + 1.5 * y_bytes, block_c=block_c),
    ]


BN_EPS = 1e-5


def bn_items(s: BNShape) -> list[Item]:
    """Training BatchNorm with its epilogue, forward (statistics, then the normalize pass or,
    for the stem, the normalize + ReLU + pool pass) and backward (reduction, then dx; the
    stem's pool gather is a max-pool backward item of its own)."""
    shape = (BATCH, s.C, s.H, s.H)
    act = "relu" if s.relu else None

    def make(device, init):
        i = {"x": _tensor(shape, device, init), "dy": _tensor(shape, device, init),
             "w": _tensor((s.C,), device, init, 0.5), "b": _tensor((s.C,), device, init, 0.5),
             "r": _tensor(shape, device, init) if s.residual else None}
        if init:
            var, mean = torch.var_mean(i["x"].float(), dim=(0, 2, 3), unbiased=False)
            i.update(mean=mean, var=var)
        else:
            i.update(mean=torch.empty(s.C, device=device), var=torch.empty(s.C, device=device))
        return i

    def eager(i, x, w, b, r):
        y = F.batch_norm(x, None, None, w, b, True, 0.1, BN_EPS)
        if r is not None:
            y = y.add_(r)  # in place, as the torch backend's BatchNorm module
        return F.relu_(y) if s.relu else y

    def once_rounded(i, x, w, b, r):
        """The same ops in fp32, rounded once to x's dtype (see the module docstring)."""
        y = F.batch_norm(x.float(), None, None, w.float(), b.float(), True, 0.1, BN_EPS) + r.float()
        return F.relu(y) if s.relu else y

    def near_zero(i):
        """Elements whose ReLU decision is within fp32 rounding of zero."""
        z = F.batch_norm(i["x"].float(), None, None, i["w"].float(), i["b"].float(), True, 0.1, BN_EPS)
        z = z + i["r"].float() if s.residual else z
        return z.abs() <= 1e-5 * z.abs().max()

    def ref_backward(graph, cast=None):
        def closure(i):
            leaves = [t.detach().to(cast or t.dtype).requires_grad_() for t in (i["x"], i["w"], i["b"])]
            r = i["r"].detach().to(cast or i["r"].dtype) if s.residual else None
            y = graph(i, *leaves, r)
            dy = i["dy"].to(cast or i["dy"].dtype)
            if cast is not None:
                return lambda: torch.autograd.grad(y, leaves, dy, retain_graph=True)[0].to(i["x"].dtype)
            return lambda: torch.autograd.grad(y, leaves, dy, retain_graph=True)[0]
        return closure

    P = BATCH * s.H * s.H
    pool_key = None if s.pool is None else (s.pool.kernel, s.pool.stride, s.pool.padding, s.pool.ceil_mode)
    key = ("batchnorm", s.C, s.H, s.relu, s.residual, pool_key)
    x_bytes = 2 * math.prod(shape)
    stats = lambda i: batch_norm_stats(i["x"])
    if s.pool is not None:  # ResNet's stem: BatchNorm + ReLU + max-pool
        k = s.pool
        return [
            Item(s.name, "batchnorm", "forward", "_bn_relu_pool_fwd_kernel", make,
                 lambda i: lambda: batch_norm_relu_pool_forward(i["x"], *stats(i), i["w"], i["b"], BN_EPS, k.kernel,
                                                                k.stride, k.padding, k.ceil_mode)[0],
                 lambda i: lambda: F.max_pool2d(eager(i, i["x"], i["w"], i["b"], None), k.kernel, k.stride, k.padding,
                                                ceil_mode=k.ceil_mode), P, key, nbytes=2.5 * x_bytes),
            bn_items(BNShape(s.name, s.C, s.H, relu=True))[1],
            max_pool_items(k)[1],
        ]
    residual_bytes = x_bytes if s.residual else 0
    return [
        Item(s.name, "batchnorm", "forward", "_bn_fwd_kernel", make,
             lambda i: lambda: batch_norm_forward(i["x"], *stats(i), i["w"], i["b"], BN_EPS, residual=i["r"],
                                                  activation=act),
             lambda i: lambda: eager(i, i["x"], i["w"], i["b"], i["r"]), P, key,
             nbytes=3 * x_bytes + residual_bytes,
             check=(lambda i: lambda: once_rounded(i, i["x"], i["w"], i["b"], i["r"]).to(i["x"].dtype))
             if s.residual else None),
        Item(s.name, "batchnorm", "backward", "_bn_bwd_dx_kernel", make,
             lambda i: lambda: batch_norm_backward(i["dy"], i["x"], i["mean"], i["var"], i["w"], i["b"], BN_EPS,
                                                   residual=i["r"], activation=act)[0],
             ref_backward(eager), P, key, nbytes=5 * x_bytes + 2 * residual_bytes,
             check=ref_backward(once_rounded, torch.float32) if s.residual else None,
             ambiguous=near_zero if s.relu else None),
    ]


def all_items(layers=None) -> list[Item]:
    """Every sweep item of the three nets, distinct by (kernel, pass, split, sizes)."""
    builders = {"conv": conv_items, "inception": inception_items, "lrn": lrn_items, "add_relu": add_relu_items,
                "max_pool": max_pool_items, "lrn_pool": lrn_pool_items, "batchnorm": bn_items}
    items, seen = [], set()
    for layer in layers if layers is not None else all_layers():
        for item in builders[layer.kind](layer.shape):
            key = (item.kernel, item.pass_, item.split_k, item.shape_key)
            if key not in seen:
                seen.add(key)
                items.append(item)
    return items


def inception_blocks(layers=None) -> list[InceptionShape]:
    return [layer.shape for layer in (layers if layers is not None else all_layers()) if layer.kind == "inception"]


def branch_items(b: InceptionShape) -> list[Item]:
    """The bench's unfused baseline of block `b`: our pointwise kernel once per 1x1 branch
    (the 1x1, the 3x3 reduce and the 5x5 reduce), each a GEMM of x with that branch's filters
    (+ bias and ReLU, as the fused launch)."""
    items = []
    for suffix, n in (("branch1", b.c1), ("branch2.0", b.r3), ("branch3.0", b.r5)):
        def make(device, init, n=n):
            return {"x": _tensor((BATCH, b.C, b.H, b.H), device, init),
                    "w": _tensor((n, b.C), device, init, b.C ** -0.5), "b": _tensor((n,), device, init, 0.1)}

        items.append(Item(f"{b.name}.{suffix}", "inception", "forward", "_pointwise_fwd_kernel", make,
                          lambda i: lambda: pointwise_forward(i["x"], i["w"], i["b"]),
                          lambda i: lambda: F.relu(F.conv2d(i["x"], i["w"][:, :, None, None], i["b"])), b.C,
                          ("pointwise", b.C, b.H, n, False), flops=2 * BATCH * b.H * b.H * b.C * n,
                          nbytes=2 * (BATCH * b.C * b.H * b.H + BATCH * n * b.H * b.H + n * b.C)))
    return items


def table_items(layers=None) -> list[Item]:
    """The items whose winners the card's table holds: every sweep item, then every path
    item (the `paths` step's, benchmarks/gpu_paths.py)."""
    layers = layers if layers is not None else all_layers()
    return all_items(layers) + path_sweep_items(layers=layers)


def compile_items(layers=None) -> list[Item]:
    """What the compile step may launch: every table item (`table_items`: the sweep's and
    the paths step's), then every bench branch item."""
    layers = layers if layers is not None else all_layers()
    return table_items(layers) + [i for b in inception_blocks(layers) for i in branch_items(b)]


def configs_for(item: Item, shared_limit: int = 232448) -> list:
    """The GPU configs of the item's kernel that can launch: GEMM tiles whose bf16 stages
    fit shared memory (an H100's 227 KB unless told), LRN tiles of at most 16K elements
    (its launcher's rule for this BLOCK_C), LRN group tiles of at least one pixel. Spilling
    configs are dropped at compile time."""
    family = item.family
    configs = kconfigs._GPU[family]
    if family in ("conv_gemm", "conv_wgrad"):
        return [c for c in configs if kconfigs.gemm_shared_bytes(c, 2) <= shared_limit]
    if family == "lrn":
        return _prune_tiles(configs, {}, BLOCK_C=item.block_c)
    if family == "lrn_groups":
        return _prune_groups(configs, {}, C=item.channels, V=_group_width(item.channels))
    return configs


# --------------------------------------------------------------------------- launch recording
def _arg_spec(value):
    """How triton specializes one runtime argument: pointers by dtype and 16-byte alignment,
    integers by == 1 and divisibility by 16 (both triton 3.6 and 3.8+)."""
    if isinstance(value, torch.Tensor):
        return ("ptr", str(value.dtype), value.data_ptr() % 16 == 0)
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, int):
        return ("int", value == 1, value % 16 == 0)
    if isinstance(value, float):
        return ("fp",)
    return (type(value).__name__, value)


def record_launches(fn) -> list[tuple]:
    """Run `fn` with every jit kernel launch recorded instead of run: returns one compile
    signature per launch, (kernel name, runtime-argument specializations, constexprs and
    config as sorted items). Works with no GPU: nothing is compiled or launched."""
    # The class every kernel here is (JITFunction, or the interpreter's InterpretedFunction):
    # both launch through run(*args, grid, warmup, **kwargs).
    kind = type(kconfigs.TUNABLE["_conv_fwd_kernel"].fn)
    seen = []

    def record(self, *args, grid, warmup, **kwargs):
        seen.append((self.__name__, tuple(_arg_spec(a) for a in args), tuple(sorted(kwargs.items()))))

    with mock.patch.object(kind, "run", record):
        fn()
    return seen


# Seconds of one cold sm_90 compile and C launcher build, measured by the first GPU run
# (docs/perf-data/2026-11-27-h100, call 1: 179 launches by 14 workers, 1.8 s mean, 1.1 s
# median); the LRN-family kernels (LRN, LRN + max-pool) took up to 14.7 s, and two larger
# LRN + max-pool tiles (C=256, BLOCK_P 32 and 64) had not finished after 22 to 29 s when
# that run's compile step ended. They order the compile plan (longest first) and let
# gpu_plan.py estimate the step.
COMPILE_S, LRN_COMPILE_S = 1.7, 14.0


def compile_seconds(item: Item) -> float:
    return LRN_COMPILE_S if item.family == "lrn" else COMPILE_S


def _tile(item: Item, config) -> int:
    """Elements of the config's tile (an LRN's channel tile included): larger compiles longer."""
    return math.prod(v for k, v in config.kwargs.items() if k.startswith("BLOCK")) * (item.block_c or 1)


def compile_plan(items: list[Item], device, *, pairs=None, with_signatures: bool = False):
    """The (item index, config) launches that cover every distinct compile of `pairs` (every
    config of every item unless given), longest compiles first (compile_seconds, then the
    larger tile), and the number of distinct compiles (and, if asked, their signatures).
    Launches are recorded, not run."""
    if pairs is None:
        pairs = [(n, config) for n, item in enumerate(items) for config in configs_for(item)]
    todo, seen = [], set()
    last = None
    for n, config in pairs:
        item = items[n]
        if last is None or last[0] != n:
            last = (n, item.make(device, False))
        with kconfigs.forced_config(item.kernel, config):
            sigs = record_launches(item.triton(last[1]))
        new = [s for s in sigs if s not in seen]
        if new:
            seen.update(new)
            todo.append((n, config))
    todo.sort(key=lambda t: (-compile_seconds(items[t[0]]), -_tile(items[t[0]], t[1])))
    return (todo, len(seen), seen) if with_signatures else (todo, len(seen))


def launch_key(item: Item, device) -> dict:
    """The autotune key of the item's launch of its kernel (recorded: nothing runs)."""
    tuner = kconfigs.TUNABLE[item.kernel]
    with kconfigs.forced_config(item.kernel, configs_for(item)[0]):
        record_launches(item.triton(item.make(device, False)))
    return dict(tuner.last_key)


def _geometry(kernel: str, key: dict) -> tuple:
    """A launch's key without a weight-grad's split (the table keeps one split per geometry)."""
    return kernel, json.dumps({k: v for k, v in key.items() if k != "SPLIT_ROWS"}, sort_keys=True)


def table_coverage(items: list[Item], table: tuned.Table, device) -> tuple[list[tuple], list[int]]:
    """(served, lacking) of the bf16 items against a tuned table: (index, table config) of
    each item whose launch the table serves, and the indices of the items it lacks (no entry
    for the key; for a weight-grad, none for its geometry at any split count: the other split
    counts of a swept geometry are neither served nor lacking)."""
    dtype = str(DTYPE).removeprefix("torch.")
    swept = {_geometry(e["kernel"], e["key"]) for e in table.entries if e["dtype"] == dtype}
    served, lacking = [], []
    for n, item in enumerate(items):
        key = launch_key(item, device)
        config = table.config(item.kernel, key, dtype)
        if config is not None:
            served.append((n, config))
        elif _geometry(item.kernel, key) not in swept:
            lacking.append(n)
    return served, lacking


def base_table(device, path: Path | None = None) -> tuned.Table | None:
    """The table the sweep completes: `path`, else the committed table of this card and
    triton version (None where there is none)."""
    if path is None:
        if torch.device(device).type != "cuda":
            return None
        path = tuned.table_path(torch.cuda.get_device_name(device), triton.__version__)
    return tuned.load_table(path) if Path(path).exists() else None


def known_spills(path: Path) -> set[str]:
    """Ids of the items every config of which spilled in an earlier sweep's rows (sweep.csv,
    or .csv.gz): on the same card and triton, sweeping them again can only say so again."""
    opener = gzip.open if str(path).endswith(".gz") else open
    statuses: dict[str, set] = {}
    with opener(path, "rt", newline="") as f:
        for row in csv.DictReader(f):
            statuses.setdefault(row["item"], set()).add(row["status"])
    return {item for item, seen in statuses.items() if seen == {"spills"}}


def needed_launches(items: list[Item], table: tuned.Table | None, device, n_sweep: int | None = None,
                    skip=frozenset()) -> list[tuple]:
    """(item index, config) pairs the later steps launch: with no table, every config of
    every item; with one, every config of the first `n_sweep` items (the sweep's) it lacks
    but for those in `skip` (ids: not swept; the nets and the bench launch them under the
    first config, CONVBENCH_AUTOTUNE=first), its own config for each item it serves (the
    nets' and the bench's launches), then every config of the items past `n_sweep` (the
    bench's per-branch launches)."""
    n_sweep = len(items) if n_sweep is None else n_sweep
    if table is None:
        return [(n, c) for n, item in enumerate(items) for c in configs_for(item)]
    served, lacking = table_coverage(items[:n_sweep], table, device)
    pairs = [(n, c) for n in lacking for c in configs_for(items[n])[:1 if items[n].id in skip else None]] + served
    return pairs + [(n, c) for n in range(n_sweep, len(items)) for c in configs_for(items[n])]


# --------------------------------------------------------------------------- measuring
def agreement_bound(ref: torch.Tensor, reduction: int) -> tuple[float, float]:
    """(atol, rtol) of |ours - cuDNN|: twice one result's bound (see the module docstring).
    The inputs are unit-scale up to a constant, so the result's RMS over sqrt(K) is the
    scale of one product: the fp32 accumulation term is sqrt(K) of those, the final rounding
    term one unit of the result's own scale."""
    u = ROUNDOFF[ref.dtype]
    k = max(int(reduction), 1)
    rms = ref.float().pow(2).mean().sqrt().item() or 1.0
    atol = u * rms + 16 * 2.0**-24 * math.sqrt(k) * math.log2(k + 1) * rms / math.sqrt(k)
    return 2 * atol, 2 * (2 * u)


def check(out: torch.Tensor, ref: torch.Tensor, reduction: int,
          ambiguous: torch.Tensor | None = None) -> tuple[bool, float, float]:
    """(within bound, max |err|, max |err| / bound) of `out` against cuDNN's `ref`, leaving
    out the elements `ambiguous` marks (see the module docstring)."""
    atol, rtol = agreement_bound(ref, reduction)
    a, e = out.float(), ref.float()
    if a.shape != e.shape or not torch.equal(torch.isnan(a), torch.isnan(e)):
        return False, float("nan"), float("inf")
    a, e = torch.nan_to_num(a), torch.nan_to_num(e)
    if ambiguous is not None:
        a, e = a[~ambiguous], e[~ambiguous]
    err = (a - e).abs()
    ratio = (err / (atol + rtol * e.abs())).max().item()
    return ratio <= 1.0, err.max().item(), ratio


def do_bench(fn) -> float:
    from triton.testing import do_bench as bench

    return float(bench(fn, warmup=WARMUP_MS, rep=REP_MS, return_mode="median"))


class Rows:
    """CSV rows appended and flushed one by one, so an interrupted step keeps them all."""

    def __init__(self, path: Path, fields: list[str]):
        self.path, self.fields = path, fields
        new = not path.exists()
        self.file = path.open("a", newline="")
        self.writer = csv.DictWriter(self.file, fieldnames=fields, extrasaction="ignore")
        if new:
            self.writer.writeheader()

    def add(self, **row):
        self.writer.writerow(row)
        self.file.flush()

    def close(self):
        self.file.close()


SWEEP_FIELDS = ["item", "layer", "kind", "pass", "kernel", "family", "split_k", "config", "num_warps", "num_stages",
                "status", "ms", "cudnn_ms", "max_abs_err", "err_over_bound", "n_regs", "n_spills", "shared_bytes",
                "key", "dtype", "error"]


def _compiled_meta(tuner) -> dict:
    k = tuner.last_kernel
    if k is None:
        return {}
    meta = getattr(k, "metadata", None)
    return {"n_regs": getattr(k, "n_regs", None), "n_spills": getattr(k, "n_spills", None),
            "shared_bytes": getattr(meta, "shared", None)}


def sweep_item(item: Item, device, rows: Rows, *, configs=None, time_it: bool = True) -> dict | None:
    """Check and time every config of `item` (or `configs`) beside cuDNN; returns its table
    entry (None when no config passed). `time_it=False` checks only (CPU smoke runs)."""
    tuner = kconfigs.TUNABLE[item.kernel]
    inputs = item.make(device, True)
    ref = (item.check or item.reference)(inputs)()
    ambiguous = item.ambiguous(inputs) if item.ambiguous is not None else None
    dtype = str(ref.dtype).removeprefix("torch.")
    cudnn_ms = do_bench(item.reference(inputs)) if time_it else None
    timed = []
    for config in configs if configs is not None else configs_for(item):
        base = {"item": item.id, "layer": item.layer, "kind": item.kind, "pass": item.pass_, "kernel": item.kernel,
                "family": item.family, "split_k": item.split_k, "config": json.dumps(config.kwargs),
                "num_warps": config.num_warps, "num_stages": config.num_stages, "cudnn_ms": cudnn_ms,
                "dtype": dtype}
        try:
            with kconfigs.forced_config(item.kernel, config):
                fn = item.triton(inputs)
                out = fn()
                meta = _compiled_meta(tuner)
                base.update(meta, key=json.dumps(tuner.last_key))
                key = dict(tuner.last_key)
                if meta.get("n_spills"):
                    rows.add(**base, status="spills")
                    continue
                ok, err, ratio = check(out, ref, item.reduction, ambiguous)
                base.update(max_abs_err=err, err_over_bound=ratio)
                if not ok:
                    rows.add(**base, status="wrong")
                    continue
                ms = do_bench(fn) if time_it else None
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # a config that cannot compile or launch is recorded, not fatal
            rows.add(**base, status="error", error=f"{type(exc).__name__}: {exc}"[:300])
            continue
        rows.add(**base, status="ok", ms=ms)
        timed.append((ms if ms is not None else math.inf, config, key))
    if not timed:
        return None
    timed.sort(key=lambda t: t[0])
    ms, config, key = timed[0]
    return {"kernel": item.kernel, "family": item.family, "layer": item.layer, "pass": item.pass_,
            "dtype": dtype, "key": key, "config": tuned.config_to_json(config),
            "split_k": item.split_k, "ms": ms if time_it else None,
            "runner_up_ms": timed[1][0] if time_it and len(timed) > 1 else None, "cudnn_ms": cudnn_ms,
            **({"path": item.path, "dispatch_key": item.dispatch_key} if item.path != "generic" else {})}


def best_entries(entries: list[dict]) -> list[dict]:
    """One entry per (kernel, dtype, key); for weight-grad, the fastest split of each geometry
    (its split count becomes the table's, and only that split's key is looked up), with the
    runner-up taken over every (config, split) pair timed for that geometry."""
    groups: dict[tuple, list[dict]] = {}
    for e in entries:
        key = dict(e["key"])
        if e["kernel"] == "_conv_wgrad_kernel":
            key.pop("SPLIT_ROWS", None)
        groups.setdefault((e["kernel"], e["dtype"], json.dumps(key, sort_keys=True)), []).append(e)
    best = []
    for group in groups.values():
        group = sorted(group, key=lambda e: e["ms"])
        others = [e["ms"] for e in group[1:]] + [e["runner_up_ms"] for e in group[:1] if e["runner_up_ms"]]
        best.append({**group[0], "runner_up_ms": min(others) if others else None})
    return best


# --------------------------------------------------------------------------- steps
def _device():
    if not torch.cuda.is_available():
        raise SystemExit("benchmarks.sweep: no CUDA device visible to torch; nothing was measured")
    return torch.device("cuda")


COMPILE_FIELDS = ["launch", "worker", "item", "config", "status", "s", "error"]


def write_compile_plan(out: Path, items: list[Item], device, pairs=None) -> tuple[int, int]:
    """Plan the compiles of `pairs` (compile_plan) into OUT/compile-plan.json, with an empty
    claims folder; returns (launches, distinct compiles)."""
    todo, distinct = compile_plan(items, device, pairs=pairs)
    launches = [{"item": n, "id": items[n].id, "config": tuned.config_to_json(config)} for n, config in todo]
    (out / "compile-plan.json").write_text(json.dumps({"distinct": distinct, "launches": launches}, indent=0))
    claims = out / "claims"
    claims.mkdir(exist_ok=True)
    for stale in claims.iterdir():
        stale.unlink()
    return len(todo), distinct


def compile_worker(out: Path, index: int, *, items: list[Item], device) -> int:
    """Worker `index`: claim the plan's next unclaimed launch (a file created with O_EXCL in
    OUT/claims: exactly one worker gets each), launch it once, one CSV row each, until every
    launch is claimed; so no worker idles while launches are left. Returns launches run."""
    plan = json.loads((out / "compile-plan.json").read_text())
    rows = Rows(out / f"compile-{index}.csv", COMPILE_FIELDS)
    done = 0
    try:
        for k, launch in enumerate(plan["launches"]):
            try:
                os.close(os.open(out / "claims" / str(k), os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                continue
            item = items[launch["item"]]
            if item.id != launch["id"]:
                raise RuntimeError(f"compile plan launch {k} names {launch['id']}, but item {launch['item']} is "
                                   f"{item.id}: the plan was made from another item list")
            config = tuned.config_from_json(launch["config"])
            base = {"launch": k, "worker": index, "item": item.id, "config": str(config)}
            start = time.perf_counter()
            try:
                with kconfigs.forced_config(item.kernel, config):
                    item.triton(item.make(device, False))()
                if device.type == "cuda":
                    torch.cuda.synchronize()
                rows.add(**base, status="ok", s=time.perf_counter() - start)
            except KeyboardInterrupt:
                raise
            except Exception as exc:
                rows.add(**base, status="error", s=time.perf_counter() - start,
                         error=f"{type(exc).__name__}: {exc}"[:300])
            done += 1
    except KeyboardInterrupt:
        pass
    finally:
        rows.close()
    return done


def step_compile(out: Path, workers: int, worker: int | None = None, *, full: bool = False,
                 base: Path | None = None, skip=frozenset()) -> int:
    """Parent: plan the compiles the later steps need (`needed_launches`; every config of
    every item with `full`), start `workers` worker processes and wait (SIGINT passes to
    them). Worker (`worker` i): `compile_worker`."""
    device = _device()
    layers = all_layers()
    items = compile_items(layers)
    if worker is not None:
        compile_worker(out, worker, items=items, device=device)
        return 0
    table = None if full else base_table(device, base)
    n_sweep = len(table_items(layers))
    launches, distinct = write_compile_plan(out, items, device, needed_launches(items, table, device, n_sweep, skip))
    print(f"compile: {distinct} distinct compiles in {launches} launches over {workers} workers"
          + (f" (what the later steps launch with the table {table.source})" if table else " (every config)"),
          flush=True)
    procs = [subprocess.Popen([sys.executable, "-m", "benchmarks.sweep", "compile", "--out", str(out),
                               "--worker", str(i)]) for i in range(workers)]
    try:
        for p in procs:
            p.wait()
    except KeyboardInterrupt:
        for p in procs:
            p.send_signal(signal.SIGINT)
        for p in procs:
            p.wait()
    return 0


def _entry_index(e: dict) -> tuple:
    return e["kernel"], e["dtype"], json.dumps(e["key"], sort_keys=True)


def path_sweep_items(passes=None, layers=None) -> list[Item]:
    """The path items (benchmarks/gpu_paths.py: every path beside the generic kernel) of
    `passes` (default: each path's own), for `step_sweep(..., dispatch=True)`: their winners
    beside the base table's generic ones make its dispatch records."""
    from . import gpu_paths

    items = gpu_paths.path_items(layers if layers is not None else all_layers())
    return [i for i in items if passes is None or i.pass_ in passes]


def step_sweep(out: Path, table_out: Path, *, items=None, device=None, base: tuned.Table | None = None,
               full: bool = False, skip=frozenset(), dispatch: bool = False) -> int:
    """Every item the base table lacks but for those in `skip` (ids; every item with `full`
    or with no base table) in turn (a split-count follow-up times only its predecessor's
    winner); the table, the base table's entries and the new winners (a fresh table with
    `full`), is written however the loop ends. `dispatch`: the table also gets the path
    records (`gpu_paths.dispatch_records`) of every layer pass with winners on both paths,
    among the new entries and the base table's (whose own records are kept otherwise)."""
    device = device or _device()
    items = items if items is not None else all_items()
    if full:
        base = None
    total = len(items)
    if base is not None:
        _, lacking = table_coverage(items, base, device)
        known = [items[n].id for n in lacking if items[n].id in skip]
        items = [items[n] for n in lacking if items[n].id not in skip]
        print(f"sweep: {total - len(items)} of {total} items skipped: {total - len(lacking)} the table "
              f"{base.source} has, {len(known)} every config of which spilled before ({', '.join(known) or 'none'}); "
              f"{len(items)} to sweep: {', '.join(i.id for i in items) or 'none'}", flush=True)
    rows = Rows(out / "sweep.csv", SWEEP_FIELDS)
    entries, winners = [], {}
    done = 0
    try:
        for item in items:
            winner = winners.get((item.layer, item.pass_)) if item.follows else None
            entry = sweep_item(item, device, rows, configs=None if winner is None else [winner])
            done += 1
            if entry is not None:
                entries.append(entry)
                winners.setdefault((item.layer, item.pass_), tuned.config_from_json(entry["config"]))
            print(f"[{done}/{len(items)}] {item.id}: "
                  + (f"{entry['ms']:.4f} ms vs cuDNN {entry['cudnn_ms']:.4f}" if entry else "no config passed"),
                  flush=True)
    except KeyboardInterrupt:
        print(f"sweep: interrupted after {done}/{len(items)} items; keeping what was measured", flush=True)
    finally:
        rows.close()
        card = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
        path = tuned.table_path(card, triton.__version__, table_out)
        new = best_entries(entries)
        replaced = {_entry_index(e) for e in new}
        kept = [e for e in base.entries if _entry_index(e) not in replaced] if base is not None else []
        meta = {"base_table": base.source, "items_skipped": total - len(items)} if base is not None else {}
        records = list(base.dispatch) if base is not None else []
        if dispatch:
            from . import gpu_paths

            fresh = gpu_paths.dispatch_records(kept + new)
            slots = {(r["site"], r["dtype"], json.dumps(r["key"], sort_keys=True)) for r in fresh}
            records = [r for r in records if (r["site"], r["dtype"], json.dumps(r["key"], sort_keys=True))
                       not in slots] + fresh
        tuned.write_table(path, card, triton.__version__, kept + new, dispatch=records, torch=torch.__version__,
                          measured=time.strftime("%Y-%m-%d"), items_done=done + total - len(items),
                          items_total=total, **meta)
        print(f"sweep: table {path} ({len(entries)} items measured now, {len(kept)} entries kept from the base "
              f"table)", flush=True)
    return 0


# --------------------------------------------------------------------------- bench
BENCH_FIELDS = ["what", "item", "variant", "kernel", "config", "table", "launches", "nbytes", "ms", "tb_per_s",
                "pct_of_copy", "status", "err_over_bound", "error"]
MEMORY_KINDS = ("lrn", "lrn_pool", "max_pool", "batchnorm", "add_relu")
# bf16 elements of the copy: 512 MiB read and 512 MiB written, ten times an H100's 50 MB L2
COPY_NUMEL = 2**28


def _served(item: Item, fn) -> tuple:
    """Run `fn` (the item's launch, no forced config: as the nets launch it) once: (output,
    config it ran, 'hit' / 'miss' / 'none': whether a tuned table served it)."""
    kconfigs.reset_table_counts()
    out = fn()
    hit = kconfigs.TABLE_HITS.get(item.kernel, 0)
    miss = sum(v for k, v in kconfigs.TABLE_MISSES.items() if k[0] == item.kernel)
    config = kconfigs.TUNABLE[item.kernel].best_config
    return out, config, "miss" if miss else "hit" if hit else "none"


def _config_text(config) -> str:
    return f"{json.dumps(config.kwargs)} w{config.num_warps} s{config.num_stages}" if config is not None else ""


def _bandwidth(nbytes: float, ms: float | None, copy_tbps: float | None) -> dict:
    if not ms:
        return {}
    tbps = nbytes / (ms * 1e-3) / 1e12
    return {"tb_per_s": tbps, "pct_of_copy": 100 * tbps / copy_tbps if copy_tbps else None}


def bench_copy(device, rows: Rows, numel: int = COPY_NUMEL) -> float:
    """The device's copy bandwidth (TB/s): do_bench of a bf16 copy, bytes read + written."""
    dtype = DTYPE if torch.device(device).type == "cuda" else torch.float32
    src = torch.randn(numel, device=device, dtype=dtype)
    dst = torch.empty_like(src)
    nbytes = 2 * src.numel() * src.element_size()
    ms = do_bench(lambda: dst.copy_(src))
    bw = _bandwidth(nbytes, ms, None)
    rows.add(what="copy", item=f"copy_ {numel} {str(dtype).removeprefix('torch.')}", variant="torch", launches=1,
             nbytes=nbytes, ms=ms, pct_of_copy=100.0, tb_per_s=bw["tb_per_s"], status="ok")
    return bw["tb_per_s"]


def bench_memory_item(item: Item, device, rows: Rows, copy_tbps: float | None) -> None:
    """One memory-bound item under the config the table gives it (the nets' launch), checked
    against its reference, then it and its ATen op timed: achieved bandwidth of item.nbytes."""
    inputs = item.make(device, True)
    base = {"what": "memory", "item": item.id, "kernel": item.kernel, "nbytes": item.nbytes, "launches": 1}
    try:
        fn = item.triton(inputs)
        out, config, table = _served(item, fn)
        ref = (item.check or item.reference)(inputs)()
        ambiguous = item.ambiguous(inputs) if item.ambiguous is not None else None
        ok, _, ratio = check(out, ref, item.reduction, ambiguous)
        base.update(config=_config_text(config), table=table, err_over_bound=ratio)
        if not ok:
            rows.add(**base, variant="triton", status="wrong")
        else:
            ms = do_bench(fn)
            rows.add(**base, variant="triton", ms=ms, status="ok", **_bandwidth(item.nbytes, ms, copy_tbps))
        ms = do_bench(item.reference(inputs))
        rows.add(**{**base, "config": None, "table": None, "err_over_bound": None}, variant="aten", ms=ms,
                 status="ok", **_bandwidth(item.nbytes, ms, copy_tbps))
    except KeyboardInterrupt:
        raise
    except Exception as exc:
        rows.add(**base, variant="triton", status="error", error=f"{type(exc).__name__}: {exc}"[:300])


def bench_inception(b: InceptionShape, device, rows: Rows, config_rows: Rows) -> None:
    """Block `b`'s three 1x1 GEMMs (1x1, 3x3 reduce, 5x5 reduce; bias and ReLU each) four
    ways: our fused launch under the table's config; our kernel once per branch, each at its
    best config (every config checked and timed, rows in `config_rows`); cuDNN once per
    branch; one cuDNN conv over the concatenated filters. Separate launches are timed one by
    one (L2 flushed before each) and summed."""
    fused = inception_items(b)[0]
    inputs = fused.make(device, True)
    base = {"what": "inception", "item": b.name, "kernel": fused.kernel, "nbytes": fused.nbytes}
    try:
        fn = fused.triton(inputs)
        out, config, table = _served(fused, fn)
        ok, _, ratio = check(out, fused.reference(inputs)(), fused.reduction)
        row = {**base, "variant": "fused_triton", "launches": 1, "config": _config_text(config), "table": table,
               "err_over_bound": ratio}
        if ok:
            rows.add(**row, status="ok", ms=do_bench(fn))
        else:
            rows.add(**row, status="wrong")
        rows.add(**base, variant="concat_cudnn", launches=1, status="ok", ms=do_bench(fused.reference(inputs)))
        entries = [sweep_item(item, device, config_rows) for item in branch_items(b)]
        if any(e is None for e in entries):
            rows.add(**base, variant="separate_triton", launches=3, status="no config passed")
        else:
            rows.add(**base, variant="separate_triton", launches=3, status="ok", ms=sum(e["ms"] for e in entries),
                     config="; ".join(_config_text(tuned.config_from_json(e["config"])) for e in entries))
        cudnn = [e["cudnn_ms"] for e in entries if e is not None]
        if len(cudnn) == 3:
            rows.add(**base, variant="separate_cudnn", launches=3, status="ok", ms=sum(cudnn))
    except KeyboardInterrupt:
        raise
    except Exception as exc:
        rows.add(**base, variant="error", status="error", error=f"{type(exc).__name__}: {exc}"[:300])


def step_bench(out: Path, *, items=None, blocks=None, device=None, copy_numel: int = COPY_NUMEL) -> int:
    """The copy bandwidth, then every memory-bound item, then every Inception block; rows in
    OUT/bench.csv as measured (OUT/bench-configs.csv: the per-branch config rows)."""
    device = device or _device()
    layers = all_layers() if items is None or blocks is None else None
    items = items if items is not None else all_items(layers)
    blocks = blocks if blocks is not None else inception_blocks(layers)
    rows = Rows(out / "bench.csv", BENCH_FIELDS)
    config_rows = Rows(out / "bench-configs.csv", SWEEP_FIELDS)
    memory = [i for i in items if i.kind in MEMORY_KINDS]
    try:
        copy_tbps = bench_copy(device, rows, copy_numel)
        print(f"bench: copy {copy_tbps:.3f} TB/s", flush=True)
        for n, item in enumerate(memory, 1):
            bench_memory_item(item, device, rows, copy_tbps)
            print(f"bench: [{n}/{len(memory)}] {item.id}", flush=True)
        for n, b in enumerate(blocks, 1):
            bench_inception(b, device, rows, config_rows)
            print(f"bench: [{n}/{len(blocks)}] {b.name}", flush=True)
    except KeyboardInterrupt:
        print("bench: interrupted; keeping what was measured", flush=True)
    finally:
        rows.close()
        config_rows.close()
    return 0


def train_images_per_s(arch: str, backend: str, device, steps: int = 5) -> tuple[float, float]:
    """(images/s, first-step seconds) of the paper recipe's training step at BATCH, bf16
    channels_last, synthetic data on the device; CUDA events over `steps` steps after two.
    backend `<b>+graph`: backend b's step captured once as a CUDA graph (benchmarks.graphs,
    after the two) and replayed."""
    import nets
    from nets import recipe

    from . import graphs

    base, graphed = backend.removesuffix("+graph"), backend.endswith("+graph")
    model = nets.build(arch, "torch" if base == "compile" else base)
    model = model.to(device=device, dtype=DTYPE, memory_format=torch.channels_last).train()
    net = torch.compile(model, dynamic=False) if base == "compile" else model
    x = _cl(torch.randn(BATCH, 3, 224, 224, device=device, dtype=DTYPE))
    y = torch.randint(0, 1000, (BATCH,), device=device)
    opt = recipe.optimizer(model, arch, batch_size=BATCH)
    start = time.perf_counter()
    step = lambda: recipe.train_step(net, opt, x, y)
    step()
    torch.cuda.synchronize()
    first = time.perf_counter() - start
    step()
    if graphed:
        step = graphs.capture(step, device, warmup=1)[0]
        step()
    begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    begin.record()
    for _ in range(steps):
        step()
    end.record()
    torch.cuda.synchronize()
    return BATCH * steps / (begin.elapsed_time(end) * 1e-3), first


def step_nets(out: Path, archs, backends) -> int:
    """Images/s of each (net, backend), and how many kernel launches of its whole run (the
    first step, one more and the timed ones) a tuned table served and how many it missed
    (those run the first config under CONVBENCH_AUTOTUNE=first); each missed key's count goes
    to OUT/nets-misses.csv."""
    device = _device()
    rows = Rows(out / "nets.csv", ["arch", "backend", "images_per_s", "first_step_s", "table_hits", "table_misses",
                                   "status", "error"])
    misses = Rows(out / "nets-misses.csv", ["arch", "backend", "kernel", "dtype", "key", "launches"])
    try:
        for backend in backends:
            for arch in archs:
                kconfigs.reset_table_counts()
                counts = {}
                try:
                    ips, first = train_images_per_s(arch, backend, device)
                    counts = {"table_hits": sum(kconfigs.TABLE_HITS.values()),
                              "table_misses": sum(kconfigs.TABLE_MISSES.values())}
                    rows.add(arch=arch, backend=backend, images_per_s=round(ips, 1), first_step_s=round(first, 2),
                             status="ok", **counts)
                    print(f"nets: {arch} {backend} {ips:.0f} img/s (first step {first:.1f} s; table hits "
                          f"{counts['table_hits']}, misses {counts['table_misses']})", flush=True)
                except KeyboardInterrupt:
                    raise
                except Exception as exc:
                    rows.add(arch=arch, backend=backend, status="error", error=f"{type(exc).__name__}: {exc}"[:300])
                finally:
                    for (kernel, dtype, key), n in sorted(kconfigs.TABLE_MISSES.items(), key=str):
                        misses.add(arch=arch, backend=backend, kernel=kernel, dtype=dtype,
                                   key=json.dumps(dict(key)), launches=n)
                    torch.cuda.empty_cache()
    except KeyboardInterrupt:
        print("nets: interrupted; keeping what was measured", flush=True)
    finally:
        rows.close()
        misses.close()
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.sweep", description=__doc__.split("\n\n")[0])
    parser.add_argument("step", choices=("compile", "sweep", "paths", "bench", "nets"))
    parser.add_argument("--out", type=Path, required=True, help="folder for this step's rows")
    parser.add_argument("--workers", type=int, default=max(1, min(14, (os.cpu_count() or 2) - 2)))
    parser.add_argument("--worker", type=int, help="run as compile worker i (started by the compile step)")
    parser.add_argument("--full", action="store_true",
                        help="compile and sweep every item, not only what the base table lacks")
    parser.add_argument("--base-table", type=Path,
                        help="the table the sweep completes (default: the committed table of this card and triton)")
    parser.add_argument("--known-rows", type=Path,
                        help="an earlier sweep.csv(.gz) of this card and triton: items every config of which "
                             "spilled there are not swept again (the nets launch their first config)")
    parser.add_argument("--table-out", type=Path, help="folder for the tuned table (default: OUT/tuned)")
    parser.add_argument("--passes", default="",
                        help="paths: the passes whose path items are timed, e.g. forward,dgrad (default: each "
                             "path's own)")
    parser.add_argument("--archs", default=",".join(NET_ARCHS))
    parser.add_argument("--backends", default=",".join(NET_BACKENDS))
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    skip = known_spills(args.known_rows) if args.known_rows and not args.full else frozenset()
    if args.step == "compile":
        return step_compile(args.out, args.workers, args.worker, full=args.full, base=args.base_table, skip=skip)
    if args.step == "sweep":
        device = _device()
        return step_sweep(args.out, args.table_out or args.out / "tuned", device=device, full=args.full,
                          base=None if args.full else base_table(device, args.base_table), skip=skip)
    if args.step == "paths":  # the path items beside the base table's generic winners
        device = _device()
        return step_sweep(args.out, args.table_out or args.out / "tuned", device=device,
                          items=path_sweep_items(tuple(args.passes.split(",")) if args.passes else None),
                          base=base_table(device, args.base_table), dispatch=True)
    if args.step == "bench":
        return step_bench(args.out)
    return step_nets(args.out, args.archs.split(","), args.backends.split(","))


if __name__ == "__main__":
    sys.exit(main())
