"""Every distinct layer shape our kernels run in AlexNet, GoogLeNet and ResNet-50, read off
the nets themselves: each net is built on the `meta` device (torch backend, training mode)
and one forward records every conv, Inception block, LRN and add+ReLU call with the shapes it
saw. Layers are deduplicated by their shape key; the first name seen stands for the rest
and `count` says how many layers share it.

Inside an Inception block the Triton backend runs the 1x1 branches and the pool projection
as the fused pointwise kernel (an `inception` layer here); only the 3x3 and 5x5 convs of the
block are conv layers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

import nets
from nets.googlenet import Inception
from nets.layers import TorchAddReLU, TorchConv2d

from .shapes import ConvShape, EltwiseShape, LRNShape

ARCHS = ("alexnet", "googlenet", "resnet50")
_FUSED_IN_BLOCK = ("branch1", "branch2.0", "branch3.0", "branch4.1")


@dataclass(frozen=True)
class InceptionShape:
    """One Inception block's input and branch widths (the paper's Table 1 row)."""
    name: str
    C: int
    H: int
    c1: int
    r3: int
    c3: int
    r5: int
    c5: int
    pool_proj: int


@dataclass
class NetLayer:
    kind: str  # "conv" | "inception" | "lrn" | "add_relu"
    shape: object  # ConvShape | InceptionShape | LRNShape | EltwiseShape
    count: int = 1
    names: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.shape.name


def _key(kind: str, shape) -> tuple:
    """Everything of a shape but its name: equal keys run the same kernels on the same sizes."""
    return (kind, *(v for k, v in vars(shape).items() if k != "name"))


def _conv_shape(name: str, m: nn.Conv2d, x: torch.Tensor) -> ConvShape:
    (sh, sw), (ph, pw), (r, s) = m.stride, m.padding, m.kernel_size
    if sh != sw or ph != pw or m.dilation != (1, 1):
        raise ValueError(f"{name}: the layer list expects square stride and padding, got {m}")
    _, c, h, w = x.shape
    return ConvShape(name, c, h, m.out_channels, r, stride=sh, padding=ph, groups=m.groups,
                     W=None if w == h else w, S=None if s == r else s)


def net_layers(arch: str) -> list[NetLayer]:
    """The distinct layers of `arch` (224x224 input, training mode), in forward order."""
    with torch.device("meta"):
        model = nets.build(arch, "torch").train()
        x = torch.empty(2, 3, 224, 224)
    blocks = {m for m in model.modules() if isinstance(m, Inception)}
    fused = {id(sub) for b in blocks for n, sub in b.named_modules() if n in _FUSED_IN_BLOCK}
    seen: dict[tuple, NetLayer] = {}

    def add(kind, shape):
        key = _key(kind, shape)
        if key in seen:
            seen[key].count += 1
            seen[key].names.append(shape.name)
        else:
            seen[key] = NetLayer(kind, shape, 1, [shape.name])

    def hook(name):
        def record(module, args):
            x = args[0]
            if isinstance(module, Inception):
                b = module
                add("inception", InceptionShape(f"{arch}.{name}", x.shape[1], x.shape[2], b.branch1.out_channels,
                                                b.branch2[0].out_channels, b.branch2[1].out_channels,
                                                b.branch3[0].out_channels, b.branch3[1].out_channels,
                                                b.branch4[1].out_channels))
            elif isinstance(module, TorchConv2d):
                if id(module) not in fused:
                    add("conv", _conv_shape(f"{arch}.{name}", module, x))
            elif isinstance(module, nn.LocalResponseNorm):
                add("lrn", LRNShape(f"{arch}.{name}", x.shape[1], x.shape[2], module.size, module.alpha,
                                    module.beta, module.k))
            elif isinstance(module, TorchAddReLU):
                add("add_relu", EltwiseShape(f"{arch}.{name}", x.shape[1], x.shape[2]))
        return record

    handles = [m.register_forward_pre_hook(hook(n)) for n, m in model.named_modules()
               if isinstance(m, (Inception, TorchConv2d, nn.LocalResponseNorm, TorchAddReLU))]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return list(seen.values())


def all_layers(archs=ARCHS) -> list[NetLayer]:
    """The distinct layers of `archs` together (a shape two nets share is listed once)."""
    merged: dict[tuple, NetLayer] = {}
    for arch in archs:
        for layer in net_layers(arch):
            key = _key(layer.kind, layer.shape)
            if key in merged:
                merged[key].count += layer.count
                merged[key].names += layer.names
            else:
                merged[key] = layer
    return list(merged.values())
