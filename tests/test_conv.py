"""kernels.conv2d against a float64 torch reference: forward and every gradient."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

import kernels
from benchmarks.shapes import CONV as CONV_SHAPES
from kernels import conv as conv_mod
from kernels._utils import dot_precision, needs_int64
from tests.helpers import VIEW_KINDS, assert_close, view_fanout, view_recipe

from .conftest import HAS_CUDA

ARGS = ("x", "weight", "bias", "residual")


def _reference(x, w, b, r, stride, padding, dilation, groups, activation):
    y = F.conv2d(x, w, b, stride, padding, dilation, groups)
    if r is not None:
        y = y + r
    return F.relu(y) if activation == "relu" else y


def run_and_compare(N, C, H, W, K, R, S, stride, padding, groups, *, bias, residual, activation,
                    channels_last, dilation=1, views=None, dtype=torch.float32, device="cpu", tf32=False,
                    seed=0):
    """Run forward + backward of kernels.conv2d and of float64 torch; compare all of them.

    `views` maps an argument name (x, weight, bias, residual) to a (kind, dim) of
    tests.helpers.view_recipe: that argument is passed as such a strided view of a leaf,
    in both precisions, and the leaves' gradients are compared."""
    gen = torch.Generator().manual_seed(seed)
    views = views or {}
    w_shape = (K, C // groups, R, S)
    with warnings.catch_warnings():  # torch's note that 'same' with an even kernel pads a copy
        warnings.simplefilter("ignore", UserWarning)
        y_shape = F.conv2d(torch.empty(N, C, H, W, device="meta"), torch.empty(w_shape, device="meta"),
                           None, stride, padding, dilation, groups).shape
    shapes = dict(x=(N, C, H, W), weight=w_shape, bias=(K,) if bias else None, residual=y_shape if residual else None)
    recipes = {a: view_recipe(shapes[a], *views.get(a, ("dense", 0))) for a in ARGS if shapes[a] is not None}
    # Inputs are drawn, then rounded to `dtype`; the reference sees exactly those values in
    # float64, so input rounding is not mistaken for kernel error.
    rnd = lambda *shape: torch.randn(*shape, generator=gen).to(dtype).to(torch.float64)
    leaves64 = {a: rnd(*leaf).requires_grad_() for a, (leaf, _) in recipes.items()}
    leaves = {a: t.detach().to(device, dtype).requires_grad_() for a, t in leaves64.items()}
    args64 = [recipes[a][1](leaves64[a]) if a in recipes else None for a in ARGS]
    args = [recipes[a][1](leaves[a]) if a in recipes else None for a in ARGS]
    if channels_last:
        args[0] = args[0].to(memory_format=torch.channels_last)
    gy64 = rnd(*y_shape)

    y = kernels.conv2d(args[0], args[1], args[2], stride, padding, dilation, groups,
                       residual=args[3], activation=activation)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        y_ref = _reference(*args64, stride, padding, dilation, groups, activation)
    y.backward(gy64.to(device, dtype))
    y_ref.backward(gy64)

    P, Q = y_shape[2:]
    cg, kg = C // groups, K // groups
    fan = {a: view_fanout(shapes[a], *views.get(a, ("dense", 0))) for a in recipes}
    assert_close(y, y_ref, reduction=cg * R * S + 2, tf32=tf32, name="forward")
    assert_close(leaves["x"].grad, leaves64["x"].grad, reduction=kg * R * S * fan["x"], tf32=tf32, name="grad x")
    assert_close(leaves["weight"].grad, leaves64["weight"].grad, reduction=N * P * Q * fan["weight"], tf32=tf32,
                 name="grad weight")
    if bias:
        assert_close(leaves["bias"].grad, leaves64["bias"].grad, reduction=N * P * Q * fan["bias"], name="grad bias")
    if residual:
        assert_close(leaves["residual"].grad, leaves64["residual"].grad, reduction=fan["residual"],
                     name="grad residual")
    assert y.is_contiguous(memory_format=torch.channels_last)


@st.composite
def conv_cases(draw, max_kernel=11, max_extra=7):
    """Valid conv problems only: the input is drawn at least as large as the padded, dilated
    kernel; padding 'same' (stride 1, any kernel parity and dilation) and 'valid' too."""
    groups = draw(st.sampled_from([1, 2]))
    cg = draw(st.sampled_from([1, 2, 3, 5, 8, 16, 19]))
    kg = draw(st.integers(1, 20))
    dilation = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    kmax = max_kernel if dilation == (1, 1) else 4
    R = draw(st.integers(1, kmax))
    S = draw(st.sampled_from([R, draw(st.integers(1, kmax))]))
    span_r, span_s = dilation[0] * (R - 1) + 1, dilation[1] * (S - 1) + 1
    mode = draw(st.sampled_from(["ints", "ints", "same", "valid"]))
    if mode == "same":
        stride, padding = (1, 1), "same"
        H, W = draw(st.integers(1, max_extra + 1)), draw(st.integers(1, max_extra + 1))
    else:
        stride = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
        ph = draw(st.integers(0, min(3, span_r - 1))) if mode == "ints" else 0
        pw = draw(st.integers(0, min(3, span_s - 1))) if mode == "ints" else 0
        padding = (ph, pw) if mode == "ints" else "valid"
        H = draw(st.integers(max(1, span_r - 2 * ph), max(1, span_r - 2 * ph) + max_extra))
        W = draw(st.integers(max(1, span_s - 2 * pw), max(1, span_s - 2 * pw) + max_extra))
    return dict(N=draw(st.integers(1, 2)), C=cg * groups, H=H, W=W, K=kg * groups, R=R, S=S,
                stride=stride, padding=padding, dilation=dilation, groups=groups,
                bias=draw(st.booleans()), residual=draw(st.booleans()),
                activation=draw(st.sampled_from([None, "relu"])), channels_last=draw(st.booleans()))


@given(case=conv_cases())
def test_conv2d_fuzz(case, device):
    run_and_compare(**case, device=device)


@st.composite
def view_choices(draw, names, ranks):
    """A (kind, dim) view per argument name: every argument strided in every way over the run."""
    return {n: (draw(st.sampled_from(VIEW_KINDS)), draw(st.integers(0, r - 1))) for n, r in zip(names, ranks)}


@given(case=conv_cases(max_kernel=3, max_extra=3), views=view_choices(ARGS, (4, 4, 1, 4)),
       dtype=st.sampled_from([torch.float32, torch.float64]))
def test_conv2d_strided_views_fuzz(case, views, dtype, device):
    """Every tensor argument, bias included, as a sliced / offset / transposed / expanded view,
    in float32 and float64: forward and every gradient against float64 torch."""
    run_and_compare(**{**case, "bias": True, "residual": True, "channels_last": False}, views=views,
                    dtype=dtype, device=device)


@pytest.mark.parametrize("name, case", [
    ("alexnet-stem-like C=3 11x11/4", dict(N=1, C=3, H=23, W=23, K=8, R=11, S=11, stride=4, padding=2, groups=1)),
    ("resnet-stem-like C=3 7x7/2", dict(N=2, C=3, H=13, W=11, K=16, R=7, S=7, stride=2, padding=3, groups=1)),
    ("two-tower 5x5 groups=2", dict(N=1, C=32, H=7, W=7, K=32, R=5, S=5, stride=1, padding=2, groups=2)),
    ("1x1 stride 2 (phases no tap reaches)", dict(N=2, C=16, H=9, W=8, K=24, R=1, S=1, stride=2, padding=0, groups=1)),
    ("1x1 stride 1 plain GEMM", dict(N=2, C=40, H=5, W=5, K=33, R=1, S=1, stride=1, padding=0, groups=1)),
    ("3x3 stride 3 padding 3", dict(N=1, C=17, H=6, W=7, K=5, R=3, S=3, stride=3, padding=2, groups=1)),
    # Dilation with stride: the data-grad's phases are reached by every tap_step-th tap only.
    ("3x3 stride 2 dilation 2 (gcd 2: half the phases untouched)",
     dict(N=1, C=17, H=9, W=8, K=5, R=3, S=3, stride=2, padding=1, dilation=2, groups=1)),
    ("3x2 stride (2,3) dilation (3,2), C=3 flat K",
     dict(N=2, C=3, H=10, W=11, K=4, R=3, S=2, stride=(2, 3), padding=(2, 1), dilation=(3, 2), groups=1)),
    ("4x4 stride 4 dilation 6", dict(N=1, C=16, H=20, W=19, K=3, R=4, S=4, stride=4, padding=0, dilation=6, groups=1)),
    ("even kernel 'same' dilation (1,3): asymmetric padding",
     dict(N=2, C=4, H=5, W=6, K=6, R=2, S=4, stride=1, padding="same", dilation=(1, 3), groups=2)),
    ("'valid'", dict(N=1, C=5, H=6, W=4, K=3, R=3, S=2, stride=(1, 2), padding="valid", groups=1)),
])
def test_conv2d_named_cases(name, case, device):
    run_and_compare(**case, bias=True, residual=True, activation="relu", channels_last=False, device=device)


@pytest.mark.parametrize("arg", ARGS)
@pytest.mark.parametrize("kind", [k for k in VIEW_KINDS if k != "dense"])
def test_conv2d_every_argument_as_a_view(arg, kind, device):
    """Each tensor argument alone as each kind of strided view (along its last dim, where a
    wrong stride shows): the fuzz below mixes them, this pins every one."""
    run_and_compare(2, 4, 5, 5, 6, 3, 2, 1, 1, 2, bias=True, residual=True, activation="relu",
                    channels_last=False, views={arg: (kind, -1)}, device=device)


def test_conv2d_noncontiguous_bias_regression(device):
    """The bias is read through its stride: [0, 2, ..., 10], not [0, 1, ..., 5]."""
    y = kernels.conv2d(torch.zeros(1, 1, 1, 1, device=device), torch.zeros(6, 1, 1, 1, device=device),
                       torch.arange(12.0, device=device)[::2])
    assert torch.equal(y.flatten().cpu(), torch.arange(0.0, 12.0, 2.0))


def test_conv2d_one_element_sequences_expand_like_torch(device):
    """F.conv2d takes stride=(2,), padding=[1], dilation=(2,) as the same value along h and w."""
    run_and_compare(1, 3, 7, 6, 4, 3, 2, (2,), [1], 1, dilation=(2,), bias=True, residual=True,
                    activation="relu", channels_last=False, dtype=torch.float64, device=device)


def test_conv2d_float64(device):
    """float64 accumulates in float64: errors at float64's roundoff, far below fp32's."""
    run_and_compare(2, 20, 6, 5, 7, 3, 3, (2, 1), 1, 1, bias=True, residual=True, activation="relu",
                    channels_last=True, dilation=(1, 2), dtype=torch.float64, device=device)


def test_conv2d_unbatched(device):
    gen = torch.Generator().manual_seed(1)
    x, w, b = torch.randn(4, 6, 5, generator=gen), torch.randn(6, 2, 3, 3, generator=gen), torch.randn(6, generator=gen)
    r = torch.randn(6, 6, 5, generator=gen)
    xl, wl = x.to(device).clone().requires_grad_(), w.to(device).clone().requires_grad_()
    y = kernels.conv2d(xl, wl, b.to(device), padding="same", groups=2, residual=r.to(device), activation="relu")
    x64, w64 = x.double().requires_grad_(), w.double().requires_grad_()
    ref = F.relu(F.conv2d(x64, w64, b.double(), padding="same", groups=2) + r.double())
    assert y.shape == ref.shape == (6, 6, 5)
    assert_close(y, ref, reduction=20, name="unbatched forward")
    g = torch.randn(ref.shape, generator=gen).double()
    y.backward(g.to(device, y.dtype))
    ref.backward(g)
    assert_close(xl.grad, x64.grad, reduction=27, name="unbatched grad x")
    assert_close(wl.grad, w64.grad, reduction=30, name="unbatched grad weight")


@pytest.mark.parametrize("N, C", [(0, 4), (2, 0)], ids=["N=0", "C=0"])
def test_conv2d_empty_batch_or_channels(N, C, device):
    """torch's results: an empty output for N=0, and for C=0 an empty [N, 0, P, Q] (torch's
    empty-input path); zero weight grads; bias grads summed over the (empty) output."""
    x = torch.randn(N, C, 5, 4, device=device, requires_grad=True)
    w = torch.randn(6, C // 2, 3, 3, device=device, requires_grad=True)
    b = torch.randn(6, device=device, requires_grad=True)
    y = kernels.conv2d(x, w, b, padding=1, groups=2, activation="relu")
    ref = F.relu(F.conv2d(x.detach().double(), w.detach().double(), b.detach().double(), padding=1, groups=2))
    assert_close(y, ref, name="forward")
    y.sum().backward()
    assert x.grad.shape == x.shape and w.grad.shape == w.shape
    assert_close(w.grad, torch.zeros(w.shape, dtype=torch.float64), name="grad weight")
    expected_db = torch.zeros(6, dtype=torch.float64)  # the output is empty either way
    assert_close(b.grad, expected_db, reduction=max(N * 20, 1), name="grad bias")


def test_conv2d_meta_launches_nothing():
    """Shape inference: meta in, meta out with torch's shape and our channels_last strides."""
    x = torch.empty(2, 6, 9, 8, device="meta", requires_grad=True)
    w = torch.empty(4, 3, 3, 2, device="meta", requires_grad=True)
    b = torch.empty(8, device="meta")[::2]
    for kw in (dict(stride=2, padding=1, dilation=(2, 1)), dict(padding="same", dilation=3)):
        y = kernels.conv2d(x, w, b, groups=2, activation="relu", **kw)
        ref = F.conv2d(x, w, b, groups=2, **kw)
        assert y.is_meta and y.shape == ref.shape and y.dtype == ref.dtype
        assert y.is_contiguous(memory_format=torch.channels_last)
        gx, gw = torch.autograd.grad(y.sum(), (x, w))
        assert gx.is_meta and gx.shape == x.shape and gw.is_meta and gw.shape == w.shape
    assert kernels.conv2d(x[0], w, groups=2).shape == (4, 7, 7)


def test_module_same_padding_and_refusals(device):
    ref = torch.nn.Conv2d(4, 6, (2, 3), padding="same", dilation=2, bias=True).to(device)
    mod = kernels.Conv2d(4, 6, (2, 3), padding="same", dilation=2).to(device)
    mod.load_state_dict(ref.state_dict())
    x = torch.randn(2, 4, 5, 7, device=device)
    assert_close(mod(x), ref.double()(x.double()), reduction=24, name="Conv2d padding='same'")
    with pytest.raises(ValueError, match="padding_mode must be 'zeros'"):
        kernels.Conv2d(4, 6, 3, padding_mode="reflect")


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


def test_weight_grad_split_count_follows_the_tile(monkeypatch, device):
    """Without a given or tuned count each config's grid brings its own split count, the
    kernel takes its share of rows from the grid (SPLIT_ROWS=0) and the sum reads exactly
    the splits that ran; a forced config fixes the count at its tile."""
    import triton

    from kernels import configs
    from tests.helpers import LaunchRecorder

    monkeypatch.setenv("CONVBENCH_TUNED", "off")
    monkeypatch.setattr(conv_mod, "sm_count", lambda device: 6)
    x = torch.randn(2, 5, 32, 40, device=device)
    w = torch.randn(7, 5, 3, 3, device=device)
    geo = conv_mod.conv_geometry(x, w, 1, 1)
    g = torch.randn(2, 7, 32, 40, device=device).contiguous(memory_format=torch.channels_last)
    ref = torch.nn.grad.conv2d_weight(x.double(), w.shape, g.double(), 1, 1)
    tile = configs.configs("conv_wgrad")[0].kwargs
    want = conv_mod._tile_splits(geo, x.device, tile["BLOCK_M"], tile["BLOCK_N"])
    assert want == 5  # one 64x64 tile (7 x 45 flattened columns) on 6 "SMs": 12, but 2560 rows // 512
    with LaunchRecorder() as rec:
        dw = conv_mod.conv2d_weight_grad(x, g, geo, torch.float32)
    assert_close(dw, ref, reduction=2 * 32 * 40, name="grad weight, the tile's split count")
    (launch,) = [la for la in rec.launches if la.name == "_conv_wgrad_kernel"]
    split_rows = lambda la: dict(zip(configs.TUNABLE["_conv_wgrad_kernel"].arg_names, la.args))["SPLIT_ROWS"]
    assert split_rows(launch) == 0  # from the grid
    assert launch.grid(tile)[1] == want
    small = triton.Config({"BLOCK_M": 16, "BLOCK_N": 16, "BLOCK_K": 32}, num_warps=4, num_stages=1)
    with configs.forced_config("_conv_wgrad_kernel", small), LaunchRecorder() as rec:
        dw = conv_mod.conv2d_weight_grad(x, g, geo, torch.float32)
    assert_close(dw, ref, reduction=2 * 32 * 40, name="grad weight, a forced tile's split count")
    (launch,) = [la for la in rec.launches if la.name == "_conv_wgrad_kernel"]
    assert conv_mod._tile_splits(geo, x.device, 16, 16) == 4  # 3 tiles of 16x16 fill 12 programs 4 times
    assert split_rows(launch) == triton.cdiv(2 * 32 * 40, 4)
    assert launch.grid(small.kwargs)[1] == 4


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
    for flag in (True, False):  # float64 is never rounded to TF32
        torch.backends.cudnn.allow_tf32 = flag
        assert dot_precision(torch.float64) == "ieee"


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
    (_bad(x=torch.randn(4, 8)), {}, ValueError, "x must have 3 or 4 dimensions"),
    (_bad(x=torch.randn(2, 4, 8, 8, 1)), {}, ValueError, "x must have 3 or 4 dimensions"),
    (_bad(x=torch.randn(2, 4, 0, 8)), {}, ValueError, "non-empty spatial"),
    (_bad(weight=torch.randn(0, 4, 3, 3)), {}, ValueError, "at least one output channel"),
    (_bad(weight=torch.randn(6, 3, 3, 3)), {}, ValueError, "channel mismatch"),
    (_bad(weight=torch.randn(8, 4, 3, 3)), {"groups": 4}, ValueError, "channel mismatch"),
    (_bad(weight=torch.randn(5, 2, 3, 3)), {"groups": 2}, ValueError, "groups=2 must divide"),
    (_bad(weight=torch.randn(6, 4, 11, 11)), {}, ValueError, "larger than the padded input"),
    (_bad(x=torch.randint(0, 3, (2, 4, 8, 8))), {}, TypeError, "x must be float32"),
    (_bad(weight=torch.randn(6, 4, 3, 3, dtype=torch.float64)), {}, TypeError, "weight has dtype"),
    (_bad(x=torch.randn(2, 4, 8, 8, dtype=torch.complex64)), {}, TypeError, "x must be float32"),
    (_bad(), {"bias": torch.randn(6, dtype=torch.float64)}, TypeError, "bias has dtype"),
    (_bad(), {"bias": torch.randn(6, 1)}, ValueError, "bias must have 1 dimensions"),
    (_bad(weight=torch.randn(6, 4, 3, 3).half()), {}, TypeError, "weight has dtype"),
    (_bad(), {"dilation": 0}, ValueError, "dilation must be >= 1"),
    (_bad(), {"dilation": 4}, ValueError, "larger than the padded input"),
    (_bad(), {"stride": 0}, ValueError, "stride must be >= 1"),
    (_bad(), {"padding": (1, 2, 3)}, TypeError, "padding"),
    (_bad(), {"padding": -1}, ValueError, "padding must be non-negative"),
    (_bad(), {"padding": "full"}, ValueError, "padding must be 'same', 'valid'"),
    (_bad(), {"padding": "same", "stride": 2}, ValueError, "padding='same' is not supported for strided"),
    (_bad(), {"groups": 0}, ValueError, "groups must be a positive int"),
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


# K loop shapes (kernels.conv.k_chunk): channels per tap -> the launched K_CHUNK. Each runs
# forward and both gradients against float64: tap by tap (64), runs of 16 (48, 80, the
# AlexNet-like 48 per group), 8 (24, over two groups), 4, 2 and single channels (12, 6, 3),
# with a 3x3 or 5x5 kernel so a K step spans taps, stride 2 for the data-grad's phases.
@pytest.mark.parametrize("C,K,groups,R,stride,chunks", [
    (64, 8, 1, 3, 1, {"_conv_fwd_kernel": 0, "_conv_dgrad_kernel": 8, "_conv_wgrad_kernel": 0}),
    (48, 16, 1, 3, 2, {"_conv_fwd_kernel": 16, "_conv_dgrad_kernel": 16, "_conv_wgrad_kernel": 16}),
    (80, 24, 1, 3, 1, {"_conv_fwd_kernel": 16, "_conv_dgrad_kernel": 8, "_conv_wgrad_kernel": 16}),
    (48, 96, 2, 5, 2, {"_conv_fwd_kernel": 8, "_conv_dgrad_kernel": 16, "_conv_wgrad_kernel": 8}),
    (12, 6, 1, 5, 1, {"_conv_fwd_kernel": 4, "_conv_dgrad_kernel": 2, "_conv_wgrad_kernel": 4}),
    (3, 5, 1, 3, 2, {"_conv_fwd_kernel": 1, "_conv_dgrad_kernel": 1, "_conv_wgrad_kernel": 1}),
])
def test_k_loop_runs_of_channels(C, K, groups, R, stride, chunks, device):
    from tests.helpers import LaunchRecorder

    with LaunchRecorder() as rec:
        run_and_compare(2, C, 7, 6, K, R, R, stride, 1, groups, bias=True, residual=False, activation="relu",
                        channels_last=True, device=device)
    launched = {la.name: la.kwargs["K_CHUNK"] for la in rec.launches if la.name in chunks}
    assert launched == chunks


def test_k_chunk_rule():
    assert [conv_mod.k_chunk(c) for c in (0, 1, 3, 6, 12, 16, 24, 48, 64, 96, 128, 192, 17)] == \
        [0, 1, 1, 2, 4, 16, 8, 16, 0, 16, 0, 0, 1]


def test_relu_mask_and_bias_grad_ride_on_the_gemms(device):
    """conv -> ReLU without a residual: the backward reads grad_out through the ReLU's mask
    inside the data-grad and weight-grad loads, and sums the bias grad in the weight-grad:
    no separate ReLU-backward or bias pass is launched."""
    from tests.helpers import LaunchRecorder

    with LaunchRecorder() as rec:
        run_and_compare(2, 8, 9, 7, 6, 3, 3, 2, 1, 1, bias=True, residual=False, activation="relu",
                        channels_last=True, device=device)
    by_name = {la.name: la.kwargs for la in rec.launches}
    assert "_relu_grad_kernel" not in by_name
    assert by_name["_conv_dgrad_kernel"]["DY_RELU"] is True
    assert by_name["_conv_wgrad_kernel"]["DY_RELU"] is True and by_name["_conv_wgrad_kernel"]["BIAS_GRAD"] is True
    with LaunchRecorder() as rec:  # the residual's grad is the masked grad: written once, then read
        run_and_compare(2, 8, 9, 7, 6, 3, 3, 1, 1, 1, bias=True, residual=True, activation="relu",
                        channels_last=True, device=device)
    assert rec.names()["_relu_grad_kernel"] == 1
    assert not any(la.kwargs.get("DY_RELU") for la in rec.launches)


@pytest.mark.parametrize("split_k", [1, 3])
def test_relu_output_mask_follows_threshold_backward(split_k, device):
    """The fused mask zeroes grad_out exactly where the saved output is <= 0, -0.0 included,
    and lets it through where that output is NaN (torch's threshold_backward)."""
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2, 4, 6, 5, generator=gen).to(device)
    w = torch.randn(6, 4, 3, 3, generator=gen).to(device)
    geo = conv_mod.conv_geometry(x, w, 1, 1)
    dy = torch.randn(2, 6, 6, 5, generator=gen).to(device)
    o = torch.randn(2, 6, 6, 5, generator=gen).relu().to(device)
    o[0, 1, 2, 3], o[1, 2, 0, 0], o[0, 0, 0, 0] = float("nan"), -0.0, float("nan")
    g64 = torch.ops.aten.threshold_backward(dy.double(), o.double(), 0.0)
    dx = conv_mod.conv2d_input_grad(dy, w, geo, relu_output=o)
    dw, db = conv_mod.conv2d_weight_grad(x, dy, geo, torch.float32, relu_output=o, bias=True, split_k=split_k)
    assert_close(dx, torch.nn.grad.conv2d_input(x.shape, w.double(), g64, 1, 1), reduction=6 * 9, name="grad x")
    assert_close(dw, torch.nn.grad.conv2d_weight(x.double(), w.shape, g64, 1, 1), reduction=2 * 30, name="grad w")
    assert_close(db, g64.sum((0, 2, 3)), reduction=2 * 30, name="grad bias")
    with pytest.raises(ValueError, match="relu_output"):
        conv_mod.conv2d_input_grad(dy, w, geo, relu_output=o[:, :3])
