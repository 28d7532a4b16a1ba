"""Every GPU config of every autotuned kernel, each forced in turn, against a float64
reference at small odd sizes (partial tiles everywhere; the flattened-K and split-K paths
too). Autotuning or a tuned table may pick any of them, so each must be right (triton has
miscompiled some tile shapes only: pytorch#173068). On the CPU the interpreter runs them
in fp32 IEEE; on a GPU, bf16 (the GPU check runs this file)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from kernels import configs
from kernels.conv import conv2d_forward, conv2d_input_grad, conv2d_weight_grad, conv_geometry
from kernels.inception import pointwise_forward
from kernels.lrn import lrn_backward, lrn_forward
from kernels.residual import add_relu_forward, relu_grad

from .helpers import assert_close
from .test_batchnorm import _pair as _bn_pair
from .test_batchnorm import check_bn_relu_pool, check_step
from .test_pool import check_lrn_pool, check_pool


def _dtype(device):
    return torch.bfloat16 if device == "cuda" else torch.float32


def _inputs(device, *shapes, scale=1.0):
    g = torch.Generator().manual_seed(0)
    out = []
    for shape in shapes:
        t = torch.randn(shape, generator=g, dtype=torch.float64) * scale
        out.append(t.to(device=device, dtype=_dtype(device)).contiguous(
            memory_format=torch.channels_last if len(shape) == 4 else torch.contiguous_format))
    return out


def _conv_case(device, C):
    x, w, dy = _inputs(device, (2, C, 9, 7), (6, C, 3, 3), (2, 6, 5, 4))
    return x, w, dy, conv_geometry(x, w, 2, 1)


def _d(t):
    return t.detach().double().cpu()


def _run_conv_gemm(device, kernel):
    if kernel == "_conv_fwd_kernel":
        for C in (3, 20):  # flattened K (C < 16) and tap by tap
            x, w, _, _ = _conv_case(device, C)
            assert_close(conv2d_forward(x, w, None, 2, 1), F.conv2d(_d(x), _d(w), None, 2, 1), reduction=C * 9)
    elif kernel == "_conv_dgrad_kernel":
        x, w, dy, geo = _conv_case(device, 20)
        ref = torch.nn.grad.conv2d_input(x.shape, _d(w), _d(dy), 2, 1)
        assert_close(conv2d_input_grad(dy, w, geo), ref, reduction=6 * 9)
    else:  # the Inception pointwise GEMM, on x and on its 3x3/1/1 max-pool
        x, w, b = _inputs(device, (2, 19, 5, 6), (10, 19), (10,))
        for pool3 in (False, True):
            src = F.max_pool2d(_d(x), 3, 1, 1) if pool3 else _d(x)
            ref = F.relu(F.conv2d(src, _d(w)[:, :, None, None], _d(b)))
            assert_close(pointwise_forward(x, w, b, pool3=pool3), ref, reduction=19)


def _run_wgrad(device):
    x, w, dy, geo = _conv_case(device, 20)
    ref = torch.nn.grad.conv2d_weight(_d(x), w.shape, _d(dy), 2, 1)
    for split in (1, 3):  # the gradient stored directly, and fp32 partials summed
        assert_close(conv2d_weight_grad(x, dy, geo, x.dtype, split_k=split), ref, reduction=2 * 5 * 4)


def _run_conv1x1(device, kernel):
    """The 1x1 GEMM path (its kernel's forced config picks the path): 24 channels in, 72 out
    (16-byte pixel rows: TMA-fed), 300 pixels; the epilogues, the ReLU mask, and a weight-grad
    stored directly and as two split shares (256 + 44 rows) of fp32 partials."""
    x, w, b, r, dy, m = _inputs(device, (6, 24, 5, 10), (72, 24, 1, 1), (72,), (6, 72, 5, 10), (6, 72, 5, 10),
                                (6, 24, 5, 10))
    geo = conv_geometry(x, w)
    if kernel == "_conv1x1_fwd_kernel":
        ref = F.relu(F.conv2d(_d(x), _d(w), _d(b)) + _d(r))
        assert_close(conv2d_forward(x, w, b, residual=r, activation="relu"), ref, reduction=24 + 2)
    elif kernel == "_conv1x1_dgrad_kernel":
        ref = torch.nn.grad.conv2d_input(x.shape, _d(w), _d(dy)) * (_d(m) > 0)
        assert_close(conv2d_input_grad(dy, w, geo, relu_input=m), ref, reduction=72)
    else:
        ref = torch.nn.grad.conv2d_weight(_d(x), w.shape, _d(dy))
        for split in (1, 2):
            assert_close(conv2d_weight_grad(x, dy, geo, x.dtype, split_k=split), ref, reduction=300)


def _run_conv_tma(device, kernel):
    """The TMA KxK path (its kernel's forced config picks the path): 3x3, pad 1, 24 channels
    in, 40 out, an 11x12 image (patches cut by the image's edges), the epilogues, the ReLU
    mask, and a weight-grad stored directly and as 3 splits of partials."""
    x, w, b, r, dy, m = _inputs(device, (2, 24, 11, 12), (40, 24, 3, 3), (40,), (2, 40, 11, 12), (2, 40, 11, 12),
                                (2, 24, 11, 12))
    geo = conv_geometry(x, w, 1, 1)
    if kernel == "_conv_tma_fwd_kernel":
        ref = F.relu(F.conv2d(_d(x), _d(w), _d(b), 1, 1) + _d(r))
        assert_close(conv2d_forward(x, w, b, 1, 1, residual=r, activation="relu"), ref, reduction=24 * 9 + 2)
    elif kernel == "_conv_tma_dgrad_kernel":
        ref = torch.nn.grad.conv2d_input(x.shape, _d(w), _d(dy), 1, 1) * (_d(m) > 0)
        assert_close(conv2d_input_grad(dy, w, geo, relu_input=m), ref, reduction=40 * 9)
    else:
        ref = torch.nn.grad.conv2d_weight(_d(x), w.shape, _d(dy), 1, 1)
        for split in (1, 3):  # the gradient stored directly, and fp32 partials summed
            assert_close(conv2d_weight_grad(x, dy, geo, x.dtype, split_k=split), ref, reduction=2 * 11 * 12)


def _run_mem_bound(device, kernel):
    x, r, g = _inputs(device, (3, 5, 7, 11), (3, 5, 7, 11), (3, 5, 7, 11))
    if kernel == "_add_relu_fwd_kernel":
        assert_close(add_relu_forward(x, r), F.relu(_d(x) + _d(r)))
    else:
        assert_close(relu_grad(g, x), torch.where(_d(x) > 0, _d(g), 0.0))


def _run_lrn(device, kernel):
    """The [P, C]-tile kernels on NCHW (7 channels), the group kernels on channels_last
    (24 channels: groups of 8, windows reaching into the neighbouring groups)."""
    if kernel.startswith("_lrn_groups"):
        x, dy = _inputs(device, (2, 24, 5, 3), (2, 24, 5, 3))
    else:
        x, dy = (t.contiguous() for t in _inputs(device, (2, 7, 5, 3), (2, 7, 5, 3)))
    xd = _d(x).requires_grad_()
    ref = F.local_response_norm(xd, 5, 1e-2, 0.75, 2.0)
    if kernel in ("_lrn_fwd_kernel", "_lrn_groups_fwd_kernel"):
        assert_close(lrn_forward(x, 5, 1e-2, 0.75, 2.0), ref, reduction=5)
    else:
        (ref_dx,) = torch.autograd.grad(ref, xd, _d(dy))
        assert_close(lrn_backward(dy, x, 5, 1e-2, 0.75, 2.0), ref_dx, reduction=10)


def _run_channel_tiles(device, kernel):
    """Max-pool, BatchNorm (+residual +ReLU, training) and the stem's BatchNorm + ReLU +
    max-pool on 70 channels (partial channel tiles), channels_last, forward and backward."""
    dtype = _dtype(device)
    x64 = torch.randn(3, 70, 9, 11, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    if kernel.startswith("_max_pool"):
        check_pool(x64, 3, 2, 1, False, dtype=dtype, device=device, layout="channels_last", seed=1)
    elif kernel == "_bn_relu_pool_fwd_kernel":
        check_bn_relu_pool(70, 9, 11, (3, 2, 1, False), dtype=dtype, layout="channels_last", seed=2, device=device)
    else:
        mod, ref = _bn_pair(70, dtype, device, "relu")
        check_step(mod.train(), ref.train(), x64, residual=True, activation="relu", dtype=dtype, device=device,
                   layout="channels_last", seed=3)


def _run_lrn_pool(device, kernel):
    """The fused LRN + max-pool (AlexNet's order) or max-pool + LRN (GoogLeNet's stem)."""
    order = "pool_lrn" if kernel == "_pool_lrn_fwd_kernel" else "lrn_pool"
    x64 = torch.randn(2, 11, 9, 11, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    check_lrn_pool(order, x64, (5, 1e-2, 0.75, 2.0), (3, 2, 0, True), dtype=_dtype(device), device=device,
                   layout="channels_last", seed=4)


LRN_POOL = ("_lrn_pool_fwd_kernel", "_lrn_pool_bwd_kernel", "_pool_lrn_fwd_kernel")


def _cases():
    for kernel, tuner in sorted(configs.TUNABLE.items()):
        for n, config in enumerate(configs._GPU[tuner.family]):
            yield pytest.param(kernel, config, id=f"{kernel}-{n}")


@pytest.mark.parametrize("kernel, config", list(_cases()))
def test_every_config_of_every_kernel(kernel, config, device):
    family = configs.TUNABLE[kernel].family
    with configs.forced_config(kernel, config):
        if family == "conv_gemm":
            _run_conv_gemm(device, kernel)
        elif family == "conv_wgrad":
            _run_wgrad(device)
        elif family in ("conv1x1", "conv1x1_wgrad"):
            _run_conv1x1(device, kernel)
        elif family in ("conv_tma", "conv_tma_wgrad"):
            _run_conv_tma(device, kernel)
        elif family == "mem_bound":
            _run_mem_bound(device, kernel)
        elif family == "channel_tiles":
            _run_channel_tiles(device, kernel)
        elif kernel in LRN_POOL:
            _run_lrn_pool(device, kernel)
        else:
            assert kernel in ("_lrn_fwd_kernel", "_lrn_bwd_kernel", "_lrn_groups_fwd_kernel",
                              "_lrn_groups_bwd_kernel"), f"no run for {kernel} ({family})"
            _run_lrn(device, kernel)
    assert configs.TUNABLE[kernel].best_config is config  # the forced config is what ran
