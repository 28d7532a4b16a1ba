"""kernels.max_pool2d and the fused LRN + max-pool kernels against float64 torch, forward
and backward: odd sizes, strided views, ceil_mode, padding, ties, NaN and -inf."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

import kernels
from tests.helpers import assert_close, stored

LAYOUTS = ("nchw", "channels_last", "strided")


def _view(t: torch.Tensor, layout: str) -> torch.Tensor:
    """`t` (NCHW) as the same values in `layout`: dense NCHW, channels_last, or a strided
    view (every other channel of a wider tensor, H and W swapped in memory)."""
    if layout == "channels_last":
        return t.contiguous(memory_format=torch.channels_last)
    if layout == "strided":
        N, C, H, W = t.shape
        wide = torch.zeros(N, 2 * C, W, H, dtype=t.dtype, device=t.device)
        wide[:, ::2] = t.transpose(2, 3)
        return wide[:, ::2].transpose(2, 3)
    return t.contiguous()


def _inputs(x64: torch.Tensor, dtype, device, layout):
    """(kernel leaf in `layout`, float64 leaf with the same rounded values)."""
    x64 = x64.to(dtype).double()
    x = _view(x64.to(device, dtype, copy=True), layout)  # a tensor of its own, float64 too
    torch.testing.assert_close(x.double().cpu(), x64, rtol=0, atol=0, equal_nan=True)
    return x.requires_grad_(), x64.clone().requires_grad_()


def check_pool(x64, kernel_size, stride, padding, ceil_mode, *, dtype=torch.float32, device="cpu",
               layout="nchw", seed=0):
    x, ref = _inputs(x64, dtype, device, layout)
    y = kernels.max_pool2d(x, kernel_size, stride, padding, 1, ceil_mode)
    y64 = F.max_pool2d(ref, kernel_size, stride, padding, 1, ceil_mode)
    gy64 = torch.randn(y64.shape, generator=torch.Generator().manual_seed(seed)).to(dtype).double()
    y.backward(gy64.to(device, dtype))
    y64.backward(gy64)
    # The maximum is one of the inputs: exact. Each input gathers the gradients of the
    # windows that chose it (at most ceil(k/s)**2 of them).
    assert_close(y, y64, name="max_pool2d forward")
    assert_close(x.grad, ref.grad, reduction=4, name="max_pool2d grad")
    want = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    assert y.is_contiguous(memory_format=want)
    return y


@st.composite
def pools(draw):
    k = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    s = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    p = (draw(st.integers(0, k[0] // 2)), draw(st.integers(0, k[1] // 2)))
    ceil = draw(st.booleans())
    H = draw(st.integers(max(k[0] - 2 * p[0], 1), 9))
    W = draw(st.integers(max(k[1] - 2 * p[1], 1), 9))
    return k, s, p, ceil, H, W


@given(geom=pools(), C=st.integers(1, 9), layout=st.sampled_from(LAYOUTS), ties=st.booleans(),
       seed=st.integers(0, 2**16))
def test_max_pool_fuzz(geom, C, layout, ties, seed, device):
    (k, s, p, ceil, H, W) = geom
    gen = torch.Generator().manual_seed(seed)
    # ties: small integers, so most windows hold several equal maxima
    x64 = (torch.randint(-2, 3, (2, C, H, W), generator=gen).double() if ties
           else torch.randn(2, C, H, W, generator=gen, dtype=torch.float64))
    check_pool(x64, k, s, p, ceil, device=device, layout=layout, seed=seed)


# The nets' pools: AlexNet 3x3/2 (55 -> 27), GoogLeNet 3x3/2 ceil (112 -> 56), ResNet 3x3/2
# pad 1 (112 -> 56), at sizes that keep the same window overlaps and ragged ends.
NET_POOLS = {
    "alexnet.pool1": ((3, 2, 0, False), 11),
    "googlenet.maxpool1": ((3, 2, 0, True), 12),
    "resnet.maxpool": ((3, 2, 1, False), 12),
}


@pytest.mark.parametrize("name", sorted(NET_POOLS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_max_pool_net_shapes(name, dtype, device):
    (k, s, p, ceil), hw = NET_POOLS[name]
    x64 = torch.randn(2, 24, hw, hw, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    check_pool(x64, k, s, p, ceil, dtype=dtype, device=device, layout="channels_last")


def test_max_pool_nan_and_inf_follow_torch(device):
    """The last NaN of a window wins (torch's `val > max || isnan(val)`), and an all -inf
    window routes its gradient to its first in-bounds element."""
    x64 = torch.randn(1, 3, 7, 7, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    x64[0, 0, 1, 1] = x64[0, 0, 2, 2] = x64[0, 0, 4, 3] = float("nan")
    x64[0, 1] = float("-inf")
    x64[0, 2, :3, :3] = float("-inf")
    x64[0, 2, 5, 5] = float("inf")
    for layout in ("nchw", "channels_last"):
        y = check_pool(x64, 3, 2, 1, False, device=device, layout=layout)
        assert torch.isnan(y[0, 0]).any() and torch.isneginf(y[0, 1]).all()


def test_max_pool_unbatched_and_module(device):
    x = torch.randn(4, 7, 6, device=device)
    assert_close(kernels.max_pool2d(x, 3, 2, ceil_mode=True), F.max_pool2d(x.double(), 3, 2, ceil_mode=True))
    ref, mod = torch.nn.MaxPool2d(3, 2, 1), kernels.MaxPool2d(3, 2, 1)
    assert repr(mod) == repr(ref)
    assert_close(mod(x[None]), ref(x[None].double()))


def test_max_pool_one_element_sequences_expand_like_torch(device):
    """F.max_pool2d takes kernel_size=(3,), stride=[2], padding=(1,) as one value for h and w."""
    x = torch.randn(1, 2, 7, 6, device=device)
    assert_close(kernels.max_pool2d(x, (3,), [2], (1,)), F.max_pool2d(x.double(), (3,), [2], (1,)))


@pytest.mark.parametrize("call, exc, words", [
    (lambda x: kernels.max_pool2d(x, 3, 2, dilation=2), ValueError, "dilation must be 1"),
    (lambda x: kernels.max_pool2d(x, 3, 2, padding=2), ValueError, "padding must be at most half"),
    (lambda x: kernels.max_pool2d(x, 0), ValueError, "kernel_size must be positive"),
    (lambda x: kernels.max_pool2d(x, 3, 0), ValueError, "stride must be positive"),
    (lambda x: kernels.max_pool2d(x, 9), ValueError, "output size"),
    (lambda x: kernels.max_pool2d(x, 2.5), TypeError, "kernel_size must be an int"),
    (lambda x: kernels.max_pool2d(x[0, 0], 2), ValueError, "x must have 3 or 4 dimensions"),
    (lambda x: kernels.max_pool2d(x.long(), 2), TypeError, "x must be float32"),
    (lambda x: kernels.max_pool2d(x, 2, ceil_mode=1), TypeError, "ceil_mode must be a bool"),
    (lambda x: kernels.MaxPool2d(2, return_indices=True)(x), ValueError, "return_indices"),
])
def test_max_pool_bad_arguments(call, exc, words, device):
    with pytest.raises(exc, match=words):
        call(torch.randn(1, 2, 5, 5, device=device))


def test_max_pool_backward_is_deterministic(device):
    x = torch.randint(0, 2, (2, 5, 9, 9), device=device).float().requires_grad_()
    grads = []
    for _ in range(2):
        x.grad = None
        kernels.max_pool2d(x, 3, 2).backward(torch.ones(2, 5, 4, 4, device=device))
        grads.append(x.grad.clone())
    assert torch.equal(grads[0], grads[1])


# --------------------------------------------------------------------------- LRN + max-pool
def check_lrn_pool(order, x64, lrn, pool, *, dtype=torch.float32, device="cpu", layout="nchw", seed=0):
    """`order` "lrn_pool" (AlexNet, GoogLeNet norm2 -> maxpool2) or "pool_lrn" (GoogLeNet's
    maxpool1 -> norm1) against the two torch ops in float64, forward and dx."""
    size, alpha, beta, k = lrn
    ks, st_, pad, ceil = pool
    x, ref = _inputs(x64, dtype, device, layout)
    moved = 0
    if order == "lrn_pool":
        y = kernels.lrn_max_pool2d(x, size, alpha, beta, k, kernel_size=ks, stride=st_, padding=pad, ceil_mode=ceil)
        # the kernel pools the stored (dtype-rounded) LRN output, as the unfused ops do
        n64 = F.local_response_norm(ref, size, alpha, beta, k)
        y64 = F.max_pool2d(stored(n64, dtype), ks, st_, pad, ceil_mode=ceil)
        moved = moved_argmax(n64, dtype, ks, st_, pad, ceil)
    else:
        y = kernels.max_pool2d_lrn(x, ks, st_, pad, ceil, size=size, alpha=alpha, beta=beta, k=k)
        y64 = F.local_response_norm(F.max_pool2d(ref, ks, st_, pad, ceil_mode=ceil), size, alpha, beta, k)
    gy64 = torch.randn(y64.shape, generator=torch.Generator().manual_seed(seed)).to(dtype).double()
    y.backward(gy64.to(device, dtype))
    y64.backward(gy64)
    # LRN: `size` squares and one pow per output; its gradient sums 2 * size terms, on top
    # of the (up to 4) pooled gradients gathered at each input pixel. pool_lrn's backward
    # stores the LRN gradient (|.| <= |dy| for k >= 1) in x's dtype before gathering up to
    # 4 of them, as the unfused torch ops do: 4 roundings of size max|dy|.
    assert_close(y, y64, reduction=size, name=f"{order} forward")
    scale = 4 * gy64.abs().max().item() if order == "pool_lrn" else 1.0
    assert_close(x.grad, ref.grad, reduction=2 * size + 4, scale=max(scale, 1.0), name=f"{order} grad")
    want = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    assert y.is_contiguous(memory_format=want)
    return moved


def moved_argmax(z64, dtype, k, s, p, ceil) -> int:
    """How many pooling windows of the float64 map `z64` pick another element once it is
    stored in `dtype` (ties made by rounding): where a float64 reference that skipped the
    rounding would route the gradient elsewhere than the kernel does."""
    _, exact = F.max_pool2d(z64.detach(), k, s, p, ceil_mode=ceil, return_indices=True)
    _, rounded = F.max_pool2d(stored(z64.detach(), dtype), k, s, p, ceil_mode=ceil, return_indices=True)
    return int((exact != rounded).sum())


def test_lrn_pool_half_ties_made_by_rounding(device):
    """In a half dtype the fused LRN + max-pool compares the LRN outputs rounded as the
    unfused ops store them; the rounding ties distinct values and moves the argmax (and
    its gradient) in some windows, which the reference must share (tests.helpers.stored).
    The every-config test's case (tests/test_tuned_configs.py) with a seed whose fp16
    rounding moves a window; its own data moves one in bf16 on a GPU."""
    x64 = torch.randn(2, 11, 9, 11, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    moved = check_lrn_pool("lrn_pool", x64, (5, 1e-2, 0.75, 2.0), (3, 2, 0, True), dtype=torch.float16,
                           device=device, layout="channels_last", seed=4)
    assert moved > 0, "no window's argmax moves: the case no longer exercises rounding ties"


NET_POOL_GEOMS = [(3, 2, 0, False), (3, 2, 0, True), (3, 2, 1, False), (2, 3, 1, True)]


@given(order=st.sampled_from(["lrn_pool", "pool_lrn"]), pool=st.sampled_from(NET_POOL_GEOMS),
       C=st.integers(1, 12), H=st.integers(3, 8), W=st.integers(3, 8), size=st.integers(1, 6),
       alpha=st.floats(1e-4, 1.0), beta=st.floats(0.1, 1.0), k=st.floats(1.0, 2.5),
       layout=st.sampled_from(LAYOUTS), seed=st.integers(0, 2**16))
def test_lrn_pool_fuzz(order, pool, C, H, W, size, alpha, beta, k, layout, seed, device):
    x64 = torch.randn(2, C, H, W, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 2
    check_lrn_pool(order, x64, (size, alpha, beta, k), pool, device=device, layout=layout, seed=seed)


@pytest.mark.parametrize("order", ["lrn_pool", "pool_lrn"])
def test_lrn_pool_ties_follow_torch(order, device):
    """Spatially constant channels make every window a tie after the LRN (lrn_pool), and
    small integers give ties before it (pool_lrn): the first maximum wins in both."""
    gen = torch.Generator().manual_seed(7)
    if order == "lrn_pool":
        x64 = torch.randn(2, 6, 1, 1, generator=gen, dtype=torch.float64).expand(2, 6, 7, 7).contiguous()
    else:
        x64 = torch.randint(-1, 2, (2, 6, 7, 7), generator=gen).double()
    check_lrn_pool(order, x64, (5, 0.5, 0.75, 2.0), (3, 2, 0, True), device=device, layout="channels_last")


@pytest.mark.parametrize("order, lrn, C", [("lrn_pool", (5, 1e-4, 0.75, 2.0), 96),   # alexnet norm1 -> pool1
                                           ("pool_lrn", (5, 1e-4, 0.75, 1.0), 64)])  # googlenet maxpool1 -> norm1
def test_lrn_pool_net_settings_float16(order, lrn, C, device):
    x64 = torch.randn(1, C, 7, 7, generator=torch.Generator().manual_seed(8), dtype=torch.float64) * 4
    check_lrn_pool(order, x64, lrn, (3, 2, 0, order == "pool_lrn"), dtype=torch.float16, device=device,
                   layout="channels_last")


def test_lrn_pool_modules_and_bad_arguments(device):
    x = torch.randn(1, 4, 6, 6, device=device)
    mod = kernels.LRNMaxPool2d(3, 0.1, 0.75, 1.0, kernel_size=3, stride=2)
    assert_close(mod(x), F.max_pool2d(F.local_response_norm(x.double(), 3, 0.1, 0.75, 1.0), 3, 2), reduction=3)
    mod = kernels.MaxPool2dLRN(3, 0.1, 0.75, 1.0, kernel_size=3, stride=2, ceil_mode=True)
    assert_close(mod(x), F.local_response_norm(F.max_pool2d(x.double(), 3, 2, ceil_mode=True), 3, 0.1, 0.75, 1.0),
                 reduction=3)
    with pytest.raises(ValueError, match="size must be an int"):
        kernels.lrn_max_pool2d(x, 0, kernel_size=3)
    with pytest.raises(ValueError, match="padding must be at most half"):
        kernels.max_pool2d_lrn(x, 3, 2, 2, size=3)
    with pytest.raises(ValueError, match="x must have 4 dimensions"):
        kernels.lrn_max_pool2d(x[0], 3, kernel_size=3)


def test_max_pool_more_channels_than_one_tile(device):
    """C beyond one channel block (256 on the interpreter, 64-128 on a GPU), odd, strided."""
    x64 = torch.randn(1, 301, 5, 4, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    check_pool(x64, 3, 2, 1, True, device=device, layout="strided")


# The nets' real layers at a small batch (GPU only: the interpreter would take minutes).
REAL_LRN_POOLS = {
    "alexnet.norm1+pool1": ("lrn_pool", (5, 1e-4, 0.75, 2.0), (3, 2, 0, False), (96, 55)),
    "googlenet.maxpool1+norm1": ("pool_lrn", (5, 1e-4, 0.75, 1.0), (3, 2, 0, True), (64, 112)),
    "googlenet.norm2+maxpool2": ("lrn_pool", (5, 1e-4, 0.75, 1.0), (3, 2, 0, True), (192, 56)),
}


@pytest.mark.gpu
@pytest.mark.parametrize("name", sorted(REAL_LRN_POOLS))
def test_lrn_pool_real_layers_bf16(name):
    order, lrn, pool, (C, hw) = REAL_LRN_POOLS[name]
    x64 = torch.randn(4, C, hw, hw, generator=torch.Generator().manual_seed(11), dtype=torch.float64) * 4
    check_lrn_pool(order, x64, lrn, pool, dtype=torch.bfloat16, device="cuda", layout="channels_last")


@pytest.mark.gpu
def test_max_pool_real_layer_bf16():
    x64 = torch.randn(4, 64, 112, 112, generator=torch.Generator().manual_seed(12), dtype=torch.float64)
    check_pool(x64, 3, 2, 1, False, dtype=torch.bfloat16, device="cuda", layout="channels_last")  # resnet.maxpool


# --------------------------------------------------------------------------- float64
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_pool_kernels_float64(layout, device):
    """float64 in, float64 out, fp64 sums: the max-pool (its backward gathers up to 4
    gradients) and both fused LRN orders, at float64's tolerance (an fp32 accumulator or
    fp32 LRN scalars would miss it by orders of magnitude)."""
    x64 = torch.randn(2, 7, 9, 8, generator=torch.Generator().manual_seed(21), dtype=torch.float64) * 2
    y = check_pool(x64, 3, 2, 1, True, dtype=torch.float64, device=device, layout=layout, seed=1)
    assert y.dtype == torch.float64
    for order in ("lrn_pool", "pool_lrn"):
        check_lrn_pool(order, x64, (5, 0.5, 0.75, 2.0), (3, 2, 0, True), dtype=torch.float64, device=device,
                       layout=layout, seed=2)


def test_lrn_pool_backward_when_only_ceil_mode_gives_an_output(device):
    # floor mode would give a 0x0 output here; the backward must use the forward's ceil_mode
    x = torch.randn(1, 4, 2, 2, device=device, dtype=torch.float64, requires_grad=True)
    ref = x.detach().clone().requires_grad_(True)
    y = kernels.lrn_max_pool2d(x, 3, kernel_size=3, stride=2, ceil_mode=True)
    y64 = F.max_pool2d(F.local_response_norm(ref, 3), 3, 2, ceil_mode=True)
    assert y.shape == y64.shape == (1, 4, 1, 1)
    g = torch.randn_like(y64)
    y.backward(g)
    y64.backward(g)
    assert_close(y, y64, reduction=3)
    assert_close(x.grad, ref.grad, reduction=3)
