"""kernels.local_response_norm and kernels.add_relu against float64 torch, forward and backward."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

import kernels
from benchmarks.shapes import ADD_RELU, LRN
from tests.helpers import assert_close


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
