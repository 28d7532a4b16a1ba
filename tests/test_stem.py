"""The stems' space-to-depth path (kernels/stem.py) against float64 torch, forced through the
public launchers: forward with its epilogues, data-grad (with and without the ReLU mask),
weight-grad (one split and several), fuzzed over strides, filter sizes (not multiples of the
stride, smaller than it), paddings, odd sizes and strided views; that the rewritten conv is
what launches (stride 1, no padding, CZ channels, or S2*CZ with the filter's columns folded);
the refusals that stay on the generic kernel; how a forced config and a forced path pick
between the two paths that share the generic kernels."""

from __future__ import annotations

from contextlib import ExitStack

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

import kernels
from kernels import configs, race, stem
from kernels import conv as conv_mod
from kernels.conv import conv2d_forward, conv2d_input_grad, conv2d_weight_grad, conv_geometry
from kernels.stem import eligible_s2d, row_geometry, s2d_geometry
from tests.helpers import LaunchRecorder, assert_close, forced_everywhere, view_recipe
from tests.test_conv import ARGS, run_and_compare, view_choices

RELAYOUT = {"_space_to_depth_kernel", "_depth_to_space_kernel"}
GENERIC = {"_conv_fwd_kernel", "_conv_dgrad_kernel", "_conv_wgrad_kernel"}


def _launch_args(launch) -> dict:
    return dict(zip(configs.TUNABLE[launch.name].arg_names, launch.args))


def _geo(C, H, W, K, R, S, stride, padding, N=2, groups=1, dilation=1):
    x = torch.empty(N, C, H, W, device="meta")
    return conv_geometry(x, torch.empty(K, C // groups, R, S, device="meta"), stride, padding, dilation, groups)


# --------------------------------------------------------------------------- geometry
@pytest.mark.parametrize("name, geo, rewritten", [
    ("alexnet.conv1 11x11/4 pad 2 at 224", _geo(3, 224, 224, 96, 11, 11, 4, 2), (48, 57, 57, 3, 3, 55, 55)),
    ("resnet50.conv1 7x7/2 pad 3 at 224", _geo(3, 224, 224, 64, 7, 7, 2, 3), (16, 115, 115, 4, 4, 112, 112)),
    ("stride (3, 2), 5x2 filter", _geo(2, 9, 8, 5, 5, 2, (3, 2), (1, 0)), (16, 4, 4, 2, 1, 3, 4)),
])
def test_rewritten_geometry(name, geo, rewritten):
    """CZ = C*sh*sw padded to 16, R2 = ceil(R/sh), z of P+R2-1 rows; stride 1, no padding,
    and the original output size."""
    g2 = s2d_geometry(geo)
    assert rewritten == (g2.C, g2.H, g2.W, g2.R, g2.S, g2.P, g2.Q)
    assert (g2.stride, g2.padding, g2.dilation, g2.groups, g2.K) == ((1, 1), (0, 0), (1, 1), 1, geo.K)
    assert (g2.P, g2.Q) == (geo.P, geo.Q) and not g2.flat_k
    rows = row_geometry(g2)  # forward and weight-grad: the filter's columns folded too
    assert (rows.C, rows.H, rows.W, rows.R, rows.S, rows.P, rows.Q) == (g2.S * g2.C, g2.H, g2.Q, g2.R, 1, g2.P, g2.Q)


@pytest.mark.parametrize("name, geo, ok", [
    ("alexnet.conv1", _geo(3, 227, 227, 96, 11, 11, 4, 2), True),
    ("googlenet.conv1", _geo(3, 224, 224, 64, 7, 7, 2, 3), True),
    ("stride (1, 2)", _geo(3, 9, 9, 4, 3, 3, (1, 2), 1), True),
    ("C=4 stride 4: 64 channels", _geo(4, 9, 9, 4, 5, 5, 4, 1), True),
    ("stride 1", _geo(3, 9, 9, 4, 3, 3, 1, 1), False),
    ("two groups", _geo(4, 9, 9, 4, 3, 3, 2, 1, groups=2), False),
    ("dilation 2", _geo(3, 9, 9, 4, 3, 3, 2, 1, dilation=2), False),
    ("C=5 stride 4: 80 channels", _geo(5, 9, 9, 4, 5, 5, 4, 1), False),
    ("resnet50 downsample 1x1/2 over 256", _geo(256, 56, 56, 512, 1, 1, 2, 0), False),
    ("no channels", _geo(0, 9, 9, 4, 3, 3, 2, 1), False),
])
def test_eligibility(name, geo, ok):
    assert eligible_s2d(geo) == ok


# --------------------------------------------------------------------------- the path taken
@pytest.mark.parametrize("name, case, cz, taps", [
    ("alexnet-like C=3 11x11/4 pad 2", dict(N=1, C=3, H=23, W=23, K=8, R=11, S=11, stride=4, padding=2), 48, 3),
    ("resnet-like C=3 7x7/2 pad 3", dict(N=2, C=3, H=13, W=11, K=16, R=7, S=7, stride=2, padding=3), 16, 4),
])
def test_stems_through_s2d(name, case, cz, taps, device):
    """The two stem geometries, forward with bias, residual and ReLU and every gradient
    against float64; each GEMM launched is the rewritten conv: stride 1, no padding, tap by
    tap (no FLAT_K); the data-grad over CZ channels and a taps x taps filter, the forward
    and weight-grad with the filter's columns folded in: taps*CZ channels, taps x 1."""
    with forced_everywhere("s2d"), LaunchRecorder() as rec:
        run_and_compare(**case, groups=1, bias=True, residual=True, activation="relu", channels_last=False,
                        device=device)
    gemms = [la for la in rec.launches if la.name in GENERIC]
    assert {la.name for la in gemms} == GENERIC, rec.names()
    assert set(rec.names()) - GENERIC >= RELAYOUT
    for launch in gemms:
        args = _launch_args(launch)
        shape = (args["CG"], args["R"], args["S"], args["stride_h"], args["stride_w"], args["pad_h"], args["pad_w"])
        rows = launch.name != "_conv_dgrad_kernel"
        assert shape == (taps * cz if rows else cz, taps, 1 if rows else taps, 1, 1, 0, 0), (launch.name, shape)
        assert launch.kwargs["FLAT_K"] is False


@st.composite
def stem_cases(draw):
    """Eligible strided convs (C*sh*sw <= 64 always): C in 1..4, strides 2..4 (the two may
    differ), filters 1..11 (multiples of the stride or not, smaller than it too), padding
    0..3 (top and left may differ), odd and even sizes."""
    stride = (draw(st.integers(2, 4)), draw(st.integers(2, 4)))
    C = draw(st.integers(1, 4))
    R, S = draw(st.integers(1, 11)), draw(st.integers(1, 11))
    ph, pw = draw(st.integers(0, 3)), draw(st.integers(0, 3))
    H = draw(st.integers(max(1, R - 2 * ph), max(1, R - 2 * ph) + 6))
    W = draw(st.integers(max(1, S - 2 * pw), max(1, S - 2 * pw) + 6))
    return dict(N=draw(st.integers(1, 2)), C=C, H=H, W=W, K=draw(st.integers(1, 9)), R=R, S=S, stride=stride,
                padding=(ph, pw), groups=1, bias=draw(st.booleans()), residual=draw(st.booleans()),
                activation=draw(st.sampled_from([None, "relu"])), channels_last=draw(st.booleans()),
                dtype=draw(st.sampled_from([torch.float32, torch.float64, torch.float16])))


@given(case=stem_cases())
def test_s2d_fuzz(case, device):
    with forced_everywhere("s2d"), LaunchRecorder() as rec:
        run_and_compare(**case, device=device)
    assert set(rec.names()) >= RELAYOUT | GENERIC, rec.names()


@given(case=stem_cases(), views=view_choices(ARGS, (4, 4, 1, 4)))
def test_s2d_strided_views_fuzz(case, views, device):
    """x, weight, bias and residual each a sliced / offset / transposed / expanded view: the
    re-layout kernels read x and the filter through their strides."""
    case = {**case, "bias": True, "residual": True, "channels_last": False,
            "dtype": torch.float64 if case["dtype"] == torch.float64 else torch.float32}
    with forced_everywhere("s2d"), LaunchRecorder() as rec:
        run_and_compare(**case, views=views, device=device)
    assert set(rec.names()) >= RELAYOUT, rec.names()


@pytest.mark.filterwarnings("ignore:invalid value encountered")  # the interpreter's numpy on inf * 0
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
@pytest.mark.parametrize("case, spots", [
    # 3x3/2 over 8 rows: row 7 is read by no output, yet lies in z (the 2x2 rewritten taps
    # span 4 rows); (3, 3) is read by output (1, 1) only, and sits in output (0, 0)'s z window
    (dict(R=3, S=3, stride=2, padding=0, H=8, W=8), [(0, 1, 7, 2), (1, 0, 3, 3)]),
    (dict(R=7, S=7, stride=2, padding=3, H=9, W=10), [(0, 2, 4, 9)]),  # a stem, its last column unread
    (dict(R=2, S=1, stride=(3, 2), padding=(0, 1), H=7, W=5), [(1, 1, 2, 2)]),  # a filter smaller than the stride
], ids=["3x3s2", "7x7s2p3", "2x1s3x2"])
def test_s2d_non_finite_input_stays_where_torch_reads_it(case, spots, value, device):
    """NaN / inf in x reach exactly the outputs (and weight gradients) whose windows read
    them, as in torch: the rewritten filter's zero taps (past R x S) must not multiply them
    (0 * inf is NaN), nor pixels the conv never reads."""
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(2, 3, case["H"], case["W"], generator=gen, dtype=torch.float64)
    for spot in spots:
        x[spot] = value
    R, S = case["R"], case["S"]
    w = torch.randn(4, 3, R, S, generator=gen, dtype=torch.float64)
    b = torch.randn(4, generator=gen, dtype=torch.float64)
    leaves = [t.clone().to(device).requires_grad_() for t in (x, w, b)]
    leaves64 = [t.clone().requires_grad_() for t in (x, w, b)]
    kw = dict(stride=case["stride"], padding=case["padding"])
    with forced_everywhere("s2d"), LaunchRecorder() as rec:
        y = kernels.conv2d(leaves[0].contiguous(memory_format=torch.channels_last), *leaves[1:], **kw)
        y.backward(torch.ones_like(y))
    assert set(rec.names()) >= RELAYOUT, rec.names()
    y64 = F.conv2d(*leaves64, **kw)
    y64.backward(torch.ones_like(y64))
    for name, a, e in [("forward", y, y64), *[(f"grad {n}", t.grad, t64.grad) for n, t, t64 in
                                             zip(("x", "weight", "bias"), leaves, leaves64)]]:
        a = a.detach().cpu()
        nan_inf = lambda t: (int(t.isnan().sum()), int(t.isinf().sum()))
        assert torch.equal(a.isnan(), e.isnan()) and torch.equal(a.isinf(), e.isinf()), \
            f"{name}: (NaN, inf) counts {nan_inf(a)}, torch {nan_inf(e)}"
        assert torch.equal(a[a.isinf()], e[e.isinf()]), f"{name}: infinities of other signs than torch's"
        finite = e.isfinite()
        assert_close(a[finite], e[finite], reduction=3 * R * S, name=name)


def _rand(shape, gen, kind="dense", dim=-1):
    """A float64 tensor of `shape` as a `kind` view (tests.helpers.view_recipe) of a leaf."""
    leaf, view = view_recipe(shape, kind, dim)
    return view(torch.randn(*leaf, generator=gen, dtype=torch.float64))


@pytest.mark.parametrize("relu_input", [False, True])
@pytest.mark.parametrize("kinds", [("dense", "dense", "dense"), ("sliced", "transposed", "offset")],
                         ids=["dense", "views"])
def test_data_grad(relu_input, kinds, device):
    """conv2d_input_grad through s2d: against torch's input gradient (zero where the ReLU's
    output relu_input <= 0), grad_out, weight and relu_input as strided views, dx written
    into a W-sliced NCHW view of a wider buffer whose other columns keep their poison."""
    gen = torch.Generator().manual_seed(3)
    N, C, H, W, K, R, S, stride, pad = 2, 3, 11, 9, 5, 5, 4, (3, 2), (2, 1)
    geo = _geo(C, H, W, K, R, S, stride, pad, N=N)
    w = _rand((K, C, R, S), gen, kinds[1])
    dy = _rand((N, K, geo.P, geo.Q), gen, kinds[0])
    m = _rand((N, C, H, W), gen, kinds[2]) if relu_input else None
    buf = torch.full((N, C, H, 2 * W), 7.0, dtype=torch.float64, device=device)
    dx = buf[:, :, :, ::2]
    with forced_everywhere("s2d"), LaunchRecorder() as rec:
        conv2d_input_grad(dy.to(device), w.to(device), geo, out=dx, relu_input=None if m is None else m.to(device))
    assert set(rec.names()) == {"_space_to_depth_kernel", "_conv_dgrad_kernel", "_depth_to_space_kernel"}
    ref = torch.nn.grad.conv2d_input(dx.shape, w, dy, stride, pad)
    if m is not None:
        ref = ref * (m > 0)
    assert_close(dx, ref, reduction=K * R * S, name="data-grad")
    assert (buf[:, :, :, 1::2] == 7).all()


def test_data_grad_reaches_no_unread_input(device):
    """Input rows and columns no output reads (14x14 input, 3x3 filter, stride 4: rows and
    columns 11-13 unread) get a zero gradient, though z stops before them (12 rows)."""
    x = torch.randn(1, 2, 14, 14, dtype=torch.float64)
    w = torch.randn(4, 2, 3, 3, dtype=torch.float64)
    geo = conv_geometry(x, w, 4, 0)
    dy = torch.randn(1, 4, geo.P, geo.Q, dtype=torch.float64)
    assert s2d_geometry(geo).H * 4 == 12
    with forced_everywhere("s2d"):
        dx = conv2d_input_grad(dy.to(device), w.to(device), geo)
    ref = torch.nn.grad.conv2d_input(x.shape, w, dy, 4, 0)
    assert_close(dx, ref, reduction=36, name="data-grad")
    assert (dx[:, :, 11:] == 0).all() and (dx[:, :, :, 11:] == 0).all()


@pytest.mark.parametrize("split_k", [1, 3])
def test_weight_grad(split_k, device):
    """conv2d_weight_grad through s2d, one split (the gradient itself) and three (fp32
    partials summed), x an NCHW transposed view and grad_out a W-sliced channels_last one:
    the padded taps and pad channels of the rewritten filter are dropped."""
    gen = torch.Generator().manual_seed(5)
    N, C, H, W, K, R, S, stride, pad = 2, 3, 13, 12, 6, 7, 6, (2, 3), (3, 1)
    geo = _geo(C, H, W, K, R, S, stride, pad, N=N)
    x = _rand((N, C, H, W), gen, "transposed").float()
    dy_wide = torch.randn(N, K, geo.P, 2 * geo.Q, generator=gen).contiguous(memory_format=torch.channels_last)
    dy = dy_wide[:, :, :, ::2]
    with forced_everywhere("s2d"), LaunchRecorder() as rec:
        dw = conv2d_weight_grad(x.to(device), dy.to(device), geo, torch.float32, split_k=split_k)
    wgrad = next(la for la in rec.launches if la.name == "_conv_wgrad_kernel")
    assert wgrad.grid({"BLOCK_M": 64, "BLOCK_N": 64})[1] == split_k
    assert dw.shape == (K, C, R, S) and dw.is_contiguous(memory_format=torch.channels_last)
    ref = torch.nn.grad.conv2d_weight(x.double(), (K, C, R, S), dy.double(), stride, pad)
    assert_close(dw, ref, reduction=N * geo.P * geo.Q, name=f"weight-grad split_k={split_k}")


def test_int64_indexing(monkeypatch, device):
    """The re-layout kernels' and the rewritten conv's int64 offsets give the same result."""
    monkeypatch.setattr(stem, "needs_int64", lambda *t: True)
    monkeypatch.setattr(conv_mod, "needs_int64", lambda *t: True)
    with forced_everywhere("s2d"), LaunchRecorder() as rec:
        run_and_compare(1, 3, 9, 10, 5, 5, 5, 2, 2, 1, bias=True, residual=True, activation="relu",
                        channels_last=False, device=device)
    assert all(la.kwargs["INDEX_64"] for la in rec.launches if la.name in RELAYOUT | GENERIC)


# --------------------------------------------------------------------------- dispatch
@pytest.mark.parametrize("name, case", [
    ("stride 1", dict(C=3, K=4, R=3, S=3, stride=1, padding=1, groups=1, dilation=1)),
    ("two groups", dict(C=4, K=4, R=3, S=3, stride=2, padding=1, groups=2, dilation=1)),
    ("dilation 2", dict(C=3, K=4, R=3, S=3, stride=2, padding=1, groups=1, dilation=2)),
    ("C=5 stride 4: 80 channels", dict(C=5, K=4, R=5, S=5, stride=4, padding=1, groups=1, dilation=1)),
])
def test_refused_shapes_run_the_generic_kernel_even_when_forced(name, case, device):
    with forced_everywhere("s2d"), LaunchRecorder() as rec:
        run_and_compare(N=1, H=9, W=8, **case, bias=True, residual=False, activation="relu", channels_last=True,
                        device=device)
    assert not set(rec.names()) & RELAYOUT and set(rec.names()) >= GENERIC, rec.names()


def _stem_passes(x, w, dy, geo):
    conv2d_forward(x, w, stride=geo.stride, padding=geo.padding)
    conv2d_input_grad(dy, w, geo)
    conv2d_weight_grad(x, dy, geo, w.dtype)


def test_dispatch_default_forced_config_and_forced_path(device):
    """Unforced (the interpreter) an eligible stem runs the generic kernel; a forced config on
    a generic kernel, which both paths launch, keeps it there (a sweep's generic item times
    the generic kernel); a forced path runs s2d, with the forced config on its rewritten conv."""
    x = torch.randn(1, 3, 11, 11, device=device)
    w = torch.randn(4, 3, 7, 7, device=device)
    geo = conv_geometry(x, w, 2, 3)
    dy = torch.randn(1, 4, geo.P, geo.Q, device=device)
    gemm, split = configs.configs("conv_gemm")[0], configs.configs("conv_wgrad")[0]

    def launched(*contexts):
        with ExitStack() as stack:
            for c in contexts:
                stack.enter_context(c)
            with LaunchRecorder(execute=False) as rec:
                _stem_passes(x, w, dy, geo)
        return set(rec.names())

    def pinned():
        return (configs.forced_config("_conv_fwd_kernel", gemm), configs.forced_config("_conv_dgrad_kernel", gemm),
                configs.forced_config("_conv_wgrad_kernel", split))

    assert launched() == GENERIC
    assert launched(*pinned()) == GENERIC
    assert launched(forced_everywhere("s2d"), *pinned()) == GENERIC | RELAYOUT
    with race.forced_path("conv_forward", "s2d"), LaunchRecorder(execute=False) as rec:
        _stem_passes(x, w, dy, geo)
    assert [la.name for la in rec.launches] == ["_space_to_depth_kernel", "_space_to_depth_kernel",
                                                "_conv_fwd_kernel", "_conv_dgrad_kernel", "_conv_wgrad_kernel"]
