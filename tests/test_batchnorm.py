"""kernels.batch_norm / kernels.BatchNorm2d against float64 nn.BatchNorm2d: forward, every
gradient, running statistics over several steps, the fused residual add and ReLU."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

import kernels
from tests.helpers import ROUNDOFF, assert_close, stored
from tests.test_pool import LAYOUTS, _view, moved_argmax


def _pair(C, dtype, device, activation, **kwargs):
    """(Triton module, float64 nn.BatchNorm2d) with the same random affine parameters."""
    ref = torch.nn.BatchNorm2d(C, dtype=torch.float64, **kwargs)
    mod = kernels.BatchNorm2d(C, activation=activation, device=device, dtype=dtype, **kwargs)
    if ref.affine:
        with torch.no_grad():
            ref.weight.uniform_(-1.5, 1.5)
            ref.bias.uniform_(-0.5, 0.5)
    mod.load_state_dict(ref.state_dict())
    ref.load_state_dict(mod.state_dict())  # the same (rounded) values on both sides
    return mod, ref


def _reference(ref, x64, r64, activation):
    y = ref(x64)
    if r64 is not None:
        y = y + r64
    return F.relu(y) if activation == "relu" else y


def check_step(mod, ref, x64, *, residual, activation, dtype=torch.float32, device="cpu", layout="nchw",
               seed=0):
    """One forward + backward on both; forward, dx, dresidual, dweight, dbias compared.

    Tolerances follow the math: every output depends on the P-element mean and variance
    (reduction P); an absolute error u * |x| in x - mean becomes u * |x| / std in x_hat, and
    then is scaled by |weight| (the `scale` of atol). Gradients add the upstream size."""
    gen = torch.Generator().manual_seed(seed)
    x64 = x64.to(dtype).double()
    r64 = torch.randn(x64.shape, generator=gen).to(dtype).double() if residual else None
    x = _view(x64.to(device, dtype), layout).requires_grad_()
    r = r64.to(device, dtype).requires_grad_() if residual else None
    x64.requires_grad_()
    if residual:
        r64.requires_grad_()
    y, y64 = mod(x, r), _reference(ref, x64, r64, activation)
    gy64 = torch.randn(y64.shape, generator=gen).to(dtype).double()
    y.backward(gy64.to(device, dtype))
    y64.backward(gy64)

    P = x64.numel() // x64.shape[1]
    std = x64.detach().transpose(0, 1).reshape(x64.shape[1], -1).std(1, unbiased=False).clamp_min(1e-3)
    w = ref.weight.detach().abs().max().item() if ref.affine else 1.0
    spread = (x64.detach().abs().amax((0, 2, 3)) / std).max().item()
    g = gy64.abs().max().item()
    assert_close(y, y64, reduction=P, scale=w * spread, name="bn forward")
    assert_close(x.grad, x64.grad, reduction=P, scale=w * g * spread / std.min().item(), name="bn dx")
    if residual:
        assert_close(r.grad, r64.grad, name="bn dresidual")
    if ref.affine:
        assert_close(mod.weight.grad, ref.weight.grad, reduction=P, scale=g * spread, name="bn dweight")
        assert_close(mod.bias.grad, ref.bias.grad, reduction=P, scale=g, name="bn dbias")
    assert y.stride() == x.stride() or layout == "strided"
    return spread


def check_running(mod, ref, spread, P):
    if ref.running_mean is None:
        assert mod.running_mean is None
        return
    scale = ref.running_var.abs().max().item() * spread
    assert_close(mod.running_mean, ref.running_mean, reduction=P, scale=spread, name="running_mean")
    assert_close(mod.running_var, ref.running_var, reduction=P, scale=scale, name="running_var")
    assert int(mod.num_batches_tracked) == int(ref.num_batches_tracked)


@given(
    N=st.integers(1, 3), C=st.integers(1, 9), H=st.integers(1, 5), W=st.integers(2, 6),
    layout=st.sampled_from(LAYOUTS), residual=st.booleans(), activation=st.sampled_from([None, "relu"]),
    offset=st.sampled_from([0.0, 3.0]), seed=st.integers(0, 2**16),
)
def test_batchnorm_training_fuzz(N, C, H, W, layout, residual, activation, offset, seed, device):
    mod, ref = _pair(C, torch.float32, device, activation)
    mod.train(), ref.train()
    x64 = torch.randn(N, C, H, W, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 2 + offset
    spread = check_step(mod, ref, x64, residual=residual, activation=activation, device=device, layout=layout,
                        seed=seed)
    check_running(mod, ref, spread, N * H * W)


@pytest.mark.parametrize("kwargs", [{}, {"momentum": None}, {"momentum": 0.3, "affine": False},
                                    {"track_running_stats": False}],
                         ids=["default", "cumulative", "no-affine", "untracked"])
def test_batchnorm_running_stats_over_steps_then_eval(kwargs, device):
    """Several training steps move running_mean / running_var / num_batches_tracked as
    torch does (momentum, unbiased variance, cumulative average); eval uses them."""
    mod, ref = _pair(6, torch.float32, device, "relu", **kwargs)
    gen = torch.Generator().manual_seed(3)
    for step in range(3):
        x64 = torch.randn(2, 6, 5, 3, generator=gen, dtype=torch.float64) * (step + 1) + step
        spread = check_step(mod.train(), ref.train(), x64, residual=step == 1, activation="relu",
                            device=device, layout="channels_last", seed=step)
        check_running(mod, ref, spread, 2 * 5 * 3)
        mod.zero_grad(), ref.zero_grad()
    x64 = torch.randn(2, 6, 4, 4, generator=gen, dtype=torch.float64) + 1
    check_step(mod.eval(), ref.eval(), x64, residual=True, activation="relu", device=device, seed=9)


def test_batchnorm_variance_with_mean_far_from_zero(device):
    """mean 100, std 0.1: E[x**2] - E[x]**2 in fp32 would be off by ~ u * mean**2 / var
    = 6e-8 * 1e6 = 6%; deviations from block means merged by Chan's update keep it within
    a few u * mean / std (the rounding of each block mean, relative to std)."""
    x64 = (torch.randn(4, 3, 17, 19, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
           * 0.1 + 100).float().double()
    x = x64.float().to(device)
    mean, var = kernels.batchnorm.batch_norm_stats(x)
    ref_var = x64.var((0, 2, 3), unbiased=False)
    rel = ((var.double().cpu() - ref_var).abs() / ref_var).max().item()
    bound = 16 * ROUNDOFF[torch.float32] * (100 / 0.1)
    assert rel < bound, f"variance relative error {rel:.3g} > {bound:.3g}"
    assert_close(mean, x64.mean((0, 2, 3)), reduction=x64.numel() // 3, scale=100)


@pytest.mark.parametrize("pdtype", [torch.float32, torch.float16], ids=["fp32-params", "fp16-params"])
def test_batchnorm_float16_resnet_block_end(pdtype, device):
    """fp16 activations, channels_last, with fp32 parameters (mixed precision) or fp16 ones."""
    mod, ref = _pair(24, pdtype, device, "relu")
    x64 = torch.randn(2, 24, 7, 7, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    spread = check_step(mod.train(), ref.train(), x64, residual=True, activation="relu", dtype=torch.float16,
                        device=device, layout="channels_last", seed=5)
    check_running(mod, ref, spread, 2 * 7 * 7)


def test_batchnorm_module_state_dict_and_repr():
    ref, mod = torch.nn.BatchNorm2d(8), kernels.BatchNorm2d(8, activation="relu")
    assert list(ref.state_dict()) == list(mod.state_dict())
    assert all(ref.state_dict()[k].dtype == v.dtype for k, v in mod.state_dict().items())
    mod.load_state_dict(ref.state_dict())
    assert repr(mod) == repr(ref)[:-1] + ", activation='relu')"


@pytest.mark.parametrize("call, exc, words", [
    (lambda x, b: b(x[:, :3]), ValueError, "weight must have 3 elements"),
    (lambda x, b: kernels.batch_norm(x, None, None, training=False), ValueError, "required when training=False"),
    (lambda x, b: kernels.batch_norm(x[:1, :, :1, :1], None, None, training=True), ValueError, "more than 1 value"),
    (lambda x, b: b(x, x[:, :, :2]), ValueError, "residual must have x's shape"),
    (lambda x, b: kernels.batch_norm(x, b.running_mean, b.running_var, activation="gelu"), ValueError,
     "activation must be one of"),
    (lambda x, b: kernels.batch_norm(x, b.running_mean, b.running_var, b.weight), ValueError, "weight and bias"),
    (lambda x, b: kernels.batch_norm(x.long(), None, None, training=True), TypeError, "x must be float32"),
    (lambda x, b: kernels.batch_norm(x, b.running_mean, b.running_var, training=True, momentum=None), ValueError,
     "needs num_batches_tracked"),
    (lambda x, b: kernels.BatchNorm2d(4, activation="tanh"), ValueError, "activation must be one of"),
])
def test_batchnorm_bad_arguments(call, exc, words, device):
    bn = kernels.BatchNorm2d(4).to(device)
    with pytest.raises(exc, match=words):
        call(torch.randn(2, 4, 3, 3, device=device), bn)


def test_batchnorm_more_channels_than_one_tile(device):
    """C beyond one channel block of every pass (256 on the interpreter), NCHW."""
    mod, ref = _pair(301, torch.float32, device, "relu")
    x64 = torch.randn(2, 301, 3, 2, generator=torch.Generator().manual_seed(10), dtype=torch.float64) + 1
    spread = check_step(mod.train(), ref.train(), x64, residual=True, activation="relu", device=device, seed=10)
    check_running(mod, ref, spread, 2 * 3 * 2)


@pytest.mark.gpu
@pytest.mark.parametrize("C, hw, residual", [(256, 56, True), (64, 112, False), (2048, 7, True)],
                         ids=["resnet50.layer1.0.bn3", "resnet50.bn1", "resnet50.layer4.0.bn3"])
def test_batchnorm_real_layers_bf16(C, hw, residual):
    mod, ref = _pair(C, torch.float32, "cuda", "relu")
    x64 = torch.randn(4, C, hw, hw, generator=torch.Generator().manual_seed(13), dtype=torch.float64) + 0.5
    spread = check_step(mod.train(), ref.train(), x64, residual=residual, activation="relu", dtype=torch.bfloat16,
                        device="cuda", layout="channels_last", seed=13)
    check_running(mod, ref, spread, 4 * hw * hw)


# --------------------------------------------------------------------------- BatchNorm + ReLU + max-pool
@given(
    C=st.integers(1, 9), H=st.integers(3, 8), W=st.integers(3, 8), layout=st.sampled_from(LAYOUTS),
    pool=st.sampled_from([(3, 2, 1, False), (3, 2, 0, True), (2, 2, 0, False)]), training=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_batchnorm_relu_max_pool_fuzz(C, H, W, layout, pool, training, seed, device):
    """ResNet's stem (3x3/2 pad 1) and other pools: == max_pool2d(relu(bn(x))), forward,
    dx, dweight, dbias and running stats, in training and eval."""
    check_bn_relu_pool(C, H, W, pool, training=training, layout=layout, seed=seed, device=device)


def check_bn_relu_pool(C, H, W, pool, *, training=True, dtype=torch.float32, layout="nchw", seed=0, device="cpu"):
    """kernels.BatchNormReLUMaxPool2d against float64 nn.BatchNorm2d -> ReLU -> max_pool2d."""
    k, s, p, ceil = pool
    ref = torch.nn.BatchNorm2d(C, dtype=torch.float64)
    # the parameters from a generator of their own: the same case whatever ran before it
    # in the process (torch's global generator depends on the test order, xdist's too)
    params = torch.Generator().manual_seed(seed + 1_000_003)
    with torch.no_grad():
        ref.weight.uniform_(-1.5, 1.5, generator=params), ref.bias.uniform_(-0.5, 0.5, generator=params)
        ref.running_mean.uniform_(-1, 1, generator=params), ref.running_var.uniform_(0.5, 2, generator=params)
    mod = kernels.BatchNormReLUMaxPool2d(C, kernel_size=k, stride=s, padding=p, ceil_mode=ceil, device=device,
                                         dtype=dtype)
    mod.load_state_dict(ref.state_dict())
    ref.load_state_dict(mod.state_dict())
    ref.train(training), mod.train(training)
    gen = torch.Generator().manual_seed(seed)
    x64 = (torch.randn(2, C, H, W, generator=gen, dtype=torch.float64) * 2 + 1).to(dtype).double()
    x = _view(x64.to(device, dtype), layout).requires_grad_()
    x64.requires_grad_()
    # the kernel pools the stored (dtype-rounded) BN + ReLU output, as the unfused ops do
    z64 = F.relu(ref(x64))
    y, y64 = mod(x), F.max_pool2d(stored(z64, dtype), k, s, p, ceil_mode=ceil)
    gy64 = torch.randn(y64.shape, generator=gen).to(dtype).double()
    y.backward(gy64.to(device, dtype))
    y64.backward(gy64)
    P = 2 * H * W
    stats = x64.detach() if training else None
    std = (stats.std((0, 2, 3), unbiased=False) if training else ref.running_var.sqrt()).clamp_min(1e-3)
    spread = (x64.detach().abs().amax((0, 2, 3)).add(1) / std).max().item()
    g = gy64.abs().max().item()
    assert_close(y, y64, reduction=P, scale=1.5 * spread, name="bn+relu+pool forward")
    assert_close(x.grad, x64.grad, reduction=P + 4, scale=1.5 * 4 * g * spread / std.min().item(), name="dx")
    assert_close(mod.weight.grad, ref.weight.grad, reduction=P, scale=4 * g * spread, name="dweight")
    assert_close(mod.bias.grad, ref.bias.grad, reduction=P, scale=4 * g, name="dbias")
    check_running(mod, ref, spread, P)
    return moved_argmax(z64, dtype, k, s, p, ceil)


def test_bn_relu_pool_half_ties_made_by_rounding(device):
    """In a half dtype the kernel pools the stored BN + ReLU output, rounded as the unfused
    ops store it; the rounding ties distinct values and moves the argmax (and its gradient)
    in some windows, which the reference must share (tests.helpers.stored). The shape of
    the every-config test (tests/test_tuned_configs.py) in fp16, the interpreter's half
    type, with a seed whose rounding moves 3 windows (a float64 reference without the
    rounding routed their gradients elsewhere: 2 of 13,860 dx elements failed); bf16 on a
    GPU rounds 8x coarser and moves more."""
    moved = check_bn_relu_pool(70, 9, 11, (3, 2, 1, False), dtype=torch.float16, layout="channels_last", seed=3,
                               device=device)
    assert moved > 0, "no window's argmax moves: the case no longer exercises rounding ties"


# --------------------------------------------------------------------------- float64
@pytest.mark.parametrize("residual, activation", [(False, None), (True, "relu")])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_batchnorm_float64(residual, activation, training, device):
    """float64 modules: statistics, running stats and every sum in fp64, at float64's
    tolerance (an fp32 mean, variance or eps would miss it by orders of magnitude)."""
    mod, ref = _pair(5, torch.float64, device, activation)
    with torch.no_grad():
        ref.running_mean.uniform_(-1, 1), ref.running_var.uniform_(0.5, 2)
    mod.load_state_dict(ref.state_dict())
    mod.train(training), ref.train(training)
    x64 = torch.randn(2, 5, 4, 3, generator=torch.Generator().manual_seed(22), dtype=torch.float64) * 2 + 3
    spread = check_step(mod, ref, x64, residual=residual, activation=activation, dtype=torch.float64,
                        device=device, layout="channels_last", seed=3)
    assert mod.running_mean.dtype == torch.float64
    check_running(mod, ref, spread, 2 * 4 * 3)


def test_batchnorm_relu_max_pool_float64(device):
    ref = torch.nn.BatchNorm2d(4, dtype=torch.float64)
    mod = kernels.BatchNormReLUMaxPool2d(4, kernel_size=3, stride=2, padding=1, device=device, dtype=torch.float64)
    with torch.no_grad():
        ref.weight.uniform_(-1.5, 1.5), ref.bias.uniform_(-0.5, 0.5)
    mod.load_state_dict(ref.state_dict())
    gen = torch.Generator().manual_seed(23)
    x64 = torch.randn(2, 4, 7, 6, generator=gen, dtype=torch.float64) * 2 + 1
    x = x64.to(device).requires_grad_()
    x64.requires_grad_()
    y, y64 = mod(x), F.max_pool2d(F.relu(ref(x64)), 3, 2, 1)
    gy64 = torch.randn(y64.shape, generator=gen, dtype=torch.float64)
    y.backward(gy64.to(device))
    y64.backward(gy64)
    std = x64.detach().std((0, 2, 3), unbiased=False)
    spread = (x64.detach().abs().amax((0, 2, 3)).add(1) / std).max().item()
    g = gy64.abs().max().item()
    assert y.dtype == torch.float64
    assert_close(y, y64, reduction=84, scale=1.5 * spread, name="bn+relu+pool forward (float64)")
    assert_close(x.grad, x64.grad, reduction=88, scale=1.5 * 4 * g * spread / std.min().item(), name="dx (float64)")
    assert_close(mod.weight.grad, ref.weight.grad, reduction=84, scale=4 * g * spread, name="dweight (float64)")
    check_running(mod, ref, spread, 84)


@pytest.mark.parametrize("momentum", [0.1, None])
def test_batchnorm_empty_batch_in_training_follows_torch(momentum, device):
    # torch returns the empty output, leaves the running stats and still counts the batch
    ours = kernels.BatchNorm2d(3, momentum=momentum).to(device)
    ref = torch.nn.BatchNorm2d(3, momentum=momentum).to(device)
    for m in (ours, ref):
        m.running_mean.fill_(0.5)
        m.running_var.fill_(2.0)
    x = torch.randn(0, 3, 4, 4, device=device, requires_grad=True)
    y = ours(x)
    y.sum().backward()
    y_ref = ref(x.detach())
    assert y.shape == y_ref.shape == x.shape and x.grad.shape == x.shape
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        assert torch.equal(getattr(ours, name), getattr(ref, name)), name
    assert int(ours.num_batches_tracked) == 1
    assert torch.equal(ours.weight.grad, torch.zeros(3, device=device))
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        ours(torch.randn(1, 3, 1, 1, device=device))
