"""Fused Inception 1x1s and the whole Inception block against separate float64 torch convs."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

import kernels
from kernels.inception import pointwise_forward
from tests.helpers import assert_close


def _leaves(tensors, dtype, device):
    """(kernel leaves, float64 leaves): the same rounded values in both precisions."""
    lo = [t.detach().to(dtype).to(device).clone().requires_grad_() if t is not None else None
          for t in tensors]
    hi = [t.detach().to(dtype).double().requires_grad_() if t is not None else None for t in tensors]
    return lo, hi


@given(
    C=st.integers(1, 20),
    outs=st.lists(st.integers(1, 12), min_size=1, max_size=4),
    H=st.integers(1, 7),
    W=st.integers(1, 7),
    bias=st.booleans(),
    relu=st.booleans(),
    channels_last=st.booleans(),
)
def test_inception_1x1_fuzz(C, outs, H, W, bias, relu, channels_last, device):
    gen = torch.Generator().manual_seed(C * 100 + H * 10 + W)
    x = torch.randn(2, C, H, W, generator=gen)
    ws = [torch.randn(k, C, 1, 1, generator=gen) for k in outs]
    bs = [torch.randn(k, generator=gen) for k in outs] if bias else [None] * len(outs)
    (xl, *pl), (xh, *ph) = _leaves([x, *ws, *bs], torch.float32, device)
    act = "relu" if relu else None
    x_in = xl.to(memory_format=torch.channels_last) if channels_last else xl
    ys = kernels.inception_1x1(x_in, pl[:len(outs)], pl[len(outs):] if bias else None, activation=act)
    refs = [F.conv2d(xh, w, b) for w, b in zip(ph[:len(outs)], ph[len(outs):])]
    refs = [F.relu(r) if relu else r for r in refs]
    grads = [torch.randn(r.shape, generator=gen).double() for r in refs]
    sum((y * g.to(y)).sum() for y, g in zip(ys, grads)).backward()
    sum((r * g).sum() for r, g in zip(refs, grads)).backward()
    for i, (y, r) in enumerate(zip(ys, refs)):
        assert_close(y, r, reduction=C + 1, name=f"branch {i}")
    assert_close(xl.grad, xh.grad, reduction=sum(outs), name="grad x")
    for i, (a, b) in enumerate(zip(pl, ph)):
        if a is not None:
            assert_close(a.grad, b.grad, reduction=2 * H * W, name=f"grad param {i}")


def reference_block(x, p, storage=torch.float64):
    """The block in float64; the reductions, which the kernel keeps in its storage dtype
    between the 1x1 and the 3x3 / 5x5 convs, are rounded to `storage` the same way."""
    stored = lambda t: t.to(storage).double()
    b1 = F.relu(F.conv2d(x, p[0], p[1]))
    b2 = F.relu(F.conv2d(stored(F.relu(F.conv2d(x, p[2], p[3]))), p[4], p[5], padding=1))
    b3 = F.relu(F.conv2d(stored(F.relu(F.conv2d(x, p[6], p[7]))), p[8], p[9], padding=2))
    b4 = F.relu(F.conv2d(F.max_pool2d(x, 3, 1, 1), p[10], p[11]))
    return torch.cat([b1, b2, b3, b4], 1)


def check_block(N, C, H, W, c1, r3, c3, r5, c5, cp, *, dtype=torch.float32, device="cpu", seed=0,
                x_values=None):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(N, C, H, W, generator=gen) if x_values is None else x_values
    shapes = [(c1, C, 1, 1), (c1,), (r3, C, 1, 1), (r3,), (c3, r3, 3, 3), (c3,),
              (r5, C, 1, 1), (r5,), (c5, r5, 5, 5), (c5,), (cp, C, 1, 1), (cp,)]
    params = [torch.randn(*s, generator=gen) / (s[1] * s[2] * s[3]) ** 0.5 if len(s) == 4
              else torch.randn(*s, generator=gen) * 0.1 for s in shapes]
    (xl, *pl), (xh, *ph) = _leaves([x, *params], dtype, device)
    y = kernels.inception_block(xl, *zip(pl[0::2], pl[1::2]))
    ref = reference_block(xh, ph, storage=dtype)
    g = torch.randn(ref.shape, generator=gen).to(dtype).double()
    y.backward(g.to(device, dtype))
    ref.backward(g)
    assert y.is_contiguous(memory_format=torch.channels_last)
    assert_close(y, ref, reduction=25 * max(r5, 1) + C, name="block forward")
    assert_close(xl.grad, xh.grad, reduction=25 * (c1 + r3 + r5 + cp), name="block grad x")
    names = ["w1", "b1", "wr3", "br3", "w3", "b3", "wr5", "br5", "w5", "b5", "wp", "bp"]
    for name, a, b in zip(names, pl, ph):
        assert_close(a.grad, b.grad, reduction=N * H * W * 25, name=f"block grad {name}")


@given(
    C=st.integers(1, 12), H=st.integers(1, 7), W=st.integers(1, 7),
    sizes=st.tuples(*[st.integers(1, 6)] * 6),
)
def test_inception_block_fuzz(C, H, W, sizes, device):
    check_block(2, C, H, W, *sizes, device=device, seed=C + H + W)


def test_pool_projection_ties_and_nan_route_like_torch(device):
    """Many equal maxima (integer-valued input) and a NaN: gradients go where torch's go."""
    gen = torch.Generator().manual_seed(3)
    x = torch.randint(-1, 2, (2, 5, 6, 7), generator=gen).float()
    check_block(2, 5, 6, 7, 2, 2, 3, 1, 2, 3, device=device, x_values=x)
    w = torch.randn(4, 5, 1, 1, dtype=torch.float64)
    x[0, 1, 2, 3] = float("nan")
    y = pointwise_forward(x.to(device), w.float().view(4, 5).to(device), None, activation=None, pool3=True)
    ref = F.conv2d(F.max_pool2d(x.double(), 3, 1, 1), w)
    assert_close(y, ref, reduction=5, name="pool projection with NaN")


def test_inception1x1_module_state_dict(device):
    mod = kernels.Inception1x1(8, [4, 3, 2]).to(device)
    assert sorted(mod.state_dict()) == sorted(
        f"convs.{i}.{p}" for i in range(3) for p in ("weight", "bias"))
    x = torch.randn(1, 8, 3, 3, device=device)
    outs = mod(x)
    for conv, y in zip(mod.convs, outs):
        assert_close(y, F.relu(conv.double()(x.double())), reduction=9)


@pytest.mark.parametrize("call, exc, words", [
    (lambda x: kernels.inception_1x1(x, [torch.randn(4, 6, 3, 3)]), ValueError, "must be a 1x1 filter bank"),
    (lambda x: kernels.inception_1x1(x, [torch.randn(4, 5, 1, 1)]), ValueError, "channel mismatch"),
    (lambda x: kernels.inception_1x1(x, []), ValueError, "at least one"),
    (lambda x: kernels.inception_1x1(x, [torch.randn(4, 6, 1, 1)], [torch.randn(3)]), ValueError,
     "biases\\[0\\] must have 4"),
    (lambda x: kernels.inception_1x1(x, [torch.randn(4, 6, 1, 1)], [None, None]), ValueError,
     "biases must match weights"),
    (lambda x: pointwise_forward(x, torch.randn(4, 6), None, out_a=torch.empty(2, 3, 5, 5)), ValueError,
     "out_a must have shape"),
    (lambda x: kernels.inception_block(x, *[(torch.randn(2, 6, 1, 1), None)] * 6), TypeError,
     "branch1 must be a \\(weight, bias\\) pair"),
])
def test_bad_input(call, exc, words):
    with pytest.raises(exc, match=words):
        call(torch.randn(2, 6, 5, 5))


# Inception modules of the paper's GoogLeNet: (name, C, H, c1, r3, c3, r5, c5, pool_proj).
GOOGLENET_BLOCKS = [
    ("inception3a", 192, 28, 64, 96, 128, 16, 32, 32),
    ("inception4a", 480, 14, 192, 96, 208, 16, 48, 64),
    ("inception5b", 832, 7, 384, 192, 384, 48, 128, 128),
]


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("block", GOOGLENET_BLOCKS, ids=[b[0] for b in GOOGLENET_BLOCKS])
def test_inception_block_real_gpu(block, dtype):
    _, C, H, *sizes = block
    check_block(4, C, H, H, *sizes, dtype=dtype, device="cuda")
