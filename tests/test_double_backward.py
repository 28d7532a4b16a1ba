"""A gradient of a gradient (create_graph=True: gradient penalties, Hessian-vector products,
torch's gradgradcheck) through any kernel: the backward passes are Triton kernels whose
results carry no graph, so create_graph=True must raise, never return gradients whose
second-order terms through the op would silently be missing (kernels._utils.first_order)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import kernels


def _rand(*shape):
    gen = torch.Generator().manual_seed(len(shape) + sum(shape))
    return torch.randn(*shape, generator=gen, dtype=torch.float64)


def _conv_args():
    return _rand(1, 2, 4, 4), _rand(3, 2, 3, 3), _rand(3), _rand(1, 3, 4, 4)


def _bn_stats(like):
    return torch.zeros(3, dtype=like.dtype, device=like.device), torch.ones(3, dtype=like.dtype, device=like.device)


def _inception_pairs(like):
    """(weight, bias) of branch1, reduce3, conv3, reduce5, conv5, pool_proj over 4 channels."""
    shapes = ((2, 4, 1), (2, 4, 1), (3, 2, 3), (2, 4, 1), (3, 2, 5), (2, 4, 1))
    return [(_rand(k, c, s, s).to(like.device), _rand(k).to(like.device)) for k, c, s in shapes]


# name -> (tensors that require grad, fn(*tensors) -> output)
CASES = {
    "conv2d": (_conv_args()[:3], lambda x, w, b: kernels.conv2d(x, w, b, padding=1)),
    "conv2d relu residual": (_conv_args(),
                             lambda x, w, b, r: kernels.conv2d(x, w, b, padding=1, residual=r, activation="relu")),
    "inception_1x1": ((_rand(2, 5, 3, 3), _rand(3, 5, 1, 1), _rand(3)),
                      lambda x, w, b: kernels.inception_1x1(x, [w, w], [b, None])[1]),
    "inception_block": ((_rand(1, 4, 3, 3),), lambda x: kernels.inception_block(x, *_inception_pairs(x))),
    "local_response_norm": ((_rand(2, 5, 3, 3),), lambda x: kernels.local_response_norm(x, 3, 1.0, 0.75, 1.0)),
    "add_relu": ((_rand(2, 5, 3, 3), _rand(2, 5, 3, 3)), kernels.add_relu),
    "max_pool2d": ((_rand(1, 2, 4, 4),), lambda x: kernels.max_pool2d(x, 2)),
    "lrn_max_pool2d": ((_rand(1, 4, 4, 4),), lambda x: kernels.lrn_max_pool2d(x, 3, 1.0, kernel_size=2)),
    "max_pool2d_lrn": ((_rand(1, 4, 4, 4),), lambda x: kernels.max_pool2d_lrn(x, 2, size=3, alpha=1.0)),
    "batch_norm": ((_rand(2, 3, 2, 2), _rand(3), _rand(3)),
                   lambda x, w, b: kernels.batch_norm(x, *_bn_stats(x), w, b, training=True)),
    "batch_norm_relu_max_pool2d": ((_rand(2, 3, 2, 2), _rand(3), _rand(3)),
                                   lambda x, w, b: kernels.batch_norm_relu_max_pool2d(
                                       x, *_bn_stats(x), w, b, training=True, kernel_size=2)),
    "linear": ((_rand(2, 5), _rand(3, 5), _rand(3)), lambda x, w, b: kernels.linear(x, w, b)),
    "dropout": ((_rand(2, 5),), lambda x: kernels.dropout(x, 0.5)),
}


def _leaves(tensors, device):
    return [t.detach().clone().to(device).requires_grad_() for t in tensors]


@pytest.mark.parametrize("name", list(CASES))
def test_gradient_with_create_graph_raises(name, device):
    """Each kernel's backward refuses create_graph=True; the same call without it works."""
    tensors, fn = CASES[name]
    leaves = _leaves(tensors, device)
    y = fn(*leaves)
    with pytest.raises(NotImplementedError, match="double backward"):
        torch.autograd.grad((y * y).sum(), leaves, create_graph=True, allow_unused=True)
    y = fn(*leaves)
    grads = torch.autograd.grad((y * y).sum(), leaves, allow_unused=True)
    assert not any(g is not None and g.requires_grad for g in grads)


def test_gradient_penalty_refused_even_with_a_constant_incoming_gradient(device):
    """L = y.sum(): the incoming gradient is a constant, yet torch's dL/dx depends on the
    weight, so d/dw of |dL/dx|^2 is not zero; a gradient returned without a graph would make
    it zero (what torch's once_differentiable lets through when the penalty is taken with
    torch.autograd.grad(..., w))."""
    x64, w64 = _leaves(_conv_args()[:2], "cpu")
    gx64, = torch.autograd.grad(F.conv2d(x64, w64, padding=1).sum(), x64, create_graph=True)
    ref, = torch.autograd.grad(gx64.pow(2).sum(), w64)
    assert ref.abs().max() > 0  # the term a gradient without a graph would miss
    x, w = _leaves(_conv_args()[:2], device)
    with pytest.raises(NotImplementedError, match="Conv2dFunction: double backward"):
        torch.autograd.grad(kernels.conv2d(x, w, padding=1).sum(), x, create_graph=True)


@pytest.mark.parametrize("use_reentrant", [True, False])
def test_activation_checkpointing_is_first_order(use_reentrant, device):
    """torch.utils.checkpoint re-runs the forward inside backward, with create_graph=False:
    the guard must not mistake it for a double backward."""
    from torch.utils.checkpoint import checkpoint

    tensors, fn = CASES["conv2d relu residual"]
    plain, checkpointed = _leaves(tensors, device), _leaves(tensors, device)
    fn(*plain).sum().backward()
    checkpoint(fn, *checkpointed, use_reentrant=use_reentrant).sum().backward()  # reentrant: no .grad()
    for a, b in zip(checkpointed, plain):
        assert torch.equal(a.grad, b.grad)
