"""The FC epilogue (bias + ReLU + dropout in one Triton pass) and the Triton dropout.

Without dropout: forward and every gradient against float64 F.linear (+ ReLU), over fuzzed
shapes, leading batch dims and strided views of x, weight and bias. With dropout: the mask
is Triton's Philox, not torch's, so the checks are the distribution (the kept fraction
within 5 sigma of 1 - p), the scaling (kept elements equal the float64 value / (1 - p)),
that backward uses forward's mask, determinism under torch.manual_seed, fresh masks per
call, p = 1, eval mode, and the refusals."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

import kernels
from kernels.fc import dropout, linear
from tests.helpers import assert_close, view_recipe


@st.composite
def fc_cases(draw):
    return dict(lead=draw(st.sampled_from([(), (3,), (2, 3)])), rows=draw(st.integers(1, 40)),
                fin=draw(st.integers(1, 70)), fout=draw(st.integers(1, 70)), bias=draw(st.booleans()),
                relu=draw(st.booleans()), dtype=draw(st.sampled_from([torch.float32, torch.float64, torch.float16])),
                x_view=draw(st.sampled_from(["dense", "sliced", "transposed"])),
                w_view=draw(st.sampled_from(["dense", "offset", "transposed"])),
                b_view=draw(st.sampled_from(["dense", "sliced"])), seed=draw(st.integers(0, 2**16)))


@given(case=fc_cases())
def test_linear_without_dropout_matches_float64(case, device):
    gen = torch.Generator().manual_seed(case["seed"])
    dtype = case["dtype"]
    x_shape = (*case["lead"], case["rows"], case["fin"])
    leaves, views = [], []
    for shape, kind in ((x_shape, case["x_view"]), ((case["fout"], case["fin"]), case["w_view"]),
                        ((case["fout"],), case["b_view"])):
        leaf_shape, fn = view_recipe(shape, kind, dim=len(shape) - 1)
        leaf = torch.randn(leaf_shape, generator=gen).to(device, dtype).requires_grad_()
        leaves.append(leaf)
        views.append(fn(leaf))
    x, w, b = views if case["bias"] else (*views[:2], None)
    act = "relu" if case["relu"] else None
    y = linear(x, w, b, activation=act, p=0.5, training=False)  # eval: no dropout
    leaves64 = [t.detach().double().cpu().requires_grad_() for t in leaves]
    x64, w64, b64 = (view_recipe(t.shape, k, dim=t.dim() - 1)[1](leaf) for t, k, leaf in
                     zip(views, (case["x_view"], case["w_view"], case["b_view"]), leaves64))
    y64 = F.linear(x64, w64, b64 if case["bias"] else None)
    y64 = F.relu(y64) if act else y64
    scale = max(y64.abs().max().item(), 1.0)
    assert_close(y, y64, reduction=case["fin"], scale=scale, name="output")
    g = torch.randn(y64.shape, generator=gen).to(dtype)
    y.backward(g.to(device))
    y64.backward(g.double())
    rows = math.prod(x_shape[:-1])
    for leaf, leaf64, name, k in zip(leaves, leaves64, ("x", "weight", "bias"), (case["fout"], rows, rows)):
        if name == "bias" and not case["bias"]:
            assert leaf.grad is None
            continue
        assert_close(leaf.grad, leaf64.grad, reduction=k, scale=max(leaf64.grad.abs().max().item(), 1.0),
                     name=f"d{name}")


@pytest.mark.parametrize("p", [0.5, 0.1, 0.9])
@pytest.mark.parametrize("relu", [True, False])
def test_linear_dropout_distribution_scaling_and_gradient(p, relu, device):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(64, 48, generator=gen, dtype=torch.float64).to(device).requires_grad_()
    w = torch.randn(96, 48, generator=gen, dtype=torch.float64).to(device).requires_grad_()
    b = torch.randn(96, generator=gen, dtype=torch.float64).to(device).requires_grad_()
    act = "relu" if relu else None
    y = linear(x, w, b, activation=act, p=p)
    z = F.linear(x.detach(), w.detach(), b.detach())
    z = F.relu(z) if relu else z
    kept = y != 0  # z is never exactly 0 here: float64 of random inputs
    if relu:
        kept_expected_fraction = (1 - p) * (z > 0).double().mean().item()
    else:
        kept_expected_fraction = 1 - p
    n = y.numel()
    sigma = math.sqrt(n * kept_expected_fraction * (1 - kept_expected_fraction))
    assert abs(kept.sum().item() - n * kept_expected_fraction) < 5 * sigma + 1
    assert_close(y[kept], z[kept] / (1 - p), reduction=48, scale=10.0, name="kept values")
    g = torch.randn(y.shape, generator=gen, dtype=torch.float64).to(device)
    y.backward(g)
    dz = torch.where(kept, g / (1 - p), 0.0)  # the same mask: kept and (with ReLU) positive
    assert_close(x.grad, dz @ w.detach(), reduction=96, scale=20.0, name="dx")
    assert_close(w.grad, dz.t() @ x.detach(), reduction=64, scale=20.0, name="dweight")
    assert_close(b.grad, dz.sum(0), reduction=64, scale=20.0, name="dbias")


def test_dropout_alone_masks_and_recomputes_its_mask(device):
    x = (torch.rand(50, 70, dtype=torch.float64) - 0.5).to(device).requires_grad_()
    torch.manual_seed(3)
    y = dropout(x, 0.3)
    kept = y != 0
    assert_close(y[kept], x.detach()[kept] / 0.7, name="kept values")
    n = y.numel()
    assert abs(kept.sum().item() - 0.7 * n) < 5 * math.sqrt(n * 0.21)
    g = torch.randn(y.shape, dtype=torch.float64).to(device)
    y.backward(g)
    assert_close(x.grad, torch.where(kept, g / 0.7, 0.0), name="dx")  # g * (1 / 0.7): one rounding apart
    torch.manual_seed(3)
    assert torch.equal(dropout(x.detach(), 0.3), y.detach())  # the seed comes from torch's generator
    assert not torch.equal(dropout(x.detach(), 0.3), dropout(x.detach(), 0.3))  # a fresh mask per call


def test_p_one_eval_and_p_zero(device):
    x = torch.randn(4, 6, device=device, requires_grad=True)
    y = dropout(x, 1.0)
    y.sum().backward()
    assert torch.equal(y, torch.zeros_like(y)) and torch.equal(x.grad, torch.zeros_like(x))
    assert dropout(x, 0.5, training=False) is x and dropout(x, 0.0) is x
    w = torch.randn(5, 6, device=device)
    assert torch.equal(linear(x, w, p=1.0, activation="relu"), torch.zeros(4, 5, device=device))


@pytest.mark.parametrize("x_shape, w_shape", [((3, 0), (4, 0)), ((2, 3, 5), (0, 5)), ((2, 0, 5), (4, 5))],
                         ids=["no in_features", "no out_features", "no rows"])
def test_empty_feature_or_row_dims_like_torch(x_shape, w_shape, device):
    """F.linear's answers where a dim is 0 (no in_features: the bias alone), zero gradients,
    instead of a reshape error."""
    gen = torch.Generator().manual_seed(0)
    x, w, b = (torch.randn(s, generator=gen, dtype=torch.float64) for s in (x_shape, w_shape, w_shape[:1]))
    leaves = [t.clone().to(device).requires_grad_() for t in (x, w, b)]
    leaves64 = [t.clone().requires_grad_() for t in (x, w, b)]
    y = linear(*leaves, activation="relu")
    y64 = F.relu(F.linear(*leaves64))
    assert_close(y, y64, name="output")
    g = torch.randn(y64.shape, generator=gen, dtype=torch.float64)
    y.backward(g.to(device))
    y64.backward(g)
    for a, e, name in zip(leaves, leaves64, ("x", "weight", "bias")):
        assert_close(a.grad, e.grad, reduction=max(y64.numel(), 1), name=f"grad {name}")
    x = torch.randn(2, 0, device=device, requires_grad=True)
    y = dropout(x, 0.5)
    y.sum().backward()
    assert y.shape == x.shape and x.grad.shape == x.shape


def test_modules_keep_torchs_state_dict_and_eval(device):
    torch.manual_seed(0)
    ref = torch.nn.Linear(8, 5)
    mod = kernels.Linear(8, 5, activation="relu", p=0.5).to(device)
    mod.load_state_dict(ref.state_dict())
    assert list(mod.state_dict()) == list(ref.state_dict())
    x = torch.randn(3, 8)
    with torch.no_grad():
        assert_close(mod.eval()(x.to(device)), F.relu(ref(x)).double(), reduction=8, name="eval")
    drop = kernels.Dropout(0.5).eval()
    assert drop(x) is x


@pytest.mark.parametrize("call, error, match", [
    (lambda: linear(torch.randn(2, 3), torch.randn(4, 3), activation="gelu"), ValueError, "activation must be"),
    (lambda: linear(torch.randn(2, 3), torch.randn(4, 3), p=1.5), ValueError, "between 0 and 1"),
    (lambda: linear(torch.randn(2, 3), torch.randn(4, 5)), ValueError, "in_features 5"),
    (lambda: linear(torch.randn(2, 3), torch.randn(4, 3), torch.randn(5)), ValueError, "bias must have 4"),
    (lambda: linear(torch.randn(2, 3).int(), torch.randn(4, 3)), TypeError, "x must be float"),
    (lambda: dropout(torch.randn(3), -0.1), ValueError, "between 0 and 1"),
    (lambda: kernels.Dropout(0.5, inplace=True), ValueError, "inplace=True"),
    (lambda: kernels.Linear(3, 4, activation="tanh"), ValueError, "activation must be"),
])
def test_refusals(call, error, match):
    with pytest.raises(error, match=match):
        call()
