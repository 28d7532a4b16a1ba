"""kernels.local_response_norm and kernels.add_relu against float64 torch, forward and backward."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

import kernels
from benchmarks.shapes import ADD_RELU, LRN
from tests.helpers import VIEW_KINDS, assert_close, view_fanout, view_recipe


def _inputs(shape, dtype, device, *, channels_last, seed):
    """(kernel input leaf, float64 reference leaf, upstream grad in both precisions)."""
    gen = torch.Generator().manual_seed(seed)
    x64 = torch.randn(*shape, generator=gen).mul(2).to(dtype).double()
    gy64 = torch.randn(*shape, generator=gen).to(dtype).double()
    x = x64.to(device, dtype)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    return x.requires_grad_(), x64.requires_grad_(), gy64.to(device, dtype), gy64


def check_lrn(shape, size, alpha, beta, k, *, dtype=torch.float32, device="cpu", channels_last=False, seed=0):
    x, x64, gy, gy64 = _inputs(shape, dtype, device, channels_last=channels_last, seed=seed)
    y = kernels.local_response_norm(x, size, alpha, beta, k)
    y64 = F.local_response_norm(x64, size, alpha, beta, k)
    y.backward(gy)
    y64.backward(gy64)
    # Each output sums `size` squares and goes through one pow; its gradient sums `size`
    # upstream terms on top: the reduction lengths of the tolerance table.
    assert_close(y, y64, reduction=size, name=f"lrn forward size={size}")
    assert_close(x.grad, x64.grad, reduction=2 * size, name=f"lrn grad size={size}")
    assert y.stride() == x.stride(), "output keeps the input's memory layout"


@given(
    size=st.integers(1, 7),
    C=st.integers(1, 12),
    H=st.integers(1, 6),
    W=st.sampled_from([1, 3, 5, 7]),
    alpha=st.floats(1e-4, 2.0),
    beta=st.floats(0.05, 1.5),
    k=st.floats(0.5, 3.0),
    channels_last=st.booleans(),
)
def test_lrn_fuzz(size, C, H, W, alpha, beta, k, channels_last, device):
    check_lrn((2, C, H, W), size, alpha, beta, k, device=device, channels_last=channels_last)


def check_lrn_view(shape, view, size, alpha, beta, k, *, dtype=torch.float32, device="cpu", seed=0):
    """x and the upstream gradient as (kind, dim) views of leaves (tests.helpers.view_recipe)."""
    gen = torch.Generator().manual_seed(seed)
    leaf_shape, fn = view_recipe(shape, *view)
    x64 = torch.randn(leaf_shape, generator=gen).mul(2).to(dtype).double().requires_grad_()
    x = x64.detach().to(device, dtype).requires_grad_()
    g_shape, g_fn = view_recipe(shape, "transposed")
    gy64 = g_fn(torch.randn(g_shape, generator=gen).to(dtype).double())
    y = kernels.local_response_norm(fn(x), size, alpha, beta, k)
    y64 = F.local_response_norm(fn(x64), size, alpha, beta, k)
    y.backward(gy64.to(device, dtype))
    y64.backward(gy64)
    assert_close(y, y64, reduction=size, name=f"lrn forward {view}")
    assert_close(x.grad, x64.grad, reduction=2 * size * view_fanout(shape, *view), name=f"lrn grad {view}")


@given(size=st.integers(1, 5), C=st.integers(1, 6), H=st.integers(1, 3), W=st.integers(1, 3),
       view=st.tuples(st.sampled_from(VIEW_KINDS), st.integers(0, 3)),
       beta=st.sampled_from([0.0, 0.75, 1.0, 2.0, -0.5, 2.5]),
       dtype=st.sampled_from([torch.float32, torch.float64]))
def test_lrn_strided_views_fuzz(size, C, H, W, view, beta, dtype, device):
    """x (and the upstream gradient) strided every way, integer and fractional betas, fp64."""
    check_lrn_view((2, C, H, W), view, size, 0.3, beta, 1.5, dtype=dtype, device=device)


@pytest.mark.parametrize("kind", VIEW_KINDS)
@pytest.mark.parametrize("dim", [1, 3])
def test_lrn_every_view(kind, dim, device):
    check_lrn_view((2, 5, 3, 4), (kind, dim), 3, 0.5, 0.75, 1.0, device=device)


@pytest.mark.parametrize("x, alpha, beta, k", [
    (torch.ones(1, 3, 2), -30.0, 2.0, 1.0),                               # negative base, integer power
    (torch.tensor([[[0.5, -1.0], [1.5, -0.7], [-2.0, 0.9]]]), -30.0, 3.0, 1.0),  # odd power: signs
    (torch.tensor([[[0.5, -1.0], [1.5, -0.7], [-2.0, 0.9]]]), -30.0, 2.5, 1.0),  # fractional: NaN, as torch
    (torch.zeros(1, 3, 2), 1e-4, 0.0, 0.0),                              # 0**0 = 1
    (torch.zeros(1, 3, 2), 1e-4, 0.5, 0.0),                              # 0 / 0: NaN, as torch
    (torch.zeros(1, 3, 2), 1e-4, -0.5, 0.0),                             # 0 / inf = 0, grad NaN
    (torch.tensor([[[0.0, 1.0], [0.0, -1.0], [2.0, 0.0]]]), 1.0, 1.0, 0.0),  # scale 0 at some x = 0
], ids=["alpha<0 beta=2", "alpha<0 beta=3", "alpha<0 beta=2.5", "k=0 beta=0", "k=0 beta=0.5",
        "k=0 beta=-0.5", "k=0 beta=1 mixed"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the interpreter's numpy meets the 0/0 and x/0 too
def test_lrn_power_semantics_like_torch(x, alpha, beta, k, dtype, device):
    """Numbers where torch gives numbers (the power's base zero or negative), NaN where it
    gives NaN, forward and backward. Every scale here is far from 0 or exactly 0, so the
    float64 reference is not ill-conditioned."""
    x64 = x.detach().double().clone().requires_grad_()
    xl = x.detach().to(device, dtype).clone().requires_grad_()
    y, y64 = kernels.local_response_norm(xl, 3, alpha, beta, k), F.local_response_norm(x64, 3, alpha, beta, k)
    g = torch.linspace(-1, 1, x.numel(), dtype=torch.float64).view(x.shape)
    y.backward(g.to(device, dtype))
    y64.backward(g)
    assert_close(y, y64, reduction=3, name="forward")
    assert_close(xl.grad, x64.grad, reduction=6, name="grad x")


@pytest.mark.parametrize("shape", [(0, 4, 3, 3), (2, 0, 3, 3), (2, 4, 0, 3), (2, 4, 0)], ids=str)
def test_lrn_empty(shape, device):
    x = torch.randn(shape, device=device, requires_grad=True)
    y = kernels.local_response_norm(x, 3)
    assert y.shape == F.local_response_norm(x.detach(), 3).shape
    y.sum().backward()
    assert x.grad.shape == x.shape


def test_lrn_meta():
    x = torch.empty(2, 5, 4, 3, device="meta", requires_grad=True).to(memory_format=torch.channels_last)
    y = kernels.local_response_norm(x, 3, -1.0, 2.0)
    assert y.is_meta and y.shape == x.shape and y.stride() == x.stride()
    (gx,) = torch.autograd.grad(y.sum(), (x,))
    assert gx.is_meta and gx.shape == x.shape


@pytest.mark.parametrize("shape", [(3, 7, 11), (1, 6, 2, 3, 4)], ids=["3d", "5d"])
def test_lrn_other_ranks(shape, device):
    check_lrn(shape, 4, 0.5, 0.75, 1.0, device=device)


def test_lrn_alexnet_settings_float16(device):
    check_lrn((2, 96, 5, 5), 5, 1e-4, 0.75, 2.0, dtype=torch.float16, device=device, channels_last=True)


def test_lrn_noncontiguous_input(device):
    x = torch.randn(2, 12, 5, 5, device=device)[:, ::2]
    assert_close(kernels.local_response_norm(x, 3, 0.2), F.local_response_norm(x.double(), 3, 0.2), reduction=3)


def test_lrn_module_matches_nn(device):
    ref, mod = torch.nn.LocalResponseNorm(5, 1e-2, 0.75, 2.0), kernels.LocalResponseNorm(5, 1e-2, 0.75, 2.0)
    x = torch.randn(2, 9, 4, 4, device=device)
    assert repr(mod).endswith(repr(ref).split("(", 1)[1])
    assert_close(mod(x), ref(x.double()), reduction=5)


@pytest.mark.parametrize("kwargs, exc, words", [
    (dict(x=torch.randn(2, 3), size=3), ValueError, "at least 3 dimensions"),
    (dict(x=torch.randn(2, 3, 4), size=0), ValueError, "size must be an int >= 1"),
    (dict(x=torch.randn(2, 3, 4), size=2.5), ValueError, "size must be an int"),
    (dict(x=torch.randint(0, 4, (2, 3, 4)), size=3), TypeError, "x must be float32"),
    (dict(x=torch.randn(2, 3, 4, dtype=torch.complex64), size=3), TypeError, "x must be float32"),
    (dict(x=torch.randn(2, 3, 4), size=3, alpha="a"), TypeError, "alpha must be a number"),
])
def test_lrn_bad_input(kwargs, exc, words):
    with pytest.raises(exc, match=words):
        kernels.local_response_norm(**kwargs)


# --------------------------------------------------------------------------- add + relu
def check_add_relu(shape, *, dtype=torch.float32, device="cpu", x_cl=False, r_cl=False, seed=0):
    x, x64, gy, gy64 = _inputs(shape, dtype, device, channels_last=x_cl, seed=seed)
    r, r64, _, _ = _inputs(shape, dtype, device, channels_last=r_cl, seed=seed + 1)
    y = kernels.add_relu(x, r)
    y64 = F.relu(x64 + r64)
    y.backward(gy)
    y64.backward(gy64)
    assert_close(y, y64, name="add_relu forward")
    assert_close(x.grad, x64.grad, name="add_relu grad x")
    assert_close(r.grad, r64.grad, name="add_relu grad residual")
    assert x.grad.data_ptr() != r.grad.data_ptr(), "leaf grads must not alias"


@given(
    shape=st.lists(st.integers(1, 9), min_size=1, max_size=4).map(tuple),
    x_cl=st.booleans(),
    r_cl=st.booleans(),
)
def test_add_relu_fuzz(shape, x_cl, r_cl, device):
    four_d = len(shape) == 4
    check_add_relu(shape, device=device, x_cl=x_cl and four_d, r_cl=r_cl and four_d)


def check_add_relu_views(shape, x_view, r_view, dtype, inplace, device):
    """x and residual as (kind, dim) views of leaves, out of place or in place (x then a
    view of a non-leaf); an in-place x with a stride-0 dim must be refused as torch does."""
    gen = torch.Generator().manual_seed(len(shape))
    (xs, xf), (rs, rf) = view_recipe(shape, *x_view), view_recipe(shape, *r_view)
    x64 = torch.randn(xs, generator=gen).to(dtype).double().requires_grad_()
    r64 = torch.randn(rs, generator=gen).to(dtype).double().requires_grad_()
    x, r = (t.detach().to(device, dtype).requires_grad_() for t in (x64, r64))
    x_arg = xf(x * 1.0) if inplace else xf(x)  # in place needs a non-leaf
    if inplace and x_view[0] == "expanded" and shape[x_view[1] % len(shape)] > 1:
        with pytest.raises(ValueError, match="more than one element of the written-to tensor x"):
            kernels.add_relu(x_arg, rf(r), inplace=True)
        return
    y = kernels.add_relu(x_arg, rf(r), inplace=inplace)
    y64 = F.relu(xf(x64) + rf(r64))
    g = torch.randn(shape, generator=gen).to(dtype).double()
    y.backward(g.to(device, dtype))
    y64.backward(g)
    assert_close(y, y64, name="add_relu forward")
    assert_close(x.grad, x64.grad, reduction=view_fanout(shape, *x_view), name="add_relu grad x")
    assert_close(r.grad, r64.grad, reduction=view_fanout(shape, *r_view), name="add_relu grad residual")


@given(shape=st.lists(st.integers(1, 5), min_size=1, max_size=4).map(tuple),
       x_view=st.tuples(st.sampled_from(VIEW_KINDS), st.integers(0, 3)),
       r_view=st.tuples(st.sampled_from(VIEW_KINDS), st.integers(0, 3)),
       dtype=st.sampled_from([torch.float32, torch.float64]), inplace=st.booleans())
def test_add_relu_strided_views_fuzz(shape, x_view, r_view, dtype, inplace, device):
    check_add_relu_views(shape, x_view, r_view, dtype, inplace, device)


@pytest.mark.parametrize("inplace", [False, True], ids=["out-of-place", "inplace"])
@pytest.mark.parametrize("r_kind", VIEW_KINDS)
@pytest.mark.parametrize("x_kind", VIEW_KINDS)
def test_add_relu_every_view_pair(x_kind, r_kind, inplace, device):
    check_add_relu_views((2, 3, 4, 5), (x_kind, 1), (r_kind, 2), torch.float32, inplace, device)


def test_add_relu_inplace_overlap_like_torch(device):
    """torch's rules for x.add_(r).relu_(): r partly overlapping x is refused, r that is x
    is allowed (relu(2x)), disjoint interleaved views are allowed, a stride-0 x is refused."""
    a = torch.randn(8, device=device)
    with pytest.raises(RuntimeError, match="refer to a single memory location"):
        a[:6].add_(a[2:])  # what torch says; the kernel must refuse the same call
    with pytest.raises(ValueError, match="some elements of residual and of the written-to tensor x"):
        kernels.add_relu(a[:6], a[2:], inplace=True)
    m = torch.randn(3, 3, device=device)
    with pytest.raises(ValueError, match="refer to a single memory location"):
        kernels.add_relu(m, m.t(), inplace=True)
    base = torch.randn(2, 3, 4, device=device, requires_grad=True)
    x = base * 1.0
    y = kernels.add_relu(x, x, inplace=True)
    assert y.data_ptr() == x.data_ptr()
    assert_close(y, F.relu(2 * base.double()), name="x is residual")
    y.sum().backward()
    assert_close(base.grad, 2 * (base.double() > 0).double(), name="x is residual: grad")
    b = torch.randn(4, 4, device=device)
    expected = F.relu(b[:, :2].double() + b[:, 2:].double())
    assert_close(kernels.add_relu(b[:, :2], b[:, 2:], inplace=True), expected, name="disjoint halves")
    assert_close(b[:, :2], expected, name="written into x's memory")
    with pytest.raises(ValueError, match="more than one element"):
        kernels.add_relu(torch.randn(4, device=device).expand(3, 4), torch.randn(3, 4, device=device), inplace=True)


def test_add_relu_empty_and_meta(device):
    x = torch.randn(0, 3, device=device, requires_grad=True)
    y = kernels.add_relu(x, torch.randn(0, 3, device=device))
    assert y.shape == (0, 3)
    y.sum().backward()
    assert x.grad.shape == (0, 3)
    xm = torch.empty(2, 3, 4, 5, device="meta", requires_grad=True).to(memory_format=torch.channels_last)
    y = kernels.add_relu(xm, torch.empty(2, 3, 4, 5, device="meta"))
    assert y.is_meta and y.shape == xm.shape and y.stride() == xm.stride()
    (gx,) = torch.autograd.grad(y.sum(), (xm,))
    assert gx.is_meta and gx.shape == xm.shape


def test_add_relu_float16_not_multiple_of_block(device):
    check_add_relu((3, 5, 7, 11), dtype=torch.float16, device=device, x_cl=True)


def test_add_relu_nan_like_torch(device):
    x = torch.tensor([float("nan"), -1.0, 2.0, float("nan"), -3.0], device=device, requires_grad=True)
    r = torch.tensor([1.0, float("nan"), -5.0, -1.0, 1.0], device=device, requires_grad=True)
    xt, rt = x.detach().clone().requires_grad_(), r.detach().clone().requires_grad_()
    y, yt = kernels.add_relu(x, r), F.relu(xt + rt)
    assert torch.equal(torch.isnan(y), torch.isnan(yt))
    assert torch.equal(y.nan_to_num(7.0), yt.nan_to_num(7.0))
    g = torch.arange(1.0, 6.0, device=device)
    y.backward(g)
    yt.backward(g)
    assert torch.equal(x.grad, xt.grad) and torch.equal(r.grad, rt.grad)


def test_add_relu_inplace(device):
    base = torch.randn(2, 3, 4, 5, device=device, requires_grad=True)
    r = torch.randn(2, 3, 4, 5, device=device)
    x = base * 1.0  # a non-leaf, so in-place is legal for autograd
    ptr = x.data_ptr()
    y = kernels.AddReLU(inplace=True)(x, r)
    assert y.data_ptr() == ptr
    assert_close(y, F.relu(base.double() + r.double()))
    y.sum().backward()
    assert_close(base.grad, (base.double() + r.double() > 0).double())


@pytest.mark.parametrize("args, exc, words", [
    ((torch.randn(2, 3), torch.randn(3, 2)), ValueError, "residual must have x's shape"),
    ((torch.randn(2, 3), torch.randn(2, 3).half()), TypeError, "residual has dtype"),
    ((torch.randint(0, 2, (2, 3)), torch.randn(2, 3)), TypeError, "x must be float32"),
    ((torch.randn(2, 3), [1.0]), TypeError, "residual must be a torch.Tensor"),
    ((torch.randn(2, 3), torch.randn(3)), ValueError, "no broadcasting"),
    ((torch.randn(2, 3, dtype=torch.complex64), torch.randn(2, 3)), TypeError, "x must be float32"),
])
def test_add_relu_bad_input(args, exc, words):
    with pytest.raises(exc, match=words):
        kernels.add_relu(*args)


# --------------------------------------------------------------------------- GPU
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("shape", [pytest.param(s, id=s.name) for s in LRN])
def test_lrn_real_layers_gpu(shape, dtype):
    check_lrn((8, shape.C, shape.H, shape.H), shape.size, shape.alpha, shape.beta, shape.k,
              dtype=dtype, device="cuda", channels_last=True)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("shape", [pytest.param(s, id=s.name) for s in ADD_RELU])
def test_add_relu_real_layers_gpu(shape, dtype):
    check_add_relu((8, shape.C, shape.H, shape.H), dtype=dtype, device="cuda", x_cl=True, r_cl=True)
