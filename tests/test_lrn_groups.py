"""The channels-innermost LRN kernels (`kernels.lrn._lrn_groups_*`) against float64 torch.

Which layouts reach them (dense channels-innermost memory) and which the [P, C]-tile
kernels; channel counts giving groups of 1 and 8 channels (1, 3, 5, 64, 96), windows wider
than the channels, even windows, strided views of either memory format, fp32 and fp64,
empty batches; torch's pow rules under each compiled-in beta flag (negative scales,
integer / odd / zero / one betas, zero scales).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import kernels
from kernels.lrn import channels_innermost
from tests.helpers import VIEW_KINDS, LaunchRecorder, assert_close, view_fanout, view_recipe

GROUP_KERNELS = {"_lrn_groups_fwd_kernel", "_lrn_groups_bwd_kernel"}
TILE_KERNELS = {"_lrn_fwd_kernel", "_lrn_bwd_kernel"}


def run_lrn(shape, view, layout, size, alpha, beta, k, dtype, device, seed=0):
    """x (and the upstream gradient) as a (kind, dim) view of a leaf in `layout`; returns the
    LRN kernels launched. Forward and gradient checked against float64 torch."""
    gen = torch.Generator().manual_seed(seed)
    leaf_shape, fn = view_recipe(shape, *view)
    leaf64 = torch.randn(leaf_shape, generator=gen, dtype=torch.float64).mul(2).to(dtype).double()
    if layout == "channels_last":
        leaf64 = leaf64.contiguous(memory_format=torch.channels_last)
    x64 = leaf64.requires_grad_()
    x = leaf64.detach().to(device, dtype).clone(memory_format=torch.preserve_format).requires_grad_()
    gy64 = torch.randn(shape, generator=gen, dtype=torch.float64).to(dtype).double()
    with LaunchRecorder() as rec:
        y = kernels.local_response_norm(fn(x), size, alpha, beta, k)
        y.backward(gy64.to(device, dtype))
    y64 = F.local_response_norm(fn(x64), size, alpha, beta, k)
    y64.backward(gy64)
    assert_close(y, y64, reduction=size, name=f"lrn forward {view} {layout}")
    assert_close(x.grad, x64.grad, reduction=2 * size * view_fanout(shape, *view), name=f"lrn grad {view} {layout}")
    return set(rec.names()) & (GROUP_KERNELS | TILE_KERNELS)


def expected_kernels(x: torch.Tensor) -> set[str]:
    """What the launcher must pick for x: the group kernels when the dense copy it works
    on is channels-innermost, else the tile kernels; none for an empty x."""
    if x.numel() == 0:
        return set()
    return GROUP_KERNELS if channels_innermost(kernels._utils.dense(x)) else TILE_KERNELS


# Weighted toward the group kernels' inputs (channels_last, dense, a non-empty batch).
@settings(max_examples=40)
@given(C=st.sampled_from([1, 3, 5, 64, 96]), size=st.sampled_from([1, 2, 3, 4, 5, 6, 7, 8]),
       N=st.sampled_from([2, 1, 2, 0]), H=st.integers(1, 3), W=st.integers(1, 3),
       layout=st.sampled_from(["channels_last", "channels_last", "contiguous"]),
       view=st.tuples(st.sampled_from(("dense", *VIEW_KINDS)), st.integers(0, 3)),
       dtype=st.sampled_from([torch.float32, torch.float64]),
       alpha=st.sampled_from([1e-4, 0.5, 2.0]), beta=st.sampled_from([0.75, 0.0, 1.0, 2.0, 3.0, -0.5]),
       k=st.sampled_from([2.0, 1.0, 0.5]))
def test_lrn_groups_fuzz(C, size, N, H, W, layout, view, dtype, alpha, beta, k, device):
    shape = (N, C, H, W)
    leaf_shape, fn = view_recipe(shape, *view)
    probe = torch.empty(leaf_shape)
    if layout == "channels_last":
        probe = probe.contiguous(memory_format=torch.channels_last)
    launched = run_lrn(shape, view, layout, size, alpha, beta, k, dtype, device)
    assert launched == expected_kernels(fn(probe)), f"launched {launched} for {view} {layout}"


@pytest.mark.parametrize("C", [1, 3, 8, 12, 96])
@pytest.mark.parametrize("size", [1, 4, 5, 9])
def test_lrn_groups_channels_last_windows(C, size, device):
    """Every group width (C = 1, 3: 1; 12: 4; 8, 96: 8) with windows shorter than, as long
    as and longer than a group, and wider than all the channels."""
    launched = run_lrn((2, C, 3, 2), ("dense", 0), "channels_last", size, 1.5, 0.75, 2.0, torch.float32, device)
    assert launched == GROUP_KERNELS


@pytest.mark.parametrize("x, alpha, beta, k", [
    (torch.ones(1, 3, 2), -30.0, 2.0, 1.0),                               # negative scale, integer power
    (torch.tensor([[[0.5, -1.0], [1.5, -0.7], [-2.0, 0.9]]]), -30.0, 3.0, 1.0),  # odd power: signs
    (torch.tensor([[[0.5, -1.0], [1.5, -0.7], [-2.0, 0.9]]]), -30.0, 2.5, 1.0),  # fractional: NaN, as torch
    (torch.tensor([[[0.5, -1.0], [1.5, -0.7], [-2.0, 0.9]]]), -30.0, 1.0, 1.0),  # beta 1: beta - 1 is zero
    (torch.zeros(1, 3, 2), 1e-4, 0.0, 0.0),                              # 0**0 = 1
    (torch.zeros(1, 3, 2), 1e-4, 0.5, 0.0),                              # 0 / 0: NaN, as torch
    (torch.zeros(1, 3, 2), 1e-4, -0.5, 0.0),                             # 0 / inf = 0, grad NaN
    (torch.zeros(1, 3, 2), 1e-4, -1.0, 0.0),                             # 0 / inf = 0, grad 0 * inf
    (torch.tensor([[[0.0, 1.0], [0.0, -1.0], [2.0, 0.0]]]), 1.0, 1.0, 0.0),  # scale 0 at some x = 0
    (torch.tensor([[[0.0, 1.0], [0.0, -1.0], [2.0, 0.0]]]), 1.0, 2.0, 0.0),  # even beta at scale 0
], ids=["alpha<0 beta=2", "alpha<0 beta=3", "alpha<0 beta=2.5", "alpha<0 beta=1", "k=0 beta=0", "k=0 beta=0.5",
        "k=0 beta=-0.5", "k=0 beta=-1", "k=0 beta=1 mixed", "k=0 beta=2 mixed"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the interpreter's numpy meets the 0/0 and x/0 too
def test_lrn_groups_power_semantics_like_torch(x, alpha, beta, k, dtype, device):
    """Numbers where torch gives numbers, NaN where it gives NaN, forward and backward, on
    the group kernels (x as [1, 3, 2, 1] channels_last)."""
    x64 = x.detach().double().view(1, 3, 2, 1).contiguous(memory_format=torch.channels_last).requires_grad_()
    xl = x64.detach().to(device, dtype).clone(memory_format=torch.preserve_format).requires_grad_()
    with LaunchRecorder() as rec:
        y = kernels.local_response_norm(xl, 3, alpha, beta, k)
        g = torch.linspace(-1, 1, x.numel(), dtype=torch.float64).view(1, 3, 2, 1)
        y.backward(g.to(device, dtype))
    y64 = F.local_response_norm(x64, 3, alpha, beta, k)
    y64.backward(g)
    assert set(rec.names()) & (GROUP_KERNELS | TILE_KERNELS) == GROUP_KERNELS
    assert_close(y, y64, reduction=3, name="forward")
    assert_close(xl.grad, x64.grad, reduction=6, name="grad x")


def test_lrn_groups_serve_one_position_images_and_5d(device):
    """[N, C, 1] (contiguous is channels-innermost at one position) and channels_last_3d."""
    for shape, fmt in (((3, 24, 1), torch.contiguous_format), ((2, 16, 2, 3, 2), torch.channels_last_3d)):
        x64 = torch.randn(shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
        x = x64.float().contiguous(memory_format=fmt).to(device).requires_grad_()
        with LaunchRecorder() as rec:
            y = kernels.local_response_norm(x, 5, 1.0, 0.75, 1.0)
            y.sum().backward()
        assert set(rec.names()) & (GROUP_KERNELS | TILE_KERNELS) == GROUP_KERNELS, shape
        x64.requires_grad_()
        F.local_response_norm(x64, 5, 1.0, 0.75, 1.0).sum().backward()
        assert_close(y, F.local_response_norm(x64.detach(), 5, 1.0, 0.75, 1.0), reduction=5, name=f"{shape}")
        assert_close(x.grad, x64.grad, reduction=10, name=f"grad {shape}")
