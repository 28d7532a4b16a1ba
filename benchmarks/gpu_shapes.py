"""Every distinct layer shape our kernels run in AlexNet, GoogLeNet and ResNet-50, read off
the nets themselves: each net is built on the `meta` device (torch backend, training mode)
and one forward records every conv, Inception block, max-pool, LRN, BatchNorm and add+ReLU
call with the shapes it saw. Layers are deduplicated by their shape key; the first name seen
stands for the rest and `count` says how many layers share it.

Inside an Inception block the Triton backend runs the 1x1 branches and the pool projection
as the fused pointwise kernel (an `inception` layer here); only the 3x3 and 5x5 convs of the
block are conv layers. A net's FUSED_PAIRS run as one kernel on the Triton backend: an LRN
and a max-pool are one `lrn_pool` layer (named after the LRN), ResNet's stem BatchNorm + ReLU
and max-pool one `batchnorm` layer with a pool. A BatchNorm layer records its epilogue: the
ReLU, and the residual add of a block's last BatchNorm.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

import nets
from kernels.pool import _out_size
from nets.googlenet import Inception
from nets.layers import TorchAddReLU, TorchBatchNorm2d, TorchConv2d

from .shapes import ConvShape, EltwiseShape, LRNShape

ARCHS = ("alexnet", "googlenet", "resnet50")
# run inside the block's fused pointwise kernel (the pool-projection's 3x3/1 max-pool too)
_FUSED_IN_BLOCK = ("branch1", "branch2.0", "branch3.0", "branch4.0", "branch4.1")


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


@dataclass(frozen=True)
class PoolShape:
    """A max-pool's input [batch, C, H, H] and its square window (dilation 1)."""
    name: str
    C: int
    H: int
    kernel: int
    stride: int
    padding: int = 0
    ceil_mode: bool = False

    def out_h(self) -> int:
        return _out_size(self.H, self.kernel, self.stride, self.padding, self.ceil_mode)


@dataclass(frozen=True)
class LRNPoolShape:
    """An LRN and a max-pool that follow each other, one kernel on the Triton backend:
    `order` "lrn_pool" (LRN first) or "pool_lrn"; C and H are the pair's input. Named after
    the LRN; `name_pool` is the max-pool's name."""
    name: str
    name_pool: str
    order: str
    C: int
    H: int
    size: int
    alpha: float
    beta: float
    k: float
    kernel: int
    stride: int
    padding: int = 0
    ceil_mode: bool = False

    def pool(self) -> PoolShape:
        """The max-pool alone, at its own input (the LRN keeps the size: the pair's input)."""
        return PoolShape(self.name_pool, self.C, self.H, self.kernel, self.stride, self.padding, self.ceil_mode)

    def lrn(self) -> LRNShape:
        """The LRN alone, at its own input (the pooled map when the pool comes first)."""
        h = self.H if self.order == "lrn_pool" else self.pool().out_h()
        return LRNShape(self.name, self.C, h, self.size, self.alpha, self.beta, self.k)


@dataclass(frozen=True)
class BNShape:
    """A BatchNorm's input [batch, C, H, H] and its fused epilogue: the ReLU, the residual
    add (before the ReLU) and, for ResNet's stem, the max-pool after the ReLU."""
    name: str
    C: int
    H: int
    relu: bool = False
    residual: bool = False
    pool: PoolShape | None = None


@dataclass
class NetLayer:
    kind: str  # "conv" | "inception" | "lrn" | "add_relu" | "max_pool" | "lrn_pool" | "batchnorm"
    shape: object  # ConvShape | InceptionShape | LRNShape | EltwiseShape | PoolShape | LRNPoolShape | BNShape
    count: int = 1
    names: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.shape.name


def _key(kind: str, shape) -> tuple:
    """Everything of a shape but its names: equal keys run the same kernels on the same sizes."""
    return (kind, *(_key("", v) if hasattr(v, "name") else v for k, v in vars(shape).items()
                    if not k.startswith("name")))


def _pool_shape(name: str, m: nn.MaxPool2d, x: torch.Tensor) -> PoolShape:
    k, s, p = (v if isinstance(v, int) else v[0] for v in (m.kernel_size, m.stride or m.kernel_size, m.padding))
    square = all(isinstance(v, int) or v[0] == v[1] for v in (m.kernel_size, m.stride or m.kernel_size, m.padding))
    if not square or x.shape[2] != x.shape[3] or m.dilation not in (1, (1, 1)):
        raise ValueError(f"{name}: the layer list expects square pools on square inputs, dilation 1, got {m}")
    return PoolShape(name, x.shape[1], x.shape[2], k, s, p, m.ceil_mode)


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
    # first -> second: recorded at the first. A conv -> BatchNorm pair stays two layers here
    # (the conv's statistics epilogue is a specialization of the same conv kernel).
    pairs = {a: b for a, b in getattr(model, "FUSED_PAIRS", ())
             if not isinstance(model.get_submodule(a), nn.Conv2d)}
    seconds = set(pairs.values())
    seen: dict[tuple, NetLayer] = {}

    def add(kind, shape):
        key = _key(kind, shape)
        if key in seen:
            seen[key].count += 1
            seen[key].names.append(shape.name)
        else:
            seen[key] = NetLayer(kind, shape, 1, [shape.name])

    def pair_layer(name, module, x):
        other = model.get_submodule(pairs[name])
        full, full_other = f"{arch}.{name}", f"{arch}.{pairs[name]}"
        if isinstance(module, nn.BatchNorm2d):
            return "batchnorm", BNShape(full, x.shape[1], x.shape[2], relu=True,
                                        pool=_pool_shape(full_other, other, x.new_empty(x.shape)))
        lrn, pool = (module, other) if isinstance(module, nn.LocalResponseNorm) else (other, module)
        order = "lrn_pool" if lrn is module else "pool_lrn"
        p = _pool_shape(full_other if order == "lrn_pool" else full, pool, x)
        return "lrn_pool", LRNPoolShape(full if order == "lrn_pool" else full_other, p.name, order, x.shape[1],
                                        x.shape[2], lrn.size, lrn.alpha, lrn.beta, lrn.k, p.kernel, p.stride,
                                        p.padding, p.ceil_mode)

    def hook(name):
        def record(module, args, kwargs):
            x = args[0]
            if name in seconds:
                return  # recorded with its pair's first module
            if name in pairs:
                add(*pair_layer(name, module, x))
            elif isinstance(module, Inception):
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
            elif isinstance(module, nn.MaxPool2d):
                if id(module) not in fused:
                    add("max_pool", _pool_shape(f"{arch}.{name}", module, x))
            elif isinstance(module, TorchBatchNorm2d):
                residual = kwargs.get("residual", args[1] if len(args) > 1 else None) is not None
                add("batchnorm", BNShape(f"{arch}.{name}", x.shape[1], x.shape[2], relu=module.activation == "relu",
                                         residual=residual))
        return record

    kinds = (Inception, TorchConv2d, nn.LocalResponseNorm, TorchAddReLU, nn.MaxPool2d, TorchBatchNorm2d)
    handles = [m.register_forward_pre_hook(hook(n), with_kwargs=True) for n, m in model.named_modules()
               if isinstance(m, kinds)]
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
