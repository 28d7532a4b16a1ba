"""The TMA-fed stride-1 KxK path (kernels/conv_tma.py, race path "tma_kxk"): forward with
bias, residual and ReLU, the data-grad (with the ReLU mask) and the split weight-grad
against float64 torch, with the path forced; padding at all four edges (boxes at negative coordinates and past the
image's end), odd sizes that are no multiple of the patch, 3x3 and 5x5, dilation, batches;
what the path refuses (the generic kernel then runs) and its patch rule on the nets' layers.

On the interpreter the family's config is a 4x4 patch by 16 channels, 16 deep: the
outputs here are 7 to 16 pixels a side, several patches each, most cut by an edge."""

from __future__ import annotations

from contextlib import ExitStack

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from benchmarks.shapes import CONV
from kernels import configs, race
from kernels.conv import conv2d_forward, conv2d_input_grad, conv2d_weight_grad, conv_geometry
from kernels.conv_tma import MAX_PATCH_WASTE, eligible_tma_kxk, geometry_served, nhwc_descriptor, patch_waste
from tests.helpers import LaunchRecorder, assert_close
from tests.test_conv import run_and_compare

FWD, DGRAD, WGRAD = "_conv_tma_fwd_kernel", "_conv_tma_dgrad_kernel", "_conv_tma_wgrad_kernel"
GEMMS = {FWD, DGRAD, WGRAD, "_conv_fwd_kernel", "_conv_dgrad_kernel", "_conv_wgrad_kernel"}


def _forced() -> ExitStack:
    stack = ExitStack()
    for site in race.SITES:
        stack.enter_context(race.forced_path(site, "tma_kxk"))
    return stack


def _gemms(rec: LaunchRecorder) -> set:
    return {name for name in rec.names() if name in GEMMS}


def _data(*shapes, seed=0, dtype=torch.float32, device="cpu"):
    """Tensors rounded to `dtype` (channels_last where 4-D) and their exact float64 values."""
    gen = torch.Generator().manual_seed(seed)
    t64 = [torch.randn(*s, generator=gen).to(dtype).double() for s in shapes]
    dev = [t.to(device, dtype).contiguous(memory_format=torch.channels_last) if t.dim() == 4 else t.to(device, dtype)
           for t in t64]
    return t64, dev


# --------------------------------------------------------------------------- forward and gradients
@pytest.mark.parametrize("N, C, H, W, K, R, S, padding, dilation", [
    (2, 16, 11, 7, 24, 3, 3, 1, 1),     # 11x7 out: 3x2 patches, the last row and column cut
    (1, 8, 7, 11, 16, 5, 5, 2, 1),      # 5x5 'same': boxes two pixels past every edge
    (2, 24, 14, 15, 8, 3, 3, 0, 1),     # no padding: 12x13 out, a 24-channel tail at BLOCK_K 16
    (1, 16, 10, 11, 16, 3, 3, 2, 1),    # padding 2 > (R-1)/2: 12x13 out, the data-grad's padding 0
    (1, 8, 12, 12, 16, 3, 3, 2, 2),     # dilation 2: taps two pixels apart
    (2, 8, 8, 12, 8, 5, 3, (2, 1), 1),  # 5x3 with padding (2, 1)
    (1, 8, 8, 12, 8, 4, 4, "same", 1),  # torch's asymmetric 'same': 1 row above, 2 below
])
def test_forward_and_gradients_on_the_path(N, C, H, W, K, R, S, padding, dilation, device):
    """kernels.conv2d with bias, residual and ReLU, forward and every gradient against
    float64, the path forced: its forward, data-grad and weight-grad kernels ran."""
    with _forced(), LaunchRecorder() as rec:
        run_and_compare(N, C, H, W, K, R, S, 1, padding, 1, dilation=dilation, bias=True, residual=True,
                        activation="relu", channels_last=True, device=device, seed=N + C + H)
    assert _gemms(rec) == {FWD, DGRAD, WGRAD}, rec.names()


@pytest.mark.parametrize("dtype", [torch.float16, torch.float64])
def test_other_dtypes(dtype, device):
    """float16 (fp32 accumulation) and float64 (fp64 accumulation) through the same boxes."""
    with _forced(), LaunchRecorder() as rec:
        run_and_compare(2, 8, 11, 8, 16, 3, 3, 1, 1, 1, bias=True, residual=False, activation=None,
                        channels_last=False, dtype=dtype, device=device, seed=3)
    assert {FWD, DGRAD} <= _gemms(rec), rec.names()


def test_data_grad_with_the_relu_mask(device):
    """conv2d_input_grad with relu_input (the conv's input came out of a ReLU): zero where it
    is <= 0, exact zeros included, in the same store; dy read by boxes at negative
    coordinates (padding 3 > R-1: the transposed conv's padding is -1)."""
    (w64, dy64, m64), (w, dy, m) = _data((16, 8, 3, 3), (2, 16, 10, 12), (2, 8, 8, 10), seed=7, device=device)
    m[:, :, ::3] = 0.0
    m64[:, :, ::3] = 0.0
    x = torch.empty(2, 8, 8, 10, device=device)
    geo = conv_geometry(x, w, 1, 2)
    with _forced(), LaunchRecorder() as rec:
        dx = conv2d_input_grad(dy, w, geo, relu_input=m)
    assert _gemms(rec) == {DGRAD}
    ref = torch.nn.grad.conv2d_input(x.shape, w64, dy64, 1, 2) * (m64 > 0)
    assert_close(dx, ref, reduction=16 * 9, name="data-grad with ReLU mask")
    with _forced(), LaunchRecorder() as rec:
        geo3 = conv_geometry(torch.empty(2, 8, 8, 10, device=device), w, 1, 3)
        (dy3_64,), (dy3,) = _data((2, 16, 12, 14), seed=8, device=device)
        dx3 = conv2d_input_grad(dy3, w, geo3)
    assert _gemms(rec) == {DGRAD}
    assert_close(dx3, torch.nn.grad.conv2d_input(x.shape, w64, dy3_64, 1, 3), reduction=16 * 9, name="padding 3")


@pytest.mark.parametrize("split_k", [1, 5, 14])
def test_weight_grad_splits(split_k, device):
    """The weight-grad stored directly (1 split) and as fp32 partials summed by column_sum,
    the 2x3 = 6 patches of each image (4x4, at 7x11) shared unevenly, and 14 splits for 12 patches (two
    shares empty: they store zeros); 5x5 with padding 2 (x boxes two pixels past every edge)."""
    (x64, dy64), (x, dy) = _data((2, 8, 7, 11), (2, 16, 7, 11), seed=12, device=device)
    geo = conv_geometry(x, torch.empty(16, 8, 5, 5, device=device), 1, 2)
    with _forced(), LaunchRecorder() as rec:
        dw = conv2d_weight_grad(x, dy, geo, torch.float32, split_k=split_k)
    (launch,) = [la for la in rec.launches if la.name == WGRAD]
    assert launch.grid({"BLOCK_M": 16, "BLOCK_N": 16})[1] == split_k
    assert dw.shape == (16, 8, 5, 5) and dw.stride() == (200, 1, 40, 8)  # KRSC memory, as the generic kernel's
    assert_close(dw, torch.nn.grad.conv2d_weight(x64, (16, 8, 5, 5), dy64, 1, 2), reduction=2 * 7 * 11,
                 name=f"weight-grad, {split_k} splits")


def test_weight_grad_needs_both_operands_as_descriptors(device):
    """grad_out with a 68-byte pixel step (17 channels' worth): the weight-grad reads it by
    boxes too, so the path is no candidate there, while the forward (reading x) still is."""
    (x64,), (x,) = _data((2, 16, 8, 8), seed=13, device=device)
    dy = torch.randn(2, 8, 8, 17, device=device)[..., :16].permute(0, 3, 1, 2)
    geo = conv_geometry(x, torch.empty(16, 16, 3, 3, device=device), 1, 1)
    assert eligible_tma_kxk(geo, x) and not eligible_tma_kxk(geo, x, dy)
    with _forced(), LaunchRecorder() as rec:
        dw = conv2d_weight_grad(x, dy, geo, torch.float32)
    assert _gemms(rec) == {"_conv_wgrad_kernel"}
    assert_close(dw, torch.nn.grad.conv2d_weight(x64, (16, 16, 3, 3), dy.double().cpu(), 1, 1), reduction=128,
                 name="weight-grad")


def test_boxes_stop_at_the_views_edges_not_the_buffers(device):
    """x a channel slice of a wider buffer (its descriptor ends at the slice's 8th channel:
    the 16-deep box reads zeros past it, not the neighbouring channels), y written into a
    channel slice of another (the pointer epilogue leaves the channels around it alone)."""
    (x64, w64, b64), (_, w, b) = _data((2, 8, 11, 12), (16, 8, 3, 3), (16,), seed=9, device=device)
    buf = torch.full((2, 24, 11, 12), 1e3, device=device).to(memory_format=torch.channels_last)
    buf[:, 8:16] = x64.to(device, torch.float32)
    x = buf[:, 8:16]
    out = torch.full((2, 40, 11, 12), 7.0, device=device).to(memory_format=torch.channels_last)
    assert nhwc_descriptor(x) is not None
    with _forced(), LaunchRecorder() as rec:
        conv2d_forward(x, w, b, 1, 1, out=out[:, 8:24])
    assert _gemms(rec) == {FWD}
    assert_close(out[:, 8:24], F.conv2d(x64, w64, b64, 1, 1), reduction=8 * 9 + 1, name="forward into a slice")
    assert (out[:, :8] == 7).all() and (out[:, 24:] == 7).all()


def test_every_launch_overwrites_its_output(device):
    """The persistent loop covers every tile once: an output full of NaN comes back finite."""
    (x64, w64), (x, w) = _data((2, 16, 15, 12), (8, 16, 3, 3), seed=10, device=device)
    out = torch.full((2, 8, 15, 12), float("nan"), device=device).to(memory_format=torch.channels_last)
    with _forced():
        conv2d_forward(x, w, None, 1, 1, out=out)
    assert_close(out, F.conv2d(x64, w64, None, 1, 1), reduction=16 * 9, name="forward over NaN")


@st.composite
def kxk_cases(draw):
    """Stride-1 KxK problems drawn from the output side: P and Q among the sizes the
    interpreter's 4x4 patch serves, the input then as large as the padding and dilation
    make it (so the data-grad's H x W may or may not be served: both dispatches occur)."""
    R, S = draw(st.sampled_from([(3, 3), (5, 5), (3, 5), (2, 2)]))
    dil = draw(st.sampled_from([(1, 1), (1, 1), (2, 1)]))
    pad = (draw(st.integers(0, dil[0] * (R - 1) // 2)), draw(st.integers(0, dil[1] * (S - 1) // 2)))
    P, Q = draw(st.sampled_from([4, 7, 8, 11, 12])), draw(st.sampled_from([4, 7, 8, 11, 12, 15]))
    H, W = P - 2 * pad[0] + dil[0] * (R - 1), Q - 2 * pad[1] + dil[1] * (S - 1)
    return dict(N=draw(st.integers(1, 2)), C=draw(st.sampled_from([8, 16, 24])), H=H, W=W,
                K=draw(st.sampled_from([8, 16, 40])), R=R, S=S, stride=1, padding=pad, dilation=dil, groups=1,
                bias=draw(st.booleans()), residual=draw(st.booleans()),
                activation=draw(st.sampled_from([None, "relu"])), channels_last=draw(st.booleans()),
                dtype=draw(st.sampled_from([torch.float32, torch.float32, torch.float64])))


@given(case=kxk_cases())
def test_tma_kxk_fuzz(case, device):
    """Forward and every gradient against float64 with the path forced; the forward always
    takes the path (its output is served), the data-grad exactly where H x W is served."""
    with _forced(), LaunchRecorder() as rec:
        run_and_compare(**case, device=device)
    x = torch.empty(case["N"], case["C"], case["H"], case["W"]).to(memory_format=torch.channels_last)
    geo = conv_geometry(x, torch.empty(case["K"], case["C"], case["R"], case["S"]), 1, case["padding"],
                        case["dilation"])
    assert geometry_served(geo)
    dgrad = DGRAD if geometry_served(geo, grad=True) else "_conv_dgrad_kernel"
    assert _gemms(rec) == {FWD, dgrad, WGRAD}, (rec.names(), case)


# --------------------------------------------------------------------------- refusals
@pytest.mark.parametrize("name, N, C, H, W, K, R, stride, padding, groups", [
    ("two groups", 2, 16, 8, 8, 16, 3, 1, 1, 2),
    ("stride 2", 2, 16, 15, 15, 16, 3, 2, 1, 1),
    ("12 channels in", 2, 12, 8, 8, 16, 3, 1, 1, 1),
    ("12 channels out", 2, 16, 8, 8, 12, 3, 1, 1, 1),
    ("1x1", 2, 16, 8, 8, 16, 1, 1, 0, 1),
    ("5x5 output, 4x4 patches waste 64%", 2, 16, 5, 5, 16, 3, 1, 1, 1),
    ("3x3 output, smaller than the patch", 2, 16, 3, 3, 16, 3, 1, 1, 1),
])
def test_refused_shapes_run_the_generic_kernel(name, N, C, H, W, K, R, stride, padding, groups, device):
    with _forced(), LaunchRecorder() as rec:
        run_and_compare(N, C, H, W, K, R, R, stride, padding, groups, bias=True, residual=False, activation="relu",
                        channels_last=True, device=device, seed=11)
    assert _gemms(rec) == {"_conv_fwd_kernel", "_conv_dgrad_kernel", "_conv_wgrad_kernel"}, (name, rec.names())


def _misaligned(device):
    """16 channels of a 20-channel channels_last buffer, starting at its second (4 bytes into
    a 16-byte line)."""
    return torch.randn(2, 8, 8, 20, device=device)[..., 1:17].permute(0, 3, 1, 2)


def _odd_pixel_stride(device):
    """16 channels of a 17-channel buffer: a pixel step of 68 bytes, no multiple of 16."""
    return torch.randn(2, 8, 8, 17, device=device)[..., :16].permute(0, 3, 1, 2)


def _expanded(device):
    """One image expanded to two (stride 0 between images: rows that overlap)."""
    return torch.randn(1, 8, 8, 16, device=device).permute(0, 3, 1, 2).expand(2, 16, 8, 8)


@pytest.mark.parametrize("view", [_misaligned, _odd_pixel_stride, _expanded])
def test_operands_no_descriptor_can_read_run_the_generic_kernel(view, device):
    """x (forward) and grad_out (data-grad) channels-innermost views a TMA descriptor
    cannot address (the launchers pass such views as they are): the path is not a
    candidate, the generic kernel runs, correct."""
    x = view(device)
    assert x.stride(1) == 1 and nhwc_descriptor(x) is None
    w = torch.randn(16, 16, 3, 3, device=device)
    geo = conv_geometry(x, w, 1, 1)
    assert geometry_served(geo) and geometry_served(geo, grad=True)
    with _forced(), LaunchRecorder() as rec:
        y = conv2d_forward(x, w, None, 1, 1)
        dx = conv2d_input_grad(x, w, geo)  # x read as a 16-channel grad_out
    assert _gemms(rec) == {"_conv_fwd_kernel", "_conv_dgrad_kernel"}, rec.names()
    x64, w64 = x.detach().double().cpu(), w.double().cpu()
    assert_close(y, F.conv2d(x64, w64, None, 1, 1), reduction=16 * 9, name="forward")
    assert_close(dx, torch.nn.grad.conv2d_input(x64.shape, w64, x64, 1, 1), reduction=16 * 9, name="data-grad")


# --------------------------------------------------------------------------- the patch rule on the nets
def test_patch_waste_by_hand():
    assert patch_waste(56, 56, 8, 8) == 0
    assert patch_waste(14, 14, 8, 8) == pytest.approx(1 - 196 / 256)   # 23.4%
    assert patch_waste(13, 13, 8, 8) == pytest.approx(1 - 169 / 256)   # 34.0%
    assert patch_waste(28, 28, 4, 16) == pytest.approx(1 - 784 / 896)  # 12.5%
    assert MAX_PATCH_WASTE == 0.25


def test_eligible_layers_of_the_nets_on_a_gpu(monkeypatch):
    """With the GPU configs' patches (8x16, 16x8, 8x8, 4x16): the stride-1 one-group KxK
    layers at 14x14 and larger; 13x13 (AlexNet conv3: 34% idle) and 7x7 (no 64-pixel patch
    fits) stay generic, as do the strided stems, AlexNet's two-group layers and the 1x1s."""
    monkeypatch.setattr(configs, "interpreting", lambda: False)
    eligible = []
    for s in CONV:
        x = torch.empty(s.x_shape(128), device="meta")
        geo = conv_geometry(x, torch.empty(s.w_shape(), device="meta"), s.stride, s.padding, 1, s.groups)
        if geometry_served(geo):
            assert geometry_served(geo, grad=True), s.name  # 'same' padding: the input is the output's size
            eligible.append(s.name)
    assert eligible == ["googlenet.conv3", "googlenet.inception3a.branch2.1", "googlenet.inception3a.branch3.1",
                        "googlenet.inception4a.branch2.1", "googlenet.inception4a.branch3.1",
                        "resnet50.layer1.0.conv2", "resnet50.layer3.1.conv2"]


def test_interpreter_default_is_the_generic_path(device):
    """No forcing, no table, no race: an eligible shape runs the generic kernel (the path
    replaces it only where forced or measured)."""
    x = torch.randn(2, 8, 8, 8, device=device).to(memory_format=torch.channels_last)
    w = torch.randn(8, 8, 3, 3, device=device)
    assert eligible_tma_kxk(conv_geometry(x, w, 1, 1), x)
    with LaunchRecorder(execute=False) as rec:
        conv2d_forward(x, w, None, 1, 1)
    assert _gemms(rec) == {"_conv_fwd_kernel"}


def test_autotuning_prunes_to_patches_that_serve_the_layer(monkeypatch):
    """On an H100 (227 KB of shared memory), bf16: GoogLeNet's 14x14 5x5 branch (16 channels
    in) keeps the one 8x8-patch config with a 16-deep step (no 16-pixel side fits inside
    14); a 28x28, 96-channel layer keeps every
    config (each patch tiles 28x28 with at most 23% idle); a 13x13 output none, so the first
    that fits stays (the launch still runs, correct); float64 its one tile; the weight-grad
    the patches that fit inside 14x14 (its reduction step)."""
    import kernels.configs as kc
    from kernels.conv_tma import fp64_fits, prune_patches

    monkeypatch.setattr(kc, "_shared_limit", lambda device: 232448)
    bf16 = {"a_src": object(), "b_src": object(), "b_ptr": torch.empty(1, dtype=torch.bfloat16)}

    def fwd(P, C, **kw):
        return prune_patches(kc.CONV_TMA, {**bf16, "P": P, "Q": P, "C": C}, sizes=("P", "Q"), reduced="C", **kw)

    assert [c.kwargs["BLOCK_K"] for c in fwd(14, 16)] == [16]
    assert fwd(28, 96) == kc.CONV_TMA
    assert fwd(13, 256) == kc.CONV_TMA[:1]
    assert [fp64_fits(c) for c in fwd(56, 64, FP64=True)] == [True]
    wgrad = prune_patches(kc.CONV_TMA_WGRAD, {**bf16, "P": 14, "Q": 14}, sizes=("P", "Q"), reduced=None)
    assert [(c.kwargs["BLOCK_H"], c.kwargs["BLOCK_W"]) for c in wgrad] == [(8, 8), (8, 8), (8, 8), (4, 8)]  # 16 > 14
