"""The conv forward kernel's statistics epilogue and the BatchNorm that takes them.

`conv2d_forward(..., stats=True)` writes each output channel's (mean, M2) over every output
tile's pixels beside the output; `batch_norm_stats_from_partials` merges them into the
batch mean and variance (and the running statistics) that `batch_norm_stats` computes by
reading the output. Checked against float64 torch on fuzzed shapes (odd sizes, C=3,
stride > 1, padding, groups, bias, strided views of x and the weight), with several pieces
and a short last piece; and `ConvBatchNorm2d` against nn.Conv2d -> nn.BatchNorm2d."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import triton
from hypothesis import given
from hypothesis import strategies as st

import kernels
from kernels import configs as kconfigs
from kernels.batchnorm import batch_norm, batch_norm_stats, batch_norm_stats_from_partials
from kernels.conv import conv2d_forward
from tests.helpers import assert_close, view_recipe


def _stats64(y64):
    var, mean = torch.var_mean(y64, dim=(0, 2, 3), unbiased=False)
    return mean, var


@st.composite
def conv_cases(draw):
    groups = draw(st.sampled_from([1, 1, 2]))
    cg = draw(st.integers(1, 5)) if groups > 1 else draw(st.sampled_from([3, 4, 7]))
    kg = draw(st.integers(1, 4))
    r = draw(st.sampled_from([1, 3]))
    stride = draw(st.sampled_from([1, 2]))
    padding = draw(st.integers(0, r // 2))
    n, h, w = draw(st.integers(1, 3)), draw(st.integers(r, 13)), draw(st.integers(r, 12))
    return dict(N=n, C=cg * groups, K=kg * groups, H=h, W=w, R=r, stride=stride, padding=padding, groups=groups,
                bias=draw(st.booleans()), x_view=draw(st.sampled_from(["dense", "sliced", "transposed"])),
                w_view=draw(st.sampled_from(["dense", "offset", "transposed"])),
                dtype=draw(st.sampled_from([torch.float32, torch.float64])), seed=draw(st.integers(0, 2**16)))


@given(case=conv_cases())
def test_conv_stats_match_the_outputs_batch_statistics(case, device):
    gen = torch.Generator().manual_seed(case["seed"])
    dtype = case["dtype"]
    x_shape = (case["N"], case["C"], case["H"], case["W"])
    w_shape = (case["K"], case["C"] // case["groups"], case["R"], case["R"])
    x_leaf_shape, x_fn = view_recipe(x_shape, case["x_view"])
    w_leaf_shape, w_fn = view_recipe(w_shape, case["w_view"])
    x = x_fn(torch.randn(x_leaf_shape, generator=gen).to(device, dtype))
    w = w_fn(torch.randn(w_leaf_shape, generator=gen).to(device, dtype))
    b = torch.randn(case["K"], generator=gen).to(device, dtype) if case["bias"] else None
    args = (case["stride"], case["padding"], 1, case["groups"])
    y, partials = conv2d_forward(x, w, b, *args, stats=True)
    assert partials.count == y.numel() // case["K"] and partials.pieces == triton.cdiv(partials.count, partials.rows)
    if partials.count == 1:  # one value per channel: refused, as torch's BatchNorm in training
        with pytest.raises(ValueError, match="more than 1 value per channel"):
            batch_norm_stats_from_partials(partials)
        return
    mean, var = batch_norm_stats_from_partials(partials)
    # of the output as stored: the same numbers batch_norm_stats reads
    m_read, v_read = batch_norm_stats(y)
    y64 = y.double()
    m64, v64 = _stats64(y64)
    P = partials.count
    scale = max(y64.abs().max().item(), 1.0)
    assert_close(mean, m64, reduction=P, scale=scale, name="mean")
    assert_close(var, v64, reduction=P, scale=scale ** 2, name="var")
    assert_close(mean, m_read.double(), reduction=P, scale=scale, name="mean vs batch_norm_stats")
    assert_close(var, v_read.double(), reduction=P, scale=scale ** 2, name="var vs batch_norm_stats")
    # and the output itself is the conv's
    ref = F.conv2d(x.double().cpu(), w.double().cpu(), None if b is None else b.double().cpu(), *args)
    assert_close(y, ref, reduction=w_shape[1] * case["R"] ** 2, scale=scale, name="conv output")


@pytest.mark.parametrize("block_m, pixels", [(64, 320), (64, 150), (128, 150), (128, 330)])
def test_several_pieces_and_a_short_last_one(block_m, pixels, device):
    """Pieces of 64 rows from 64- and 128-row tiles (the GPU's forced here too), the last one short;
    running statistics updated as torch's BatchNorm does (momentum, unbiased variance)."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(pixels // 10, 5, 2, 5, generator=gen, dtype=torch.float64)  # 1x1 conv: P = pixels
    w = torch.randn(6, 5, 1, 1, generator=gen, dtype=torch.float64)
    config = next(c for c in kconfigs.CONV_GEMM + kconfigs._INTERPRET["conv_gemm"] if c.kwargs["BLOCK_M"] == block_m)
    with kconfigs.forced_config("_conv_fwd_kernel", config):
        _, partials = conv2d_forward(x.to(device), w.to(device), stats=True)
    # pieces of 64 rows whatever the tile (a 128-row tile writes two)
    assert (partials.rows, partials.pieces, partials.count) == (64, triton.cdiv(pixels, 64), pixels)
    rm, rv = torch.zeros(6, dtype=torch.float64, device=device), torch.ones(6, dtype=torch.float64, device=device)
    mean, var = batch_norm_stats_from_partials(partials, rm, rv, None, 0.1)
    ref = torch.nn.BatchNorm2d(6, dtype=torch.float64, momentum=0.1)
    ref(F.conv2d(x, w))
    m64, v64 = _stats64(F.conv2d(x, w))
    assert_close(mean, m64, reduction=pixels, scale=10.0, name="mean")
    assert_close(var, v64, reduction=pixels, scale=100.0, name="var")
    assert_close(rm, ref.running_mean, reduction=pixels, scale=10.0, name="running_mean")
    assert_close(rv, ref.running_var, reduction=pixels, scale=100.0, name="running_var")


def test_refusals():
    x, w = torch.randn(2, 3, 5, 5), torch.randn(4, 3, 3, 3)
    with pytest.raises(ValueError, match="stats=True takes the statistics of the conv's own output"):
        conv2d_forward(x, w, activation="relu", stats=True)
    with pytest.raises(ValueError, match="stats=True takes"):
        conv2d_forward(x, w, residual=torch.randn(2, 4, 3, 3), stats=True)
    small = next((c for c in kconfigs.CONV_GEMM if c.kwargs["BLOCK_M"] < 64), None)
    if small is None:
        small = triton.Config({"BLOCK_M": 32, "BLOCK_N": 32, "BLOCK_K": 32, "GROUP_M": 4}, num_warps=4)
    forced = kconfigs.forced_config("_conv_fwd_kernel", small)
    with forced, pytest.raises(ValueError, match="needs BLOCK_M a multiple of 64"):
        conv2d_forward(x, w, stats=True)
    y, partials = conv2d_forward(x, w, stats=True)
    with pytest.raises(ValueError, match="partials must describe x"):
        batch_norm(y[:1], None, None, training=True, partials=partials)


def test_empty_batch():
    y, partials = conv2d_forward(torch.randn(0, 3, 5, 5), torch.randn(4, 3, 3, 3), stats=True)
    assert y.shape == (0, 4, 3, 3) and partials.count == 0 and partials.pieces == 0
    nbt = torch.zeros((), dtype=torch.long)
    mean, var = batch_norm_stats_from_partials(partials, torch.zeros(4), torch.ones(4), nbt, 0.1)
    assert torch.equal(mean, torch.zeros(4)) and torch.equal(var, torch.ones(4)) and int(nbt) == 1


@pytest.mark.parametrize("residual, activation", [(False, None), (False, "relu"), (True, "relu")])
def test_conv_batchnorm_module_trains_like_conv_then_batchnorm(residual, activation):
    """ConvBatchNorm2d holding a conv by reference: output, every gradient and the running
    statistics equal float64 nn.Conv2d -> nn.BatchNorm2d (+ residual, ReLU); eval uses the
    running statistics."""
    from nets.layers import fuse_pairs

    torch.manual_seed(0)

    class Pair(torch.nn.Module):
        FUSED_PAIRS = (("conv", "bn"),)

        def __init__(self, conv, bn):
            super().__init__()
            self.conv, self.bn = conv, bn

        def forward(self, x, r=None):
            return self.bn(self.conv(x), r) if r is not None else self.bn(self.conv(x))

    ref = Pair(torch.nn.Conv2d(5, 7, 3, stride=2, padding=1, dtype=torch.float64),
               torch.nn.BatchNorm2d(7, dtype=torch.float64))
    mod = Pair(kernels.Conv2d(5, 7, 3, stride=2, padding=1), kernels.BatchNorm2d(7, activation=activation))
    with torch.no_grad():
        ref.bn.weight.uniform_(0.5, 1.5)
        ref.bn.bias.uniform_(-0.5, 0.5)
    mod.load_state_dict(ref.state_dict())
    ref.load_state_dict(mod.state_dict())
    fuse_pairs(mod)
    assert type(mod.bn) is kernels.ConvBatchNorm2d and mod.bn.conv is mod.conv
    assert list(mod.state_dict()) == list(ref.state_dict())
    gen = torch.Generator().manual_seed(1)
    for _ in range(2):
        x = torch.randn(3, 5, 11, 9, generator=gen)
        r = torch.randn(3, 7, 6, 5, generator=gen) if residual else None
        y = mod(x, r)
        y64 = ref.bn(ref.conv(x.double()))
        y64 = y64 + r.double() if residual else y64
        y64 = F.relu(y64) if activation else y64
        g = torch.randn(y64.shape, generator=gen)
        mod.zero_grad(), ref.zero_grad()
        y.backward(g)
        y64.backward(g.double())
        assert_close(y, y64, reduction=3 * 6 * 5, scale=4.0, name="output")
        for (name, p64), p in zip(ref.named_parameters(), mod.parameters()):
            assert_close(p.grad, p64.grad, reduction=3 * 6 * 5 * 45, scale=max(p64.grad.abs().max().item(), 1.0),
                         name=name)
    for (name, b64), b in zip(ref.named_buffers(), mod.buffers()):
        if b64.dtype == torch.int64:
            assert torch.equal(b, b64), name
        else:
            assert_close(b, b64, reduction=90, scale=max(b64.abs().max().item(), 1.0), name=name)
    mod.eval(), ref.eval()
    x = torch.randn(2, 5, 11, 9, generator=gen)
    with torch.no_grad():
        y64 = ref.bn(ref.conv(x.double()))
        assert_close(mod(x), F.relu(y64) if activation else y64, reduction=45, scale=4.0, name="eval output")


@pytest.mark.parametrize("bias", [False, True])
def test_a_path_without_the_epilogue_takes_one_statistics_pass(bias, device):
    """conv_forward_stats forced onto the 1x1 GEMM path: its kernel, then the statistics
    kernel over y; the same output and the batch statistics torch's would give."""
    from kernels import race
    from tests.helpers import LaunchRecorder

    gen = torch.Generator().manual_seed(5)
    x = torch.randn(3, 24, 7, 5, generator=gen).to(device).contiguous(memory_format=torch.channels_last)
    w = torch.randn(40, 24, 1, 1, generator=gen).to(device)
    b = torch.randn(40, generator=gen).to(device) if bias else None
    y64 = F.conv2d(x.double(), w.double(), b.double() if bias else None)
    with race.forced_path("conv_forward_stats", "gemm1x1"), LaunchRecorder() as rec:
        y, partials = conv2d_forward(x, w, b, stats=True)
    assert set(rec.names()) == {"_conv1x1_fwd_kernel", "_bn_stats_kernel"}
    assert_close(y, y64, reduction=24 + 1, name="y")
    mean, var = batch_norm_stats_from_partials(partials)
    mean64, var64 = _stats64(y.double())  # of the output as stored, as the epilogue's
    scale = max(y.double().abs().max().item(), 1.0)
    assert_close(mean, mean64, reduction=105, scale=scale, name="mean")
    assert_close(var, var64, reduction=105, scale=scale ** 2, name="var")
    with LaunchRecorder() as rec:  # unforced (the interpreter's rule): the generic kernel's epilogue
        conv2d_forward(x, w, b, stats=True)
    assert set(rec.names()) == {"_conv_fwd_kernel"}
