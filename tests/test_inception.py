"""Fused Inception 1x1s and the whole Inception block against separate float64 torch convs."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

import kernels
from kernels.inception import pointwise_forward
from tests.helpers import VIEW_KINDS, assert_close, view_fanout, view_recipe


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


def check_1x1_views(C, outs, H, W, views, *, dtype=torch.float32, device="cpu", seed=0):
    """inception_1x1 with x, every weight and every bias passed as the given (kind, dim)
    views of leaves (views: one per argument, x first, then weights, then biases)."""
    gen = torch.Generator().manual_seed(seed)
    n = len(outs)
    shapes = [(2, C, H, W)] + [(k, C, 1, 1) for k in outs] + [(k,) for k in outs]
    recipes = [view_recipe(shape, *v) for shape, v in zip(shapes, views)]
    leaves64 = [torch.randn(leaf, generator=gen).to(dtype).double().requires_grad_() for leaf, _ in recipes]
    leaves = [t.detach().to(device, dtype).requires_grad_() for t in leaves64]
    args = [fn(t) for (_, fn), t in zip(recipes, leaves)]
    args64 = [fn(t) for (_, fn), t in zip(recipes, leaves64)]
    ys = kernels.inception_1x1(args[0], args[1:1 + n], args[1 + n:])
    refs = [F.relu(F.conv2d(args64[0], w, b)) for w, b in zip(args64[1:1 + n], args64[1 + n:])]
    grads = [torch.randn(r.shape, generator=gen).to(dtype).double() for r in refs]
    sum((y * g.to(y)).sum() for y, g in zip(ys, grads)).backward()
    sum((r * g).sum() for r, g in zip(refs, grads)).backward()
    for i, (y, r) in enumerate(zip(ys, refs)):
        assert_close(y, r, reduction=C + 1, name=f"branch {i}")
    fans = [view_fanout(shape, *v) for shape, v in zip(shapes, views)]
    assert_close(leaves[0].grad, leaves64[0].grad, reduction=sum(outs) * fans[0], name="grad x")
    for i in range(1, 1 + 2 * n):
        assert_close(leaves[i].grad, leaves64[i].grad, reduction=2 * H * W * fans[i], name=f"grad param {i}")


@given(C=st.integers(1, 6), outs=st.lists(st.integers(1, 5), min_size=1, max_size=3), H=st.integers(1, 4),
       W=st.integers(1, 4), dtype=st.sampled_from([torch.float32, torch.float64]), data=st.data())
def test_inception_1x1_strided_views_fuzz(C, outs, H, W, dtype, data, device):
    """x, every weight and every bias as sliced / offset / transposed / expanded views."""
    ranks = [4] + [4] * len(outs) + [1] * len(outs)
    views = [data.draw(st.tuples(st.sampled_from(VIEW_KINDS), st.integers(0, r - 1))) for r in ranks]
    check_1x1_views(C, outs, H, W, views, dtype=dtype, device=device)


@pytest.mark.parametrize("arg", [0, 1, 3], ids=["x", "weights[0]", "biases[0]"])
@pytest.mark.parametrize("kind", [k for k in VIEW_KINDS if k != "dense"])
def test_inception_1x1_every_argument_as_a_view(arg, kind, device):
    views = [("dense", 0)] * 5
    views[arg] = (kind, -1)
    check_1x1_views(5, [3, 4], 3, 2, views, device=device)


def test_inception_1x1_unbatched_float64(device):
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(5, 3, 4, generator=gen, dtype=torch.float64)
    ws = [torch.randn(k, 5, 1, 1, generator=gen, dtype=torch.float64) for k in (2, 3)]
    bs = [torch.randn(4, generator=gen, dtype=torch.float64)[::2], None]
    ys = kernels.inception_1x1(x.to(device), [w.to(device) for w in ws],
                               [b.to(device) if b is not None else None for b in bs], activation=None)
    for y, w, b in zip(ys, ws, bs):
        assert y.shape == (w.shape[0], 3, 4)
        assert_close(y, F.conv2d(x, w, b), reduction=6, name="unbatched float64 branch")


@pytest.mark.parametrize("unbatched", [False, True], ids=["batched", "unbatched"])
def test_inception_1x1_outputs_may_be_modified_in_place(unbatched, device):
    """Without an activation F.conv2d saves no output, so torch lets each branch be changed in
    place (a following F.relu(inplace=True)); the other branches and every gradient stay
    torch's. (With the ReLU both refuse at backward: the ReLU's saved output was changed.)"""
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(2, 5, 3, 3, generator=gen, dtype=torch.float64)[0 if unbatched else slice(None)]
    ws = [torch.randn(k, 5, 1, 1, generator=gen, dtype=torch.float64) for k in (3, 2)]
    (x, *ws), (x64, *ws64) = _leaves([x, *ws], torch.float64, device)
    ys = kernels.inception_1x1(x, ws, activation=None)
    ys64 = [F.conv2d(x64, w) for w in ws64]
    for y in (ys[0], ys64[0]):
        F.relu(y, inplace=True)
    g = [torch.randn(y.shape, generator=gen, dtype=torch.float64) for y in ys64]
    torch.autograd.backward(ys, [t.to(device) for t in g])
    torch.autograd.backward(ys64, g)
    for y, y64 in zip(ys, ys64):
        assert_close(y, y64, reduction=5, name="branch")
    assert_close(x.grad, x64.grad, reduction=5, name="grad x")
    for w, w64 in zip(ws, ws64):
        assert_close(w.grad, w64.grad, reduction=18, name="grad weight")


def test_inception_empty_batch_and_meta(device):
    ws = [torch.randn(k, 4, 1, 1, device=device, requires_grad=True) for k in (2, 3)]
    bs = [torch.randn(k, device=device, requires_grad=True) for k in (2, 3)]
    x = torch.randn(0, 4, 3, 3, device=device, requires_grad=True)
    ys = kernels.inception_1x1(x, ws, bs)
    assert [tuple(y.shape) for y in ys] == [(0, 2, 3, 3), (0, 3, 3, 3)]
    sum(y.sum() for y in ys).backward()
    assert x.grad.shape == x.shape
    for t in (*ws, *bs):
        assert torch.equal(t.grad, torch.zeros_like(t)), "an empty batch gives zero parameter grads"

    meta = lambda *s: torch.empty(*s, device="meta", requires_grad=True)
    xm = meta(2, 4, 5, 6)
    ys = kernels.inception_1x1(xm, [meta(2, 4, 1, 1), meta(3, 4, 1, 1)], [meta(2), meta(3)])
    assert all(y.is_meta for y in ys) and [tuple(y.shape) for y in ys] == [(2, 2, 5, 6), (2, 3, 5, 6)]
    (gx,) = torch.autograd.grad(sum(y.sum() for y in ys), (xm,))
    assert gx.is_meta and gx.shape == xm.shape
    params = [(meta(2, 4, 1, 1), meta(2)), (meta(3, 4, 1, 1), meta(3)), (meta(5, 3, 3, 3), meta(5)),
              (meta(1, 4, 1, 1), meta(1)), (meta(2, 1, 5, 5), meta(2)), (meta(2, 4, 1, 1), meta(2))]
    y = kernels.inception_block(xm, *params)
    assert y.is_meta and y.shape == (2, 11, 5, 6)
    (gx,) = torch.autograd.grad(y.sum(), (xm,))
    assert gx.is_meta and gx.shape == xm.shape


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
                x_values=None, view=None):
    """The block against float64 torch; `view`: a view_recipe kind every tensor argument
    (x, each weight and bias) is passed as, along its last dim."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(N, C, H, W, generator=gen) if x_values is None else x_values
    shapes = [(c1, C, 1, 1), (c1,), (r3, C, 1, 1), (r3,), (c3, r3, 3, 3), (c3,),
              (r5, C, 1, 1), (r5,), (c5, r5, 5, 5), (c5,), (cp, C, 1, 1), (cp,)]
    params = [torch.randn(*s, generator=gen) / (s[1] * s[2] * s[3]) ** 0.5 if len(s) == 4
              else torch.randn(*s, generator=gen) * 0.1 for s in shapes]
    if view is not None:  # leaves of the recipe's shape; the views go to both sides below
        recipes = [view_recipe(t.shape, view, -1) for t in (x, *params)]
        x, *params = [torch.randn(leaf, generator=gen) * (0.1 if i else 1) for i, (leaf, _) in enumerate(recipes)]
    (xl, *pl), (xh, *ph) = _leaves([x, *params], dtype, device)
    if view is not None:
        args = [fn(t) for (_, fn), t in zip(recipes, [xl, *pl])]
        args64 = [fn(t) for (_, fn), t in zip(recipes, [xh, *ph])]
    else:
        args, args64 = [xl, *pl], [xh, *ph]
    y = kernels.inception_block(args[0], *zip(args[1::2], args[2::2]))
    ref = reference_block(args64[0], args64[1:], storage=dtype)
    g = torch.randn(ref.shape, generator=gen).to(dtype).double()
    y.backward(g.to(device, dtype))
    ref.backward(g)
    assert y.is_contiguous(memory_format=torch.channels_last)
    assert_close(y, ref, reduction=25 * max(r5, 1) + C, name="block forward")
    fan = max(H, W, c1, c3, c5, cp, C) if view == "expanded" else 1
    assert_close(xl.grad, xh.grad, reduction=25 * (c1 + r3 + r5 + cp) * fan, name="block grad x")
    names = ["w1", "b1", "wr3", "br3", "w3", "b3", "wr5", "br5", "w5", "b5", "wp", "bp"]
    for name, a, b in zip(names, pl, ph):
        assert_close(a.grad, b.grad, reduction=N * H * W * 25 * fan, name=f"block grad {name}")


@given(
    C=st.integers(1, 12), H=st.integers(1, 7), W=st.integers(1, 7),
    sizes=st.tuples(*[st.integers(1, 6)] * 6),
)
def test_inception_block_fuzz(C, H, W, sizes, device):
    check_block(2, C, H, W, *sizes, device=device, seed=C + H + W)


@pytest.mark.parametrize("view", ["sliced", "transposed", "expanded"])
def test_inception_block_strided_arguments(view, device):
    """Every tensor of the block as a strided view (the 3x3 / 5x5 biases are read directly)."""
    check_block(2, 5, 4, 3, 2, 3, 2, 2, 3, 2, device=device, view=view)


def test_inception_block_float64_unbatched(device):
    check_block(1, 6, 5, 4, 3, 2, 4, 2, 3, 2, dtype=torch.float64, device=device)
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(1, 4, 3, 3, generator=gen)
    ps = [(torch.randn(k, c, r, r, generator=gen), torch.randn(k, generator=gen))
          for k, c, r in ((2, 4, 1), (2, 4, 1), (3, 2, 3), (1, 4, 1), (2, 1, 5), (2, 4, 1))]
    ps = [(w.to(device), b.to(device)) for w, b in ps]
    assert torch.equal(kernels.inception_block(x[0].to(device), *ps), kernels.inception_block(x.to(device), *ps)[0])


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
    (lambda x: kernels.inception_1x1(x[:, :0], [torch.randn(4, 0, 1, 1)]), ValueError, "x must have channels"),
    (lambda x: kernels.inception_1x1(x.to(torch.complex64), [torch.randn(4, 6, 1, 1)]), TypeError,
     "x must be float32"),
    (lambda x: kernels.inception_1x1(x, [torch.randn(4, 6, 1, 1)], [torch.randn(4, 1)]), ValueError,
     "biases\\[0\\] must have 1 dimensions"),
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
