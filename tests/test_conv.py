"""kernels.conv2d against a float64 torch reference: forward and every gradient."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

import kernels
from benchmarks.shapes import CONV as CONV_SHAPES
from kernels import conv as conv_mod
from kernels._utils import dot_precision, needs_int64
from tests.helpers import assert_close

from .conftest import HAS_CUDA


def _reference(x, w, b, r, stride, padding, groups, activation):
    y = F.conv2d(x, w, b, stride, padding, 1, groups)
    if r is not None:
        y = y + r
    return F.relu(y) if activation == "relu" else y


def run_and_compare(N, C, H, W, K, R, S, stride, padding, groups, *, bias, residual, activation,
                    channels_last, dtype=torch.float32, device="cpu", tf32=False, seed=0):
    """Run forward + backward of kernels.conv2d and of float64 torch; compare all of them."""
    gen = torch.Generator().manual_seed(seed)
    # Inputs are drawn, then rounded to `dtype`; the reference sees exactly those values in
    # float64, so input rounding is not mistaken for kernel error.
    rnd = lambda *shape: torch.randn(*shape, generator=gen).to(dtype).to(torch.float64)
    x64, w64 = rnd(N, C, H, W), rnd(K, C // groups, R, S)
    b64 = rnd(K) if bias else None
    y_shape = F.conv2d(x64, w64, None, stride, padding, 1, groups).shape
    r64 = rnd(*y_shape) if residual else None
    gy64 = rnd(*y_shape)

    leaves64 = [t.clone().requires_grad_() if t is not None else None for t in (x64, w64, b64, r64)]
    leaves = [t.to(device, dtype).requires_grad_() if t is not None else None for t in (x64, w64, b64, r64)]
    x_in = leaves[0].to(memory_format=torch.channels_last) if channels_last else leaves[0]
    y = kernels.conv2d(x_in, leaves[1], leaves[2], stride, padding, 1, groups,
                       residual=leaves[3], activation=activation)
    y_ref = _reference(*leaves64, stride, padding, groups, activation)
    y.backward(gy64.to(device, dtype))
    y_ref.backward(gy64)

    P, Q = y_shape[2:]
    cg, kg = C // groups, K // groups
    assert_close(y, y_ref, reduction=cg * R * S + 2, tf32=tf32, name="forward")
    assert_close(leaves[0].grad, leaves64[0].grad, reduction=kg * R * S, tf32=tf32, name="grad x")
    assert_close(leaves[1].grad, leaves64[1].grad, reduction=N * P * Q, tf32=tf32, name="grad weight")
    if bias:
        assert_close(leaves[2].grad, leaves64[2].grad, reduction=N * P * Q, name="grad bias")
    if residual:
        assert_close(leaves[3].grad, leaves64[3].grad, name="grad residual")
    assert y.is_contiguous(memory_format=torch.channels_last)


@st.composite
def conv_cases(draw):
    """Valid conv problems only: the input is drawn at least as large as the padded kernel."""
    groups = draw(st.sampled_from([1, 2]))
    cg = draw(st.sampled_from([1, 2, 3, 5, 8, 16, 19]))
    kg = draw(st.integers(1, 20))
    R = draw(st.integers(1, 11))
    S = draw(st.sampled_from([R, draw(st.integers(1, 11))]))
    ph = draw(st.integers(0, min(3, R - 1)))
    pw = draw(st.integers(0, min(3, S - 1)))
    H = draw(st.integers(max(1, R - 2 * ph), max(1, R - 2 * ph) + 7))
    W = draw(st.integers(max(1, S - 2 * pw), max(1, S - 2 * pw) + 7))
    stride = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    return dict(N=draw(st.integers(1, 2)), C=cg * groups, H=H, W=W, K=kg * groups, R=R, S=S,
                stride=stride, padding=(ph, pw), groups=groups,
                bias=draw(st.booleans()), residual=draw(st.booleans()),
                activation=draw(st.sampled_from([None, "relu"])), channels_last=draw(st.booleans()))


@given(case=conv_cases())
def test_conv2d_fuzz(case, device):
    run_and_compare(**case, device=device)


@pytest.mark.parametrize("name, case", [
    ("alexnet-stem-like C=3 11x11/4", dict(N=1, C=3, H=23, W=23, K=8, R=11, S=11, stride=4, padding=2, groups=1)),
    ("resnet-stem-like C=3 7x7/2", dict(N=2, C=3, H=13, W=11, K=16, R=7, S=7, stride=2, padding=3, groups=1)),
    ("two-tower 5x5 groups=2", dict(N=1, C=32, H=7, W=7, K=32, R=5, S=5, stride=1, padding=2, groups=2)),
    ("1x1 stride 2 (phases no tap reaches)", dict(N=2, C=16, H=9, W=8, K=24, R=1, S=1, stride=2, padding=0, groups=1)),
    ("1x1 stride 1 plain GEMM", dict(N=2, C=40, H=5, W=5, K=33, R=1, S=1, stride=1, padding=0, groups=1)),
    ("3x3 stride 3 padding 3", dict(N=1, C=17, H=6, W=7, K=5, R=3, S=3, stride=3, padding=2, groups=1)),
])
def test_conv2d_named_cases(name, case, device):
    run_and_compare(**case, bias=True, residual=True, activation="relu", channels_last=False, device=device)


def test_conv2d_float16(device):
    run_and_compare(2, 24, 7, 9, 20, 3, 3, 1, 1, 1, bias=True, residual=True, activation="relu",
                    channels_last=True, dtype=torch.float16, device=device)


def test_weight_grad_split_k_matches_single(device):
    """Both weight-grad paths: fp32 partials summed by the Triton column sum, and direct."""
    x = torch.randn(2, 5, 16, 16, device=device)
    w = torch.randn(7, 5, 3, 3, device=device)
    geo = conv_mod.conv_geometry(x, w, 1, 1)
    g = torch.randn(2, 7, 16, 16, device=device).contiguous(memory_format=torch.channels_last)
    ref = torch.nn.grad.conv2d_weight(x.double(), w.shape, g.double(), 1, 1)
    for split in (1, 3, 7):
        dw = conv_mod.conv2d_weight_grad(x, g, geo, torch.float32, split_k=split)
        assert_close(dw, ref, reduction=2 * 16 * 16, name=f"grad weight split_k={split}")


def test_int64_indexing_path(monkeypatch, device):
    """The int64 offset path computes the same result (the real >2**31 case runs on GPU)."""
    monkeypatch.setattr(conv_mod, "needs_int64", lambda *t: True)
    run_and_compare(1, 4, 6, 6, 8, 3, 3, 2, 1, 1, bias=True, residual=True, activation="relu",
                    channels_last=False, device=device)


def test_needs_int64_counts_elements():
    assert needs_int64(torch.empty(2**31, device="meta"))
    assert not needs_int64(torch.empty(2**31 - 1, device="meta"))
    assert needs_int64(torch.empty(1, 2**16, 2**15 + 1, device="meta").transpose(1, 2))


def test_tf32_follows_cudnn_flag():
    torch.backends.cudnn.allow_tf32 = True
    assert dot_precision(torch.float32) == "tf32"
    torch.backends.cudnn.allow_tf32 = False
    assert dot_precision(torch.float32) == "ieee"
    assert dot_precision(torch.float16) == "tf32"  # half inputs use the tensor cores either way


def test_module_state_dict_interchanges_with_nn_conv2d(device):
    ref = torch.nn.Conv2d(6, 8, 3, stride=2, padding=1, groups=2).to(device)
    mod = kernels.Conv2d(6, 8, 3, stride=2, padding=1, groups=2, activation="relu").to(device)
    mod.load_state_dict(ref.state_dict())
    assert list(mod.state_dict()) == list(ref.state_dict())
    x = torch.randn(2, 6, 9, 9, device=device)
    expected = F.relu(ref.double()(x.double()))
    assert_close(mod(x), expected, reduction=27, name="Conv2d module")


# --------------------------------------------------------------------------- bad input
def _bad(**over):
    args = dict(x=torch.randn(2, 4, 8, 8), weight=torch.randn(6, 4, 3, 3))
    args.update(over)
    return args


@pytest.mark.parametrize("args, kwargs, exc, words", [
    (_bad(x=torch.randn(4, 8, 8)), {}, ValueError, "x must have 4 dimensions"),
    (_bad(weight=torch.randn(6, 3, 3, 3)), {}, ValueError, "channel mismatch"),
    (_bad(weight=torch.randn(8, 4, 3, 3)), {"groups": 4}, ValueError, "channel mismatch"),
    (_bad(weight=torch.randn(5, 2, 3, 3)), {"groups": 2}, ValueError, "groups=2 must divide"),
    (_bad(weight=torch.randn(6, 4, 11, 11)), {}, ValueError, "larger than the padded input"),
    (_bad(x=torch.randint(0, 3, (2, 4, 8, 8))), {}, TypeError, "x must be float32"),
    (_bad(weight=torch.randn(6, 4, 3, 3, dtype=torch.float64)), {}, TypeError, "weight must be float32"),
    (_bad(weight=torch.randn(6, 4, 3, 3).half()), {}, TypeError, "weight has dtype"),
    (_bad(), {"dilation": 2}, ValueError, "dilation"),
    (_bad(), {"stride": 0}, ValueError, "stride"),
    (_bad(), {"padding": (1, 2, 3)}, TypeError, "padding"),
    (_bad(), {"residual": torch.randn(2, 6, 8, 8)}, ValueError, "residual must have the output's shape"),
    (_bad(), {"bias": torch.randn(5)}, ValueError, "bias must have 6"),
    (_bad(), {"activation": "gelu"}, ValueError, "activation"),
])
def test_bad_input_raises_with_names(args, kwargs, exc, words):
    with pytest.raises(exc, match=words):
        kernels.conv2d(args["x"], args["weight"], **kwargs)


@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device to mix devices")
def test_mixed_devices_raise():
    with pytest.raises(ValueError, match="weight is on"):
        kernels.conv2d(torch.randn(1, 2, 4, 4, device="cuda"), torch.randn(2, 2, 3, 3))


# --------------------------------------------------------------------------- GPU
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("shape", [pytest.param(s, id=s.name) for s in CONV_SHAPES])
def test_conv2d_real_layers_gpu(shape, dtype):
    tf32 = dtype == torch.float32 and torch.backends.cudnn.allow_tf32
    run_and_compare(4, shape.C, shape.H, shape.width, shape.K, shape.R, shape.kw, shape.stride,
                    shape.padding, shape.groups, bias=True, residual=True, activation="relu",
                    channels_last=True, dtype=dtype, device="cuda", tf32=tf32)


@pytest.mark.gpu
def test_conv2d_int64_sized_gpu():
    """An input of more than 2**31 elements (4.3 GB in fp16): offsets must not wrap."""
    x = torch.randn(1, 8, 16384, 16400, device="cuda", dtype=torch.float16)
    assert x.numel() > 2**31
    w = torch.randn(4, 8, 3, 3, device="cuda", dtype=torch.float16)
    y = kernels.conv2d(x, w, padding=1)
    # Compare the far corner, where int32 offsets would wrap, on a float64 crop.
    crop = x[:, :, -6:, -6:].double()
    ref = F.conv2d(F.pad(crop, (0, 1, 0, 1)), w.double())  # the last 5x5 outputs
    assert_close(y[:, :, -5:, -5:], ref, reduction=72, name="int64 corner")
    del x, y
    torch.cuda.empty_cache()
