"""The nets: exact architectures, backend equivalence, folding, describe, recipe and data."""

from __future__ import annotations

import importlib.util
from collections import OrderedDict

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

import kernels
import nets
from nets import data, recipe
from nets.layers import convert
from tests.helpers import assert_close

PARAMS = {
    "alexnet": 60_965_224, "googlenet": 13_378_280, "resnet18": 11_689_512, "resnet34": 21_797_672,
    "resnet50": 25_557_032, "resnet101": 44_549_160, "resnet152": 60_192_808,
}


def _meta(arch, backend="torch", **kw):
    with torch.device("meta"):
        return nets.build(arch, backend, **kw)


@pytest.mark.parametrize("arch", nets.ARCHS)
def test_parameter_counts(arch):
    assert sum(p.numel() for p in _meta(arch).parameters()) == PARAMS[arch]


def test_googlenet_without_aux_and_one_tower_alexnet():
    assert sum(p.numel() for p in _meta("googlenet", aux_logits=False).parameters()) == 6_998_552
    one = _meta("alexnet", groups=1)
    assert one.features.conv2.groups == 1 and one.features.conv2.weight.shape == (256, 96, 5, 5)


@pytest.mark.parametrize("arch", nets.ARCHS)
def test_backends_share_state_dict(arch):
    a, b = _meta(arch, "torch").state_dict(), _meta(arch, "triton").state_dict()
    assert list(a) == list(b)
    assert all(a[k].shape == b[k].shape for k in a)


STAGES = {
    "alexnet": {"features.conv1": (96, 55), "features.pool1": (96, 27), "features.conv2": (256, 27),
                "features.pool2": (256, 13), "features.conv5": (256, 13), "features.pool5": (256, 6)},
    "googlenet": {"conv1": (64, 112), "maxpool1": (64, 56), "conv3": (192, 56), "maxpool2": (192, 28),
                  "inception3b": (480, 28), "maxpool3": (480, 14), "inception4e": (832, 14),
                  "maxpool4": (832, 7), "inception5b": (1024, 7)},
    "resnet18": {"conv1": (64, 112), "maxpool": (64, 56), "layer1": (64, 56), "layer2": (128, 28),
                 "layer3": (256, 14), "layer4": (512, 7)},
    "resnet50": {"layer1": (256, 56), "layer2": (512, 28), "layer3": (1024, 14), "layer4": (2048, 7)},
}


@pytest.mark.parametrize("arch", sorted(STAGES))
def test_shape_after_every_stage(arch):
    model = _meta(arch).eval()
    seen = {}
    for name in STAGES[arch]:
        model.get_submodule(name).register_forward_hook(
            lambda m, a, out, name=name: seen.__setitem__(name, tuple(out.shape)))
    logits = model(torch.empty(2, 3, 224, 224, device="meta"))
    assert tuple(logits.shape) == (2, 1000)
    assert seen == {name: (2, c, hw, hw) for name, (c, hw) in STAGES[arch].items()}


def test_aux_outputs_only_in_training():
    model = _meta("googlenet")
    x = torch.empty(2, 3, 224, 224, device="meta")
    out = model.train()(x)
    assert isinstance(out, nets.GoogLeNetOutputs)
    assert out.aux1.shape == out.aux2.shape == out.logits.shape == (2, 1000)
    assert isinstance(model.eval()(x), torch.Tensor)
    assert isinstance(_meta("googlenet", aux_logits=False).train()(x), torch.Tensor)


# Small inputs that keep every stage non-empty; the Triton side runs on the interpreter.
SMALL = {"alexnet": 67, "googlenet": 64, "resnet18": 32, "resnet50": 32}


@pytest.mark.parametrize("arch", sorted(SMALL))
def test_torch_and_triton_backends_agree(arch, device, ieee_fp32):
    torch.manual_seed(0)
    ref = nets.build(arch, "torch", num_classes=10).to(device).eval()
    tri = convert(ref, "triton")
    x = torch.randn(1, 3, SMALL[arch], SMALL[arch], device=device)
    with torch.no_grad():
        expected, got = ref(x), tri(x)
    # Deep nets compound fp32 rounding; the bound scales with the logits' magnitude.
    scale = expected.abs().max().item()
    assert_close(got, expected, reduction=4096, scale=max(scale, 1.0), name=f"{arch} logits")


def _check_training_gradients(arch, hw, batch, device, names, **options):
    """One training forward + backward on each backend (same weights, dropout off: the two
    backends draw their masks from different generators; tests/test_linear.py checks the
    Triton dropout): the loss and the named parameters' gradients agree, and the triton
    step runs no torch op for BatchNorm, max-pool, LRN, ReLU or dropout."""
    torch.manual_seed(0)
    ref = nets.build(arch, "torch", num_classes=10, **options).to(device).train()
    tri = convert(ref, "triton")
    x = torch.randn(batch, 3, hw, hw, device=device)
    target = torch.randint(0, 10, (batch,), device=device)
    losses, ops = [], []
    for model in (ref, tri):
        torch.manual_seed(1)
        with _AtenOps() as recorded:
            value = recipe.loss(model(x), target)
            value.backward()
        losses.append(value.detach())
        ops.append(recorded.names)
    _assert_no_torch_norm_or_pool(ops, arch)
    assert_close(losses[1], losses[0].double(), reduction=4096, name=f"{arch} training loss")
    for name in names:
        g_ref = ref.get_parameter(name).grad
        assert_close(tri.get_parameter(name).grad, g_ref, reduction=4096,
                     scale=max(g_ref.abs().max().item(), 1e-3), name=f"{arch} grad {name}")


class _AtenOps(TorchDispatchMode):
    """Records the name of every aten op that runs (forward and autograd's backward)."""

    def __init__(self):
        super().__init__()
        self.names: set[str] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.add(func.overloadpacket.__name__)
        return func(*args, **(kwargs or {}))


# torch's BatchNorm (native/cudnn, forward and backward), max-pool (with indices, and its
# backward), LRN (F.local_response_norm pools the squares with avg_pool3d), ReLU (relu and
# its threshold_backward) and dropout (native_dropout, bernoulli; with p=0 torch's nn.Dropout
# still runs, so the recorder sees the torch backend's).
_TORCH_NORM_POOL = ("batch_norm", "max_pool", "avg_pool3d", "relu", "threshold_backward", "dropout", "bernoulli")


def _assert_no_torch_norm_or_pool(ops, what):
    """`ops`: the op names of the torch backend's step (the control: the recorder sees
    them) and of the triton backend's."""
    torch_ops, triton_ops = ({n for n in names if any(word in n for word in _TORCH_NORM_POOL)} for names in ops)
    assert torch_ops, f"{what}: the recorder saw no BatchNorm/pool/LRN op of the torch backend"
    assert not triton_ops, f"{what}: the triton backend ran torch ops {sorted(triton_ops)}"


def test_backends_agree_in_training_alexnet(device, ieee_fp32):
    _check_training_gradients("alexnet", 67, 2, device, [
        "features.conv1.weight", "features.conv2.weight", "features.conv2.bias",
        "features.conv4.weight", "classifier.fc6.weight", "classifier.fc7.bias"], dropout=0.0)


@pytest.mark.gpu
@pytest.mark.parametrize("arch, names, options", [
    ("resnet18", ["conv1.weight", "layer1.0.conv2.weight", "layer4.1.conv1.weight", "fc.weight"], {}),
    ("resnet50", ["conv1.weight", "layer2.0.conv1.weight", "layer3.5.conv3.weight"], {}),
    ("googlenet", ["conv1.weight", "inception3a.branch2.0.weight", "inception4a.branch4.1.bias",
                   "inception5b.branch3.1.weight", "aux1.conv.weight", "aux1.fc1.bias"],
     {"dropout": 0.0, "aux_dropout": 0.0}),
])
def test_backends_agree_in_training_gpu(arch, names, options, ieee_fp32):
    _check_training_gradients(arch, 224, 4, "cuda", names, **options)


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_alexnet_drops_the_hidden_fc_outputs(backend, device):
    """The paper's dropout, "in the first two fully-connected layers" (sec. 4.2; cuda-convnet's
    and Caffe's nets alike): fc6 reads pool5 untouched; fc7 and fc8 read fc6's and fc7's ReLU
    outputs with about half of them zeroed and the rest doubled (p = 0.5)."""
    torch.manual_seed(0)
    model = nets.build("alexnet", backend, num_classes=10).to(device).train()
    seen = {}
    for name in ("avgpool", "classifier.fc6", "classifier.fc7", "classifier.fc8"):
        model.get_submodule(name).register_forward_hook(
            lambda m, i, o, name=name: seen.__setitem__(name, (i[0].detach(), o.detach())))
    with torch.no_grad():
        model(torch.randn(2, 3, 63, 63, device=device))
    assert torch.equal(seen["classifier.fc6"][0], seen["avgpool"][1].flatten(1))
    for fc, reader in (("classifier.fc6", "classifier.fc7"), ("classifier.fc7", "classifier.fc8")):
        m = model.get_submodule(fc)
        hidden = F.relu(F.linear(seen[fc][0], m.weight, m.bias))  # the fc's output before dropout
        got = seen[reader][0]
        kept, live = got != 0, hidden > 0
        torch.testing.assert_close(got[kept], 2 * hidden[kept], rtol=1e-5, atol=1e-6)
        dropped = (live & ~kept).sum().item() / live.sum().item()
        assert live.sum() > 1000 and 0.45 < dropped < 0.55, f"{reader} input: {dropped:.3f} of {fc}'s outputs dropped"


@pytest.mark.parametrize("arch, check_triton", [("resnet18", True), ("resnet50", False)])
def test_fuse_for_inference_matches_unfused(arch, check_triton, device, ieee_fp32):
    """Folding is backend-independent; the Triton epilogue (bias+residual+ReLU) is checked
    on ResNet-18 here (the interpreter makes ResNet-50 slow) and on both on GPU."""
    torch.manual_seed(0)
    model = nets.build(arch, "torch", num_classes=10).to(device)
    with torch.no_grad():  # non-trivial BN statistics
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    model.eval()
    fused = nets.fuse_for_inference(model)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())
    x = torch.randn(2, 3, 32, 32, device=device)
    with torch.no_grad():
        expected = model.double()(x.double())
        got_torch = fused(x)
        got_triton = convert(fused, "triton")(x) if check_triton or device == "cuda" else None
    scale = max(expected.abs().max().item(), 1.0)
    assert_close(got_torch, expected, reduction=4096, scale=scale, name="folded torch")
    if got_triton is not None:
        assert_close(got_triton, expected, reduction=4096, scale=scale, name="folded triton")


def test_describe_lists_every_layer_and_who_runs_it():
    frame = nets.describe(nets.build("alexnet", "triton"), (2, 3, 224, 224))
    assert list(frame.columns) == ["layer", "op", "backend", "kernel", "output_shape", "params", "gflop"]
    rows = frame.set_index("layer")
    assert rows.loc["features.conv1", "backend"] == "triton"
    assert rows.loc["features.conv1", "op"] == "conv11x11/4+bias+relu"
    assert rows.loc["features.norm1", "kernel"] == "fused into features.pool1"
    assert rows.loc["features.pool1", "kernel"] == "lrn_max_pool2d"
    assert rows.loc["classifier.fc6", "backend"] == "triton"  # its bias/ReLU/dropout epilogue
    assert rows.loc["classifier.relu6", "kernel"] == "fused into classifier.fc6"
    assert rows.loc["classifier.drop6", "kernel"] == "fused into classifier.fc6"
    assert rows.loc["classifier.drop7", "kernel"] == "fused into classifier.fc7"
    assert rows.loc["classifier.fc8", "backend"] == "torch"
    assert rows.loc["features.conv2", "output_shape"] == (2, 256, 27, 27)
    assert rows["params"].sum() == PARAMS["alexnet"]
    # conv2: 2 FLOPs x N x K x P x Q x (C/groups) x R x S
    assert rows.loc["features.conv2", "gflop"] == pytest.approx(2 * 2 * 256 * 27 * 27 * 48 * 25 / 1e9)

    goog = nets.describe(nets.build("googlenet", "triton").eval(), (1, 3, 224, 224)).set_index("layer")
    assert goog.loc["inception3a.branch4.0", "backend"] == "triton"
    assert goog.loc["inception3a.branch2.1", "kernel"] == "inception_block"
    assert goog.loc["aux1.fc1", "output_shape"] is None  # aux heads do not run in eval
    torch_goog = nets.describe(nets.build("googlenet", "torch").eval(), (1, 3, 224, 224))
    assert set(torch_goog["backend"]) == {"torch"}

    folded = nets.describe(nets.fuse_for_inference(nets.build("resnet18", "triton")), (1, 3, 64, 64))
    folded = folded.set_index("layer")
    assert folded.loc["layer1.0.conv2", "op"] == "conv3x3/1+bias+residual+relu"
    assert "layer1.0.bn1" not in folded.index


def test_flop_counter_counts_grouped_conv_backward_as_twice_forward():
    from nets.flops import flop_counter

    with torch.device("meta"):
        conv = torch.nn.Conv2d(96, 256, 5, padding=2, groups=2)
        x = torch.empty(2, 96, 27, 27, requires_grad=True)
    counter = flop_counter()
    with counter:
        conv(x).sum().backward()
    counts = {str(k): v for k, v in counter.get_flop_counts()["Global"].items()}
    assert counts["aten.convolution_backward"] == 2 * counts["aten.convolution"]


@pytest.mark.parametrize("call, exc, words", [
    (lambda: nets.build("vgg16"), ValueError, "arch must be one of"),
    (lambda: nets.build("alexnet", "tpu"), ValueError, "backend must be one of"),
    (lambda: nets.build("alexnet", aux_logits=True), TypeError, "unknown option"),
    (lambda: nets.build("resnet50", num_classes=0), ValueError, "num_classes"),
    (lambda: nets.describe(nets.build("resnet18"), (3, 224, 224)), ValueError, "input_shape"),
])
def test_bad_arguments(call, exc, words):
    with pytest.raises(exc, match=words):
        call()


# --------------------------------------------------------------------------- recipe and data
# the lr each recipe gives at the batch size it was set for: AlexNet's paper (128), Caffe's
# bvlc_googlenet solver at its train_val's batch 32, ResNet's paper (256); and linear beyond
@pytest.mark.parametrize("arch, batch, lr, wd", [("alexnet", 128, 0.01, 5e-4), ("googlenet", 32, 0.01, 2e-4),
                                                 ("googlenet", 128, 0.04, 2e-4), ("resnet50", 256, 0.1, 1e-4),
                                                 ("resnet50", 64, 0.025, 1e-4)])
def test_recipe_optimizer(arch, batch, lr, wd):
    model = _meta(arch)
    opt = recipe.optimizer(model, batch_size=batch)
    group = opt.param_groups[0]
    assert (group["lr"], group["momentum"], group["weight_decay"]) == (pytest.approx(lr), 0.9, wd)
    assert recipe.lr_scheduler(opt, arch) is not None


def test_paper_initializations():
    alex = nets.build("alexnet")
    assert alex.features.conv2.bias.eq(1).all() and alex.features.conv3.bias.eq(0).all()
    assert alex.classifier.fc6.bias.eq(1).all() and alex.classifier.fc8.bias.eq(0).all()
    assert alex.classifier.fc6.weight.std().item() == pytest.approx(0.01, rel=0.02)
    goog = nets.build("googlenet")  # Caffe's bvlc_googlenet: "xavier" = U(+-sqrt(3 / fan_in))
    for w, fan_in in ((goog.conv1.weight, 3 * 49), (goog.inception4e.branch3[1].weight, 32 * 25),
                      (goog.aux1.fc1.weight, 2048), (goog.fc.weight, 1024)):
        bound = (3 / fan_in) ** 0.5
        assert w.abs().max().item() <= bound and w.abs().max().item() > 0.99 * bound
        assert w.std().item() == pytest.approx(bound / 3**0.5, rel=0.05)
    assert goog.conv1.bias.eq(0.2).all() and goog.aux2.fc1.bias.eq(0.2).all()
    assert goog.aux2.fc2.bias.eq(0).all() and goog.fc.bias.eq(0).all()
    res = nets.build("resnet50")
    w = res.layer3[0].conv2.weight  # He, fan_out: std = sqrt(2 / (K * R * S))
    assert w.std().item() == pytest.approx((2 / (256 * 9)) ** 0.5, rel=0.05)


def test_googlenet_loss_weights_aux_by_0_3():
    logits, a1, a2 = torch.randn(3, 4, 10).unbind(0)
    target = torch.tensor([1, 2, 3, 4])
    got = recipe.loss(nets.GoogLeNetOutputs(logits, a2, a1), target)
    ce = lambda t: F.cross_entropy(t, target)
    assert got.item() == pytest.approx((ce(logits) + 0.3 * ce(a1) + 0.3 * ce(a2)).item())


def test_augmentation_and_ten_crop():
    gen = torch.Generator().manual_seed(0)
    img = torch.rand(3, 256, 300, generator=gen)
    assert data.random_crop_flip(img, 224, generator=gen).shape == (3, 224, 224)
    assert data.pca_lighting(img, generator=gen).shape == img.shape
    crops = data.ten_crops(img[None], 224)
    assert crops.shape == (10, 1, 3, 224, 224)
    assert torch.equal(crops[0, 0], img[:, :224, :224])
    assert torch.equal(crops[9, 0], img[:, 16:240, 38:262].flip(-1))
    model = nets.build("resnet18", num_classes=5).eval()
    images = torch.rand(2, 3, 40, 40)
    probs = data.ten_crop_predict(model, images, size=32)
    assert probs.shape == (2, 5) and torch.allclose(probs.sum(1), torch.ones(2))
    with torch.no_grad():  # the mean of the crops' softmaxes, in eval mode
        expected = torch.stack([F.softmax(model(c), 1) for c in data.ten_crops(images, 32)]).mean(0)
    model.train()  # called from a training loop: the loop's mode survives the evaluation
    assert torch.allclose(data.ten_crop_predict(model, images, size=32), expected, atol=1e-6)
    assert model.training and all(m.training for m in model.modules())


def test_image_folder(tmp_path):
    from PIL import Image

    for c in ("cat", "dog"):
        (tmp_path / c).mkdir()
        for i in range(2):
            Image.fromarray(np.full((40, 50, 3), 60 * i, np.uint8)).save(tmp_path / c / f"{i}.png")
    ds = data.ImageFolder(tmp_path, resize=36, crop=32)
    assert ds.classes == ["cat", "dog"] and len(ds) == 4
    x, y = ds[3]
    assert x.shape == (3, 32, 32) and y == 1
    with pytest.raises(ValueError, match="no images"):
        data.ImageFolder(tmp_path / "cat")


def test_synthetic_batch_on_device(device):
    x, y = data.synthetic_batch(4, num_classes=7, image_size=32, device=device, channels_last=True)
    assert x.device.type == torch.device(device).type and x.is_contiguous(memory_format=torch.channels_last)
    assert y.shape == (4,) and int(y.max()) < 7


def _learns(backend, device):
    torch.manual_seed(0)
    model = nets.build("resnet18", backend, num_classes=10).to(device)
    x, y = data.digits(32)
    losses = recipe.fit(model, x, y, steps=30, batch_size=32, lr=0.005)
    first, last = np.mean(losses[:3]), np.mean(losses[-10:])
    assert last < 0.4 * first, f"loss did not fall clearly: first {first:.3f}, last {last:.3f}: {losses}"


@pytest.mark.skipif(importlib.util.find_spec("sklearn") is None, reason="scikit-learn (dev extra) not installed")
def test_short_training_on_real_digits_learns_torch_backend():
    _learns("torch", "cpu")


@pytest.mark.gpu
def test_short_training_on_real_digits_learns_triton_backend():
    _learns("triton", "cuda")


@pytest.mark.skipif(importlib.util.find_spec("torchvision") is None, reason="torchvision is not installed")
@pytest.mark.parametrize("arch", ["resnet18", "resnet50", "resnet152"])
def test_torchvision_resnet_state_dict_loads(arch):
    import torchvision

    with torch.device("meta"):
        tv = getattr(torchvision.models, arch)()
    ours = _meta(arch, "triton")
    ours.load_state_dict(tv.state_dict(), assign=True)  # strict: every key and shape matches


# --------------------------------------------------------------------------- fused BatchNorm, pools, LRN
class _MiniResNet(torch.nn.Module):
    """ResNet's stem (conv, BN+ReLU, 3x3/2 pad-1 max-pool) and the nets' own blocks (a
    strided bottleneck with a projection shortcut, a basic block) at a few channels, so a
    training step runs on the interpreter in seconds."""

    # as ResNet: the stem's BN+ReLU and max-pool, every other conv with its BatchNorm
    FUSED_PAIRS = (("bn1", "maxpool"), ("block1.conv1", "block1.bn1"), ("block1.conv2", "block1.bn2"),
                   ("block1.conv3", "block1.bn3"), ("block1.downsample.0", "block1.downsample.1"),
                   ("block2.conv1", "block2.bn1"), ("block2.conv2", "block2.bn2"))
    HW = (13, 11)

    def __init__(self, layers):
        super().__init__()
        from nets.resnet import BasicBlock, Bottleneck

        self.conv1 = layers.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn1 = layers.BatchNorm2d(8, activation="relu")
        self.maxpool = layers.MaxPool2d(3, stride=2, padding=1)
        down = torch.nn.Sequential(layers.Conv2d(8, 16, 1, stride=2, bias=False), layers.BatchNorm2d(16))
        self.block1 = Bottleneck(layers, 8, 4, stride=2, downsample=down)
        self.block2 = BasicBlock(layers, 16, 16)
        self.fc = torch.nn.Linear(16, 10)

    def forward(self, x):
        x = self.block2(self.block1(self.maxpool(self.bn1(self.conv1(x)))))
        return self.fc(x.mean((2, 3)))


class _MiniLRNPools(torch.nn.Module):
    """The LRN/max-pool orders of the paper nets: GoogLeNet's maxpool1 -> norm1 and norm2 ->
    maxpool2 (ceil_mode), AlexNet's norm -> pool, declared as FUSED_PAIRS as they do."""

    FUSED_PAIRS = (("pool1", "norm1"), ("norm2", "pool2"), ("features.norm3", "features.pool3"))
    HW = (17, 15)

    def __init__(self, layers):
        super().__init__()
        self.conv1 = layers.Conv2d(3, 8, 3, padding=1, activation="relu")
        self.pool1 = layers.MaxPool2d(3, stride=2, ceil_mode=True)
        self.norm1 = layers.LocalResponseNorm(5, alpha=1e-1, beta=0.75, k=1.0)
        self.conv2 = layers.Conv2d(8, 12, 3, padding=1, activation="relu")
        self.norm2 = layers.LocalResponseNorm(5, alpha=1e-1, beta=0.75, k=1.0)
        self.pool2 = layers.MaxPool2d(3, stride=2, ceil_mode=True)
        self.features = torch.nn.Sequential(OrderedDict([
            ("conv3", layers.Conv2d(12, 12, 3, padding=1, activation="relu")),
            ("norm3", layers.LocalResponseNorm(5, alpha=1e-1, beta=0.75, k=2.0)),
            ("pool3", layers.MaxPool2d(3, stride=2)),
        ]))
        self.fc = torch.nn.Linear(12, 10)

    def forward(self, x):
        x = self.norm1(self.pool1(self.conv1(x)))
        x = self.features(self.pool2(self.norm2(self.conv2(x))))
        return self.fc(x.mean((2, 3)))


@pytest.mark.parametrize("mini", [_MiniResNet, _MiniLRNPools], ids=["resnet-blocks", "lrn-pools"])
def test_fused_layers_train_like_torch(mini, device):
    """Two SGD steps on each backend from the same weights: losses, every gradient and the
    BatchNorm running statistics agree; the triton steps run no torch BatchNorm, max-pool
    or LRN op; build, convert and convert back keep the state_dict."""
    from nets.layers import TorchLayers, TritonLayers, apply_backend

    torch.manual_seed(0)
    ref = mini(TorchLayers).to(device)
    tri = convert(ref, "triton")
    built = apply_backend(mini(TritonLayers), "triton")
    assert [type(m) for m in built.modules()] == [type(m) for m in tri.modules()]
    back = convert(tri, "torch")
    assert [type(m) for m in back.modules()] == [type(m) for m in ref.modules()]
    assert list(tri.state_dict()) == list(ref.state_dict())

    gen = torch.Generator().manual_seed(1)
    ops = []
    for step in range(2):
        x = torch.randn(2, 3, *mini.HW, generator=gen).to(device).contiguous(memory_format=torch.channels_last)
        target = torch.randint(0, 10, (2,), generator=gen).to(device)
        losses, step_ops = [], []
        for model in (ref, tri):
            model.zero_grad()
            with _AtenOps() as recorded:
                loss = F.cross_entropy(model(x), target)
                loss.backward()
            step_ops.append(recorded.names)
            losses.append(loss.detach())
        ops = step_ops
        assert_close(losses[1], losses[0].double(), reduction=4096, name=f"step {step} loss")
        for (name, p_ref), p_tri in zip(ref.named_parameters(), tri.parameters()):
            assert_close(p_tri.grad, p_ref.grad.double(), reduction=4096,
                         scale=max(p_ref.grad.abs().max().item(), 1e-3), name=f"step {step} grad {name}")
        with torch.no_grad():
            for p_ref, p_tri in zip(ref.parameters(), tri.parameters()):
                p_ref -= 0.1 * p_ref.grad
                p_tri -= 0.1 * p_tri.grad
    for (name, b_ref), b_tri in zip(ref.named_buffers(), tri.buffers()):
        if b_ref.dtype == torch.int64:
            assert torch.equal(b_tri, b_ref), name
        else:
            assert_close(b_tri, b_ref.double(), reduction=4096, scale=max(b_ref.abs().max().item(), 1.0), name=name)
    _assert_no_torch_norm_or_pool(ops, mini.__name__)
    with torch.no_grad():  # eval: BatchNorm on the running statistics
        x = torch.randn(2, 3, *mini.HW, generator=gen).to(device)
        expected = ref.eval()(x)
        assert_close(tri.eval()(x), expected.double(), reduction=4096, scale=max(expected.abs().max().item(), 1.0),
                     name="eval logits")


def test_fuse_for_inference_folds_the_batchnorm_epilogues():
    """Folding moves each BatchNorm's ReLU (and the block end's residual) onto its conv."""
    fused = nets.fuse_for_inference(nets.build("resnet50", "triton"))
    assert fused.conv1.activation == "relu" and isinstance(fused.bn1, torch.nn.Identity)
    assert type(fused.maxpool) is kernels.MaxPool2d  # the stem's pool, once run by its BN, runs alone
    block = fused.layer2[0]
    assert [block.conv1.activation, block.conv2.activation, block.conv3.activation] == ["relu"] * 3
    assert block.downsample[0].activation is None and block.folded
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())
