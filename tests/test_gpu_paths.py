"""Code that only a GPU would run, exercised on the interpreter.

- `column_sum` with several splits (the interpreter's sizes and a GPU's block sizes and
  split count);
- every autotune config of every family in kernels/configs.py, forced one at a time on the
  kernels that use it (conv, Inception, LRN, add+ReLU, max-pool, LRN+max-pool, BatchNorm),
  on tiny shapes that still leave several tiles and masked edges, against float64 torch
  (the interpreter ignores num_warps / num_stages; block sizes, GROUP_M and masks are what it checks);
- the configs a GPU prunes (shared memory, LRN tile size), and CONVBENCH_AUTOTUNE=first;
- the `tl.dot` precision each launcher passes under torch's TF32 flags (the interpreter
  ignores `input_precision`, so the value passed is what is checked).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import triton

import kernels
import kernels._reduce
import kernels._utils
import kernels.configs
import kernels.inception
import kernels.lrn
from kernels import race
from kernels._reduce import column_sum
from kernels.configs import configs, gemm_shared_bytes, prune_by_shared_memory
from kernels.conv1x1 import conv1x1_weight_grad
from kernels.conv_tma import conv_tma_weight_grad
from kernels.inception import pointwise_forward, pool3_backward_, pool3_gather
from tests.helpers import LaunchRecorder, assert_close, triton_kernels
from tests.test_batchnorm import _pair as _bn_pair
from tests.test_batchnorm import check_bn_relu_pool, check_step
from tests.test_pool import check_lrn_pool, check_pool


def _data(*shapes, seed=0, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(*s, generator=gen).to(dtype).double() for s in shapes]


# --------------------------------------------------------------------------- column_sum
@pytest.mark.parametrize("rows, cols, dtype, transpose", [
    (1000, 5, torch.float32, False),
    (777, 19, torch.float16, True),   # splits x column tiles, a strided (transposed) view
])
def test_column_sum_several_splits_interpreter_sizes(rows, cols, dtype, transpose, device):
    (t64,) = _data((cols, rows) if transpose else (rows, cols), dtype=dtype)
    t = t64.to(device, dtype)
    if transpose:
        t, t64 = t.t(), t64.t()
    with LaunchRecorder() as rec:
        got = column_sum(t)
    splits = rec.launches[0].grid[1]
    assert splits > 1 and rec.names()["_colsum_kernel"] == 2, f"expected a split pass then a final sum: {rec.launches}"
    assert_close(got, t64.sum(0), reduction=rows, name="column_sum")


@pytest.mark.parametrize("rows, cols", [(3001, 130), (5000, 3)])
def test_column_sum_with_gpu_block_sizes_and_split_count(rows, cols, monkeypatch, device):
    """The GPU's branch of the size choice (128-column blocks, 32-row blocks, 4 x 132 SMs
    of programs) running on the interpreter."""
    monkeypatch.setattr(kernels._reduce, "interpreting", lambda: False)
    monkeypatch.setattr(kernels._reduce, "sm_count", lambda dev: 132)
    (t64,) = _data((rows, cols), seed=1)
    with LaunchRecorder() as rec:
        got = column_sum(t64.to(device, torch.float32))
    first = rec.launches[0]
    grid_c = triton.cdiv(cols, min(triton.next_power_of_2(cols), 128))
    # splits = min(rows / (8 x 32-row blocks), 4 x 132 programs / column tiles), by hand:
    assert first.grid == (grid_c, min(triton.cdiv(rows, 256), triton.cdiv(528, grid_c)))
    assert first.kwargs["BLOCK_R"] == 32 and first.kwargs["BLOCK_C"] == min(triton.next_power_of_2(cols), 128)
    assert_close(got, t64.sum(0), reduction=rows, name="column_sum (GPU sizes)")


# --------------------------------------------------------------------------- every config
def _conv_check(x_shape, w_shape, stride, padding, groups, device, seed):
    """conv2d + bias + ReLU forward and every gradient against float64 torch."""
    N = x_shape[0]
    K, CG, R, S = w_shape
    x64, w64, b64 = _data(x_shape, w_shape, (K,), seed=seed)
    leaves = [t.to(device, torch.float32).requires_grad_() for t in (x64, w64, b64)]
    leaves64 = [t.clone().requires_grad_() for t in (x64, w64, b64)]
    y = kernels.conv2d(*leaves, stride, padding, 1, groups, activation="relu")
    ref = F.relu(F.conv2d(*leaves64, stride, padding, 1, groups))
    (gy64,) = _data(ref.shape, seed=seed + 1)
    y.backward(gy64.to(device, torch.float32))
    ref.backward(gy64)
    P, Q = ref.shape[2:]
    assert_close(y, ref, reduction=CG * R * S + 2, name="conv forward")
    assert_close(leaves[0].grad, leaves64[0].grad, reduction=K // groups * R * S, name="conv grad x")
    assert_close(leaves[1].grad, leaves64[1].grad, reduction=N * P * Q, name="conv grad weight")
    assert_close(leaves[2].grad, leaves64[2].grad, reduction=N * P * Q, name="conv grad bias")


def run_conv(device):
    # C=3 stem: the flattened-K loop, 4 stride phases in data-grad, M = 50 output pixels.
    _conv_check((2, 3, 9, 9), (20, 3, 3, 3), 2, 1, 1, device, seed=2)
    # 17 channels per group: the tap-by-tap loop with a masked channel block; 2 groups,
    # 40 filters per group (2 column tiles at BLOCK_N 32), M = 84 (2 row tiles at 64).
    _conv_check((2, 34, 6, 7), (80, 17, 3, 3), 1, 1, 2, device, seed=3)


def run_conv1x1(device):
    """The 1x1 GEMM path forced: TMA-fed (24 channels in, 72 out: 16-byte pixel rows) and
    through pointers (21 in, 37 out), forward with bias and ReLU and every gradient over 150
    and 60 pixels (1 to 3 row tiles at BLOCK_M 128 .. 64); a weight-grad of 300 pixels in
    two split shares (256 + 44 rows), TMA-fed."""
    with race.forced_path("conv_forward", "gemm1x1"), race.forced_path("conv_dgrad", "gemm1x1"), \
            race.forced_path("conv_wgrad", "gemm1x1"):
        _conv_check((6, 24, 5, 5), (72, 24, 1, 1), 1, 0, 1, device, seed=12)
        _conv_check((2, 21, 5, 6), (37, 21, 1, 1), 1, 0, 1, device, seed=13)
    x64, dy64 = _data((6, 24, 5, 10), (6, 72, 5, 10), seed=14)
    x, dy = (t.to(device, torch.float32).to(memory_format=torch.channels_last) for t in (x64, dy64))
    dw = conv1x1_weight_grad(x, dy, torch.float32, split_k=2, use_tma=True)
    assert_close(dw, torch.einsum("nkhw,nchw->kc", dy64, x64)[:, :, None, None], reduction=300,
                 name="1x1 weight-grad, 2 splits")


def run_conv_tma(device):
    """The TMA KxK path forced, forward and data-grad: a 3x3 pad-1 conv on an 11x12 image,
    24 channels in (a channel tail at BLOCK_K 16, a part-empty box at 64), 40 out (masked
    columns at every BLOCK_N): 1 to 3 patches a side at 8x16, 16x8, 8x8 and 4x16, each
    padded at the image's edges."""
    with race.forced_path("conv_forward", "tma_kxk"), race.forced_path("conv_dgrad", "tma_kxk"):
        _conv_check((2, 24, 11, 12), (40, 24, 3, 3), 1, 1, 1, device, seed=15)


def run_conv_tma_wgrad(device):
    """Its weight-grad on the same conv, stored directly and as 3 splits of partials: the
    reduction over 8x8, 8x16, 4x16 and 4x8 patches cut by the image's edges."""
    x64, dy64 = _data((2, 24, 11, 12), (2, 40, 11, 12), seed=16)
    x, dy = (t.to(device, torch.float32).to(memory_format=torch.channels_last) for t in (x64, dy64))
    geo = kernels.conv.conv_geometry(x, torch.empty(40, 24, 3, 3, device=device), 1, 1)
    for split in (1, 3):
        assert_close(conv_tma_weight_grad(x, dy, geo, torch.float32, split_k=split),
                     torch.nn.grad.conv2d_weight(x64, (40, 24, 3, 3), dy64, 1, 1), reduction=2 * 11 * 12,
                     name=f"TMA KxK weight-grad, {split} splits")


def run_pointwise(device):
    """Fused 1x1 GEMM with its split store, and the pool-projection variant (3x3/1/1
    max-pool while loading, argmax codes kept) with the gather and scatter that read them."""
    x64, w64, b64 = _data((2, 20, 5, 6), (49, 20), (49,), seed=4)
    x, w, b = (t.to(device, torch.float32) for t in (x64, w64, b64))
    x = x.to(memory_format=torch.channels_last)
    out_a = torch.empty(2, 12, 5, 6, device=device).to(memory_format=torch.channels_last)
    out_b = torch.empty(2, 37, 5, 6, device=device).to(memory_format=torch.channels_last)
    pointwise_forward(x, w, b, out_a=out_a, out_b=out_b, n_a=12)
    ref = F.relu(F.conv2d(x64, w64[:, :, None, None], b64))
    assert_close(torch.cat([out_a, out_b], 1), ref, reduction=21, name="fused 1x1")

    argmax = torch.empty(2, 20, 5, 6, dtype=torch.int8, device=device).to(memory_format=torch.channels_last)
    y = pointwise_forward(x, w, b, pool3=True, argmax=argmax)
    pooled64 = F.max_pool2d(x64, 3, 1, 1)
    assert_close(y, F.relu(F.conv2d(pooled64, w64[:, :, None, None], b64)), reduction=21, name="pool projection")
    assert torch.equal(pool3_gather(x, argmax).double().cpu(), pooled64), "argmax codes do not gather the max"


def run_add_relu(device):
    # 9102 elements: 2 to 9 programs at BLOCK 8192 .. 1024, the last one masked.
    x64, r64, g64 = _data((2, 3, 37, 41), (2, 3, 37, 41), (2, 3, 37, 41), seed=5)
    x, r = (t.to(device, torch.float32).requires_grad_() for t in (x64, r64))
    y = kernels.add_relu(x, r)
    y.backward(g64.to(device, torch.float32))
    assert_close(y, F.relu(x64 + r64), name="add_relu")
    assert_close(x.grad, g64 * (x64 + r64 > 0), name="add_relu grad")


def run_lrn(device):
    # 143 positions per image: 1 to 18 programs at BLOCK_P 128 .. 8, the last one masked.
    x64, g64 = _data((2, 11, 13, 11), (2, 11, 13, 11), seed=6)
    x = x64.to(device, torch.float32).requires_grad_()
    y = kernels.local_response_norm(x, 5, 1.5, 0.75, 2.0)
    y.backward(g64.to(device, torch.float32))
    x64.requires_grad_()
    ref = F.local_response_norm(x64, 5, 1.5, 0.75, 2.0)
    ref.backward(g64)
    assert_close(y, ref, reduction=5, name="lrn")
    assert_close(x.grad, x64.grad, reduction=10, name="lrn grad")


def run_lrn_groups(device):
    # channels_last: 24 channels (groups of 8, windows reaching into the neighbouring
    # groups), 286 pixels: 7 programs at GROUPS 128 (42 pixels each), 1 masked one at 1024;
    # and 6 channels (groups of 2) on 70 pixels.
    for shape in ((2, 24, 13, 11), (2, 6, 5, 7)):
        x64, g64 = _data(shape, shape, seed=7)
        x = x64.to(device, torch.float32).contiguous(memory_format=torch.channels_last).requires_grad_()
        assert kernels.lrn.channels_innermost(x)
        y = kernels.local_response_norm(x, 5, 1.5, 0.75, 2.0)
        y.backward(g64.to(device, torch.float32))
        x64.requires_grad_()
        ref = F.local_response_norm(x64, 5, 1.5, 0.75, 2.0)
        ref.backward(g64)
        assert_close(y, ref, reduction=5, name=f"lrn groups {shape}")
        assert_close(x.grad, x64.grad, reduction=10, name=f"lrn groups grad {shape}")


def run_max_pool(device):
    # 3x3/2 pad 1 (ResNet's stem pool), channels_last: forward P = 60 output pixels (1 to 4
    # programs at BLOCK_P 128 .. 16), backward P = 198 input pixels (2 to 13); 70 channels:
    # 2 channel tiles at BLOCK_C 64, 1 masked tile at 128.
    (x64,) = _data((2, 70, 9, 11), seed=8)
    check_pool(x64, 3, 2, 1, False, device=device, layout="channels_last", seed=8)


def run_batchnorm(device):
    # Training BatchNorm + residual + ReLU, forward and backward: P = 135 pixels (2 to 9
    # pixel tiles), 70 channels (masked channel tiles at 64 and 128).
    mod, ref = _bn_pair(70, torch.float32, device, "relu")
    (x64,) = _data((3, 70, 5, 9), seed=9)
    check_step(mod.train(), ref.train(), x64, residual=True, activation="relu", device=device,
               layout="channels_last", seed=9)


def run_bn_relu_pool(device):
    # ResNet's stem, BatchNorm + ReLU + 3x3/2 max-pool, training: forward 60 output pixels x
    # 70 channels; backward the pool gather and the BatchNorm backward.
    check_bn_relu_pool(70, 9, 11, (3, 2, 1, False), layout="channels_last", seed=10, device=device)


def run_lrn_pool(device):
    # Both fused orders at 3x3/2 (ceil_mode): forward 40 output pixels (1 to 5 programs at
    # BLOCK_P 128 .. 8), the fused LRN+pool backward 198 input pixels (2 to 25).
    (x64,) = _data((2, 11, 9, 11), seed=11)
    for order in ("lrn_pool", "pool_lrn"):
        check_lrn_pool(order, x64, (5, 1.5, 0.75, 2.0), (3, 2, 0, True), device=device, layout="channels_last",
                       seed=11)


# Every autotuned kernel, the family of configs it draws from, and the run that exercises it.
AUTOTUNED = {
    "_conv_fwd_kernel": ("conv_gemm", run_conv),
    "_conv_dgrad_kernel": ("conv_gemm", run_conv),
    "_pointwise_fwd_kernel": ("conv_gemm", run_pointwise),
    "_conv_wgrad_kernel": ("conv_wgrad", run_conv),
    "_conv1x1_fwd_kernel": ("conv1x1", run_conv1x1),
    "_conv1x1_dgrad_kernel": ("conv1x1", run_conv1x1),
    "_conv1x1_wgrad_kernel": ("conv1x1_wgrad", run_conv1x1),
    "_conv_tma_fwd_kernel": ("conv_tma", run_conv_tma),
    "_conv_tma_dgrad_kernel": ("conv_tma", run_conv_tma),
    "_conv_tma_wgrad_kernel": ("conv_tma_wgrad", run_conv_tma_wgrad),
    "_add_relu_fwd_kernel": ("mem_bound", run_add_relu),
    "_relu_grad_kernel": ("mem_bound", run_add_relu),
    "_lrn_fwd_kernel": ("lrn", run_lrn),
    "_lrn_bwd_kernel": ("lrn", run_lrn),
    "_lrn_groups_fwd_kernel": ("lrn_groups", run_lrn_groups),
    "_lrn_groups_bwd_kernel": ("lrn_groups", run_lrn_groups),
    "_lrn_pool_fwd_kernel": ("lrn", run_lrn_pool),
    "_lrn_pool_bwd_kernel": ("lrn", run_lrn_pool),
    "_pool_lrn_fwd_kernel": ("lrn", run_lrn_pool),
    "_max_pool_fwd_kernel": ("channel_tiles", run_max_pool),
    "_max_pool_bwd_kernel": ("channel_tiles", run_max_pool),
    "_bn_fwd_kernel": ("channel_tiles", run_batchnorm),
    "_bn_bwd_dx_kernel": ("channel_tiles", run_batchnorm),
    "_bn_relu_pool_fwd_kernel": ("channel_tiles", run_bn_relu_pool),
}
FAMILIES = kernels.configs._GPU


def _autotuners() -> dict:
    from triton.runtime.autotuner import Autotuner

    return {name: obj for name, obj in triton_kernels().items() if isinstance(obj, Autotuner)}


def test_every_autotuned_kernel_is_covered_here():
    """A new autotuned kernel must join AUTOTUNED, or its GPU configs go untested."""
    found = _autotuners()
    assert set(found) == set(AUTOTUNED), f"autotuned kernels {sorted(found)} vs covered {sorted(AUTOTUNED)}"
    for name, tuner in found.items():
        family = AUTOTUNED[name][0]
        assert tuner.configs is configs(family), f"{name} does not draw its configs from family {family!r}"


def _force(monkeypatch, kernel: str, config: triton.Config) -> list[dict]:
    """Make `kernel` launch with `config` only; returns the meta-parameters of each launch."""
    tuner = _autotuners()[kernel]
    seen = []
    inner = tuner.fn.run

    def run(*args, **kwargs):
        seen.append(kwargs)
        return inner(*args, **kwargs)

    monkeypatch.setattr(tuner, "configs", [config])
    monkeypatch.setattr(tuner.fn, "run", run)
    return seen


@pytest.mark.parametrize("family, index", [(f, i) for f, cfgs in FAMILIES.items() for i in range(len(cfgs))])
def test_every_gpu_config_gives_the_right_answer(family, index, monkeypatch, device):
    config = FAMILIES[family][index]
    if family.startswith("conv") and device == "cuda":
        need, limit = gemm_shared_bytes(config, 4), kernels.configs._shared_limit(torch.device(device))
        if need > limit:
            pytest.skip(f"the GPU prunes {config} for fp32 ({need} bytes of shared memory > {limit})")
    users = [name for name, (fam, _) in AUTOTUNED.items() if fam == family]
    launches = {name: _force(monkeypatch, name, config) for name in users}
    for run in dict.fromkeys(AUTOTUNED[name][1] for name in users):  # each run once
        run(device)
    for name, seen in launches.items():
        assert seen, f"{name} never launched under {config}"
        for kwargs in seen:
            assert {k: kwargs[k] for k in config.kwargs} == config.kwargs, f"{name} ran {kwargs}, not {config}"


# --------------------------------------------------------------------------- GPU-side pruning
H100_SHARED = 232448  # bytes of shared memory per block on sm_90 (227 KB)


def test_gemm_configs_pruned_by_shared_memory(monkeypatch):
    monkeypatch.setattr(kernels.configs, "_shared_limit", lambda device: H100_SHARED)
    cfgs = FAMILIES["conv_gemm"]
    # stages x (BLOCK_M x BLOCK_K + BLOCK_K x BLOCK_N) x bytes, by hand for fp32:
    # 128x256x64 and 256x128x64 at 3 stages: 3 x (8192 + 16384) x 4 = 294,912 > 232,448.
    assert gemm_shared_bytes(cfgs[1], 4) == 294_912 and gemm_shared_bytes(cfgs[0], 4) == 196_608
    kept32 = prune_by_shared_memory(cfgs, {"x_ptr": torch.empty(1)})
    assert kept32 == [c for i, c in enumerate(cfgs) if i not in (1, 2)]
    kept16 = prune_by_shared_memory(cfgs, {"x_ptr": torch.empty(1, dtype=torch.float16)})
    assert kept16 == cfgs  # 147,456 bytes at most
    monkeypatch.setattr(kernels.configs, "_shared_limit", lambda device: 1024)
    smallest = prune_by_shared_memory(cfgs, {"x_ptr": torch.empty(1)})
    assert smallest == [cfgs[-1]]  # none fits: the smallest (64x32x32, 5 stages: 61,440 bytes)


def test_1x1_configs_pruned_with_their_output_tile(monkeypatch):
    """The TMA-fed forward / data-grad stage the output tile too (the store), and their
    pointer variant keeps tiles up to 128x128 (larger ones spill on sm_90)."""
    monkeypatch.setattr(kernels.configs, "_shared_limit", lambda device: H100_SHARED)
    cfgs = FAMILIES["conv1x1"]
    # 128x128x64, 3 stages, fp32: 3 x (8192 + 8192) x 4 = 196,608 + the 128x128 x 4 out tile = 262,144
    assert gemm_shared_bytes(cfgs[0], 4) == 196_608 and gemm_shared_bytes(cfgs[0], 4, out_tile=True) == 262_144
    args = {"a_src": object(), "b_ptr": torch.empty(1), "c_dst": object()}
    fp32 = prune_by_shared_memory(cfgs, args, USE_TMA=True)
    assert fp32 == [c for c in cfgs if gemm_shared_bytes(c, 4, out_tile=True) <= H100_SHARED]
    assert cfgs[0] not in fp32 and cfgs[5] in fp32
    bf16 = prune_by_shared_memory(cfgs, {**args, "b_ptr": torch.empty(1, dtype=torch.bfloat16)}, USE_TMA=True)
    assert bf16 == cfgs  # 213,016 bytes at most (128x256x64, 3 stages)
    pointers = prune_by_shared_memory(cfgs, {**args, "b_ptr": torch.empty(1, dtype=torch.bfloat16)}, USE_TMA=False)
    assert pointers == [c for c in cfgs if c.kwargs["BLOCK_N"] != 256]
    wgrad = prune_by_shared_memory(FAMILIES["conv1x1_wgrad"], {"a_src": object(), "dw_ptr": torch.empty(1)},
                                   USE_TMA=True)  # no output tile staged: 128x128x128 fp32 needs 393,216
    assert wgrad == [c for c in FAMILIES["conv1x1_wgrad"] if gemm_shared_bytes(c, 4) <= H100_SHARED]


def _recorded(launch_fn) -> tuple[dict, dict]:
    """(named args, keyword args) of the one GEMM launch `launch_fn` makes (recorded, not run)."""
    with LaunchRecorder(execute=False) as rec:
        launch_fn()
    (launch,) = [la for la in rec.launches if la.name != "_colsum_kernel"]
    return dict(zip(_autotuners()[launch.name].arg_names, launch.args)), launch.kwargs


def test_tma_launches_are_pruned_by_their_operands_dtype(monkeypatch):
    """The TMA kernels' tensor arguments: the 1x1 data-grad has none (descriptors only), the
    weight-grads' first is the fp32 partials buffer. The staged tiles are the operands'
    dtype: fp32 1x1 data-grad tiles over the shared memory (128x128x64: 262,192 B compiled
    for sm_90) must be pruned, or CONVBENCH_AUTOTUNE=first launches them (OutOfResources);
    fp16 weight-grad tiles must not be sized as fp32 (a table's 128x128x128 winner would be
    refused as too big, and autotuning would never try it)."""
    import kernels.conv1x1
    from benchmarks.sweep import record_launches
    from kernels.conv import conv_geometry
    from kernels.conv1x1 import conv1x1_input_grad

    monkeypatch.setattr(kernels.configs, "_shared_limit", lambda device: H100_SHARED)
    cl = dict(memory_format=torch.channels_last)
    dy, w = torch.randn(2, 40, 4, 4).to(**cl), torch.randn(40, 24, 1, 1)
    named, kw = _recorded(lambda: conv1x1_input_grad(dy, w, torch.empty(2, 24, 4, 4).to(**cl), use_tma=True))
    assert kw["USE_TMA"] and not any(isinstance(v, torch.Tensor) for v in named.values())
    cfgs = FAMILIES["conv1x1"]
    fits = [c for c in cfgs if gemm_shared_bytes(c, 4, out_tile=True) <= H100_SHARED]
    assert prune_by_shared_memory(cfgs, named, **kw) == fits and cfgs[0] not in fits
    tuner = kernels.configs.TUNABLE["_conv1x1_dgrad_kernel"].with_configs(cfgs[:1], first_of=cfgs)
    monkeypatch.setattr(kernels.conv1x1, "_conv1x1_dgrad_kernel", tuner)  # CONVBENCH_AUTOTUNE=first
    record_launches(lambda: conv1x1_input_grad(dy, w, torch.empty(2, 24, 4, 4).to(**cl), use_tma=True))
    assert tuner.best_config is fits[0]
    x, g = torch.randn(2, 24, 16, 16).half().to(**cl), torch.randn(2, 40, 16, 16).half().to(**cl)
    named, kw = _recorded(lambda: conv1x1_weight_grad(x, g, torch.float16, split_k=2, use_tma=True))
    assert named["dw_ptr"].dtype == torch.float32  # two splits: fp32 partials
    assert prune_by_shared_memory(FAMILIES["conv1x1_wgrad"], named, **kw) == FAMILIES["conv1x1_wgrad"]
    geo = conv_geometry(x, torch.empty(40, 24, 3, 3, dtype=torch.float16), 1, 1)
    named, kw = _recorded(lambda: conv_tma_weight_grad(x, g, geo, torch.float16, split_k=2))
    need, _ = kernels.configs._shared_need(named, kw)
    assert all(need(c) == gemm_shared_bytes(c, 2) for c in FAMILIES["conv_tma_wgrad"])


def test_tma_launches_find_their_table_entries(monkeypatch, tmp_path):
    """A tuned table serves a TMA kernel's launch under its operands' dtype: the 1x1
    data-grad's arguments hold no tensor (so no table, and under CONVBENCH_AUTOTUNE=first
    not the first config that fits, was ever consulted), the weight-grads' first tensor is
    the fp32 partials buffer (a bf16 entry was looked up as float32: a miss)."""
    from benchmarks.sweep import record_launches
    from kernels import tuned
    from kernels.conv import conv_geometry
    from kernels.conv1x1 import conv1x1_input_grad

    cl = dict(memory_format=torch.channels_last)
    dy, w, dx = torch.randn(2, 40, 4, 4).to(**cl), torch.randn(40, 24, 1, 1), torch.empty(2, 24, 4, 4).to(**cl)
    x, g = torch.randn(2, 24, 16, 16).half().to(**cl), torch.randn(2, 40, 16, 16).half().to(**cl)
    geo = conv_geometry(x, torch.empty(40, 24, 3, 3, dtype=torch.float16), 1, 1)
    launches = {
        "_conv1x1_dgrad_kernel": (lambda: conv1x1_input_grad(dy, w, dx, use_tma=True), "float32", None),
        "_conv1x1_wgrad_kernel": (lambda: conv1x1_weight_grad(x, g, torch.float16, split_k=2, use_tma=True),
                                  "float16", 2),
        "_conv_tma_wgrad_kernel": (lambda: conv_tma_weight_grad(x, g, geo, torch.float16, split_k=2), "float16", 2),
    }
    monkeypatch.setenv("CONVBENCH_TUNED", "off")
    entries = []
    for name, (launch, dtype, split) in launches.items():
        record_launches(launch)  # the autotuner runs (its key), the kernel does not
        tuner = kernels.configs.TUNABLE[name]
        entries.append({"kernel": name, "family": tuner.family, "dtype": dtype, "key": dict(tuner.last_key),
                        "config": tuned.config_to_json(tuner.configs[0]), "split_k": split, "ms": 1.0,
                        "runner_up_ms": None, "cudnn_ms": None})
    path = tuned.write_table(tmp_path / "cpu-test-triton3.6.json", "cpu test", "3.6.0", entries)
    monkeypatch.setenv("CONVBENCH_TUNED", str(path))
    monkeypatch.setattr(kernels.configs, "TABLE_HITS", kernels.configs.Counter())
    monkeypatch.setattr(kernels.configs, "TABLE_MISSES", kernels.configs.Counter())
    for launch, _, _ in launches.values():
        record_launches(launch)
    assert dict(kernels.configs.TABLE_HITS) == dict.fromkeys(launches, 1), dict(kernels.configs.TABLE_MISSES)


def test_1x1_k_steps_divide_the_split_alignment():
    """A weight-grad split share (a multiple of SPLIT_ALIGN rows) must hold whole K steps, or
    a TMA box would add the next share's rows twice."""
    from kernels.conv1x1 import SPLIT_ALIGN

    for cfgs in (FAMILIES["conv1x1_wgrad"], configs("conv1x1_wgrad")):
        assert all(SPLIT_ALIGN % c.kwargs["BLOCK_K"] == 0 for c in cfgs)


@pytest.mark.parametrize("block_c, kept_p", [(16, [8, 16, 32, 32, 64, 128]), (256, [8, 16, 32, 32, 64]),
                                              (1024, [8, 16]), (16384, [8])])
def test_lrn_tiles_pruned_to_16k_elements(block_c, kept_p):
    kept = kernels.lrn._prune_tiles(FAMILIES["lrn"], {}, BLOCK_C=block_c)
    assert [c.kwargs["BLOCK_P"] for c in kept] == kept_p


@pytest.mark.parametrize("C, V, kept", [(96, 8, [256, 128, 512, 1024]), (2048, 8, [256, 512, 1024]),
                                         (3, 1, [256, 128, 512, 1024]), (1031, 1, [2048]), (16384, 8, [2048])])
def test_lrn_group_tiles_hold_whole_pixels(C, V, kept):
    """Group tiles hold at least one pixel (GROUPS * V >= C); a pixel larger than every
    configured tile gets one tile of the smallest power of two of groups that holds it."""
    found = kernels.lrn._prune_groups(FAMILIES["lrn_groups"], {}, C=C, V=V)
    assert [c.kwargs["GROUPS"] for c in found] == kept


def test_autotune_first_keeps_the_first_gpu_config(monkeypatch):
    monkeypatch.setattr(kernels.configs, "interpreting", lambda: False)
    monkeypatch.setenv("CONVBENCH_AUTOTUNE", "first")
    assert all(configs(f) == FAMILIES[f][:1] for f in FAMILIES)
    # one object per family: test_every_autotuned_kernel_is_covered_here checks identity
    assert all(configs(f) is configs(f) for f in FAMILIES)
    monkeypatch.setenv("CONVBENCH_AUTOTUNE", "full")
    assert all(configs(f) is FAMILIES[f] for f in FAMILIES)


def test_autotune_first_keeps_the_family_for_launches_the_first_cannot_serve(monkeypatch):
    monkeypatch.setattr(kernels.configs, "interpreting", lambda: False)
    monkeypatch.setattr(kernels.configs, "TUNABLE", {})
    fn = triton_kernels()["_conv_fwd_kernel"].fn
    for mode, first_of in (("first", FAMILIES["conv_gemm"]), ("full", None)):
        monkeypatch.setenv("CONVBENCH_AUTOTUNE", mode)
        kernels.configs.TUNABLE.clear()
        tuner = kernels.configs.autotune("conv_gemm", key=["BATCH"])(fn)
        assert tuner.first_of is first_of
        assert tuner.configs == (FAMILIES["conv_gemm"][:1] if mode == "first" else FAMILIES["conv_gemm"])


def test_autotune_first_launch_takes_the_first_config_that_fits(monkeypatch, device):
    """CONVBENCH_AUTOTUNE=first lists one config, and triton never prunes a one-config list:
    the first conv config's fp64 tiles (3 x (128x64 + 64x128) x 8 B = 393,216 B by our
    count; 262,144 B compiled by triton 3.6) cannot launch on sm_90 (227 KB: OutOfResources).
    Each launch takes the family's first config that fits: 64x64x32 (5 stages) for fp64, the
    first for fp32."""
    monkeypatch.setattr(kernels.configs, "_shared_limit", lambda device: H100_SHARED)
    gemm = FAMILIES["conv_gemm"]
    tuner = kernels.configs.TUNABLE["_conv_fwd_kernel"].with_configs(gemm[:1], first_of=gemm)
    monkeypatch.setattr(kernels.conv, "_conv_fwd_kernel", tuner)
    for dtype, expected in ((torch.float64, gemm[6]), (torch.float32, gemm[0])):
        x64, w64 = _data((2, 3, 5, 4), (4, 3, 3, 3), seed=5, dtype=dtype)
        y = kernels.conv.conv2d_forward(x64.to(device, dtype), w64.to(device, dtype), None, 1, 1)
        assert tuner.best_config is expected, f"{dtype} launched {tuner.best_config}"
        assert_close(y, F.conv2d(x64, w64, None, 1, 1), reduction=27, name=f"conv {dtype}")


def test_pool3_route_with_gpu_block_sizes(monkeypatch, device):
    """The max-pool gather / scatter at the GPU's 64 x 64 blocks (2 channel tiles here)."""
    x64, g64 = _data((2, 70, 4, 5), (2, 70, 4, 5), seed=7)
    x = x64.to(device, torch.float32).to(memory_format=torch.channels_last)
    argmax = torch.empty(x.shape, dtype=torch.int8, device=device).to(memory_format=torch.channels_last)
    pointwise_forward(x, torch.zeros(1, 70, device=device), None, pool3=True, argmax=argmax)
    monkeypatch.setattr(kernels.inception, "interpreting", lambda: False)
    with LaunchRecorder() as rec:
        pooled = pool3_gather(x, argmax)
        dx = pool3_backward_(torch.zeros_like(x), g64.to(device, torch.float32), argmax)
    assert {(launch.kwargs["BLOCK_P"], launch.kwargs["BLOCK_C"]) for launch in rec.launches} == {(64, 64)}
    x64.requires_grad_()
    ref = F.max_pool2d(x64, 3, 1, 1)
    ref.backward(g64)
    assert torch.equal(pooled.double().cpu(), ref.detach())
    assert_close(dx, x64.grad, reduction=9, name="max-pool grad")


# --------------------------------------------------------------------------- dot precision
def _precisions(dtype, device) -> dict:
    """kernel name -> the set of DOT_PRECISION values its launches were given, for one conv
    forward + backward and one fused 1x1 forward + backward (recorded, not run)."""
    x = torch.randn(2, 4, 5, 5, device=device, dtype=dtype, requires_grad=True)
    w = torch.randn(6, 4, 3, 3, device=device, dtype=dtype, requires_grad=True)
    w1 = torch.randn(3, 4, 1, 1, device=device, dtype=dtype, requires_grad=True)
    with LaunchRecorder(execute=False) as rec:
        kernels.conv2d(x, w, padding=1).sum().backward()
        with race.forced_path("conv_forward", "gemm1x1"), race.forced_path("conv_dgrad", "gemm1x1"), \
                race.forced_path("conv_wgrad", "gemm1x1"):
            kernels.conv2d(x, w1).sum().backward()  # the 1x1 GEMM path
        kernels.inception_1x1(x, [w1, w1])[0].sum().backward()
    out = {}
    for launch in rec.launches:
        if "DOT_PRECISION" in launch.kwargs:
            out.setdefault(launch.name, set()).add(launch.kwargs["DOT_PRECISION"])
    return out


GEMMS = {"_conv_fwd_kernel", "_conv_dgrad_kernel", "_conv_wgrad_kernel", "_pointwise_fwd_kernel",
         "_conv1x1_fwd_kernel", "_conv1x1_dgrad_kernel", "_conv1x1_wgrad_kernel"}


@pytest.mark.parametrize("dtype, cudnn_tf32, matmul_tf32, expected", [
    (torch.float32, True, False, "tf32"),   # torch's rule for convs: cudnn.allow_tf32 decides,
    (torch.float32, False, True, "ieee"),   # the matmul flag does not
    (torch.float16, True, False, "tf32"),   # half inputs: tensor cores either way
    (torch.float16, False, False, "tf32"),
])
def test_dot_precision_each_launcher_passes(dtype, cudnn_tf32, matmul_tf32, expected, device):
    torch.backends.cudnn.allow_tf32 = cudnn_tf32
    torch.backends.cuda.matmul.allow_tf32 = matmul_tf32
    got = _precisions(dtype, device)
    assert set(got) == GEMMS, f"GEMM launches with a DOT_PRECISION: {sorted(got)}"
    assert all(v == {expected} for v in got.values()), f"expected {expected!r} everywhere, got {got}"


# --------------------------------------------------------------------------- TF32 on the interpreter
def _truncate_tf32(a):
    """fp32 values as the sm_90 tensor cores read them for a TF32 dot: the low 13 mantissa
    bits dropped (triton 3.6 emits no cvt.rna.tf32 before its wgmma ... .tf32)."""
    import numpy as np

    return (a.astype(np.float32).view(np.int32) & np.int32(~0x1FFF)).view(np.float32)


@pytest.fixture
def tf32_truncating_dot(monkeypatch):
    """The interpreter's tl.dot with fp32 inputs truncated to TF32 where a launcher asks for
    "tf32" (the interpreter itself ignores input_precision and multiplies exactly)."""
    import numpy as np
    from triton._C.libtriton import ir
    from triton.runtime.interpreter import InterpreterBuilder, TensorHandle

    exact = InterpreterBuilder.create_dot
    calls = []

    def create_dot(self, a, b, d, input_precision, max_num_imprecise_acc):
        if input_precision == ir.INPUT_PRECISION.TF32 and a.data.dtype == np.float32:
            calls.append(1)
            a, b = TensorHandle(_truncate_tf32(a.data), a.dtype), TensorHandle(_truncate_tf32(b.data), b.dtype)
        return exact(self, a, b, d, input_precision, max_num_imprecise_acc)

    monkeypatch.setattr(InterpreterBuilder, "create_dot", create_dot)
    return calls


def test_tf32_tolerance_covers_truncated_inputs(tf32_truncating_dot, device):
    """With torch's default cudnn.allow_tf32 the fp32 conv launchers pass "tf32" and a GPU
    truncates the dot inputs: forward, data-grad and weight-grad (K = 576, 432, 72) then
    stay within tolerance(tf32=True), whose rtol term holds the truncation's bias (without
    it, 12 of the forward's 3,456 outputs failed here), and outside the IEEE bound (so the
    simulation is on)."""
    from tests.helpers import tolerance_excess
    from tests.test_conv import run_and_compare

    if device == "cuda":
        pytest.skip("simulates on the interpreter what the GPU does itself")
    torch.backends.cudnn.allow_tf32 = True
    run_and_compare(2, 64, 6, 6, 48, 3, 3, 1, 1, 1, bias=False, residual=False, activation=None,
                    channels_last=True, device=device, tf32=True, seed=3)
    assert tf32_truncating_dot, "no dot ran in TF32"
    # the same forward, checked against the IEEE bound: the truncation must show
    gen = torch.Generator().manual_seed(3)
    x64, w64 = torch.randn(2, 64, 6, 6, generator=gen).double(), torch.randn(48, 64, 3, 3, generator=gen).double()
    y = kernels.conv2d(x64.float().to(device), w64.float().to(device), padding=1)
    ref = F.conv2d(x64.float().double(), w64.float().double(), padding=1)
    assert tolerance_excess(y, ref, torch.float32, reduction=576, tf32=True) <= 1
    assert tolerance_excess(y, ref, torch.float32, reduction=576) > 1


# --------------------------------------------------------------------------- test flags
def test_device_tests_compare_in_ieee_fp32(device):
    """tests/conftest.py: a test on `device` that is not gpu-marked runs without TF32."""
    assert not torch.backends.cudnn.allow_tf32 and not torch.backends.cuda.matmul.allow_tf32
    assert kernels._utils.dot_precision(torch.float32) == "ieee"


def test_tests_without_device_keep_torchs_default():
    assert torch.backends.cudnn.allow_tf32  # torch's default, left alone


@pytest.mark.gpu
def test_gpu_marked_tests_keep_torchs_default(device):
    assert torch.backends.cudnn.allow_tf32


def test_autotuned_config_of_one_variant_is_not_reused_by_the_dy_relu_variant(monkeypatch, device):
    """triton's autotune cache is keyed by the autotune key alone, which leaves out DY_RELU:
    a weight-grad autotuned without it (fp32 128x128x64, 3 stages: 196,608 B) must not hand
    its winner to the same shape's DY_RELU launch, which stages a second A tile (294,912 B,
    over an H100's 227 KB: OutOfResources there); that launch prunes and tunes on its own."""
    monkeypatch.setattr(kernels.configs, "_shared_limit", lambda device: H100_SHARED)
    wgrad = FAMILIES["conv_wgrad"]
    big, small = wgrad[0], wgrad[3]
    assert gemm_shared_bytes(big, 4) <= H100_SHARED < gemm_shared_bytes(big, 4, extra_a=True)
    assert gemm_shared_bytes(small, 4, extra_a=True) <= H100_SHARED
    calls = []

    def bench(kernel_call, quantiles=None):  # the earlier config of a list is the faster
        calls.append(1)
        kernel_call()
        return [len(calls)] * 3 if quantiles else len(calls)

    tuner = kernels.configs.TUNABLE["_conv_wgrad_kernel"].with_configs([big, small], do_bench=bench)
    monkeypatch.setattr(kernels.conv, "_conv_wgrad_kernel", tuner)
    x64, w64 = _data((1, 3, 4, 4), (4, 3, 3, 3), seed=3, dtype=torch.float64)
    y64 = F.conv2d(x64, w64, None, 1, 1)
    o64 = y64.relu()
    g64 = torch.randn_like(y64)
    geo = kernels.conv.conv_geometry(x64, w64, 1, 1, 1, 1)
    x, g, o = (t.to(device, torch.float32) for t in (x64, g64, o64))
    kernels.conv.conv2d_weight_grad(x, g, geo, torch.float32, split_k=1)
    assert tuner.best_config is big
    dw = kernels.conv.conv2d_weight_grad(x, g, geo, torch.float32, split_k=1, relu_output=o)
    assert tuner.best_config is small, f"the DY_RELU launch took {tuner.best_config}"
    masked = torch.ops.aten.threshold_backward(g64, o64, 0)
    ref = torch.ops.aten.convolution_backward(masked, x64, w64, None, (1, 1), (1, 1), (1, 1), False, (0, 0), 1,
                                              (False, True, False))[1]
    assert_close(dw, ref, reduction=16, name="weight-grad through the ReLU")


def test_weight_grad_partials_hold_the_splits_of_the_kernels_own_configs(monkeypatch, device):
    """With no split count given, each config's grid brings its own (`_tile_splits`): the
    partials buffer must hold the most that any config the launching kernel may pick asks
    for (here its one 128x128 tile over 65 output channels wants 4 splits on 2 SMs, the
    interpreter's 64x64 tile 2), and the sum must read every split that ran."""
    monkeypatch.setattr(kernels.conv, "sm_count", lambda device: 2)
    big = FAMILIES["conv_wgrad"][0]
    tuner = kernels.configs.TUNABLE["_conv_wgrad_kernel"].with_configs([big])
    monkeypatch.setattr(kernels.conv, "_conv_wgrad_kernel", tuner)
    x64, w64 = _data((2, 1, 32, 32), (65, 1, 3, 3), seed=4, dtype=torch.float64)
    geo = kernels.conv.conv_geometry(x64, w64, 1, 1, 1, 1)
    assert kernels.conv._tile_splits(geo, x64.device, 128, 128) == 4
    assert kernels.conv._tile_splits(geo, x64.device, 64, 64) == 2
    (g64,) = _data(tuple(geo.out_shape), seed=5, dtype=torch.float64)
    dw = kernels.conv.conv2d_weight_grad(x64.to(device, torch.float32), g64.to(device, torch.float32), geo,
                                         torch.float32)
    assert tuner.best_config is big
    ref = torch.ops.aten.convolution_backward(g64, x64, w64, None, (1, 1), (1, 1), (1, 1), False, (0, 0), 1,
                                              (False, True, False))[1]
    assert_close(dw, ref, reduction=2048, name="weight-grad over 4 splits")
