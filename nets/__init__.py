"""AlexNet, GoogLeNet and ResNet-18..152, each defined once with its layers injected:
backend "torch" (cuDNN/ATen, the reference) or "triton" (our kernels). The same arch has
identical parameter names and shapes with either backend.

Imports `kernels` only (never benchmarks or reports).
"""

from __future__ import annotations

from functools import partial

from torch import nn

from .alexnet import AlexNet
from .describe import describe
from .fuse import fuse_for_inference
from .googlenet import GoogLeNet, GoogLeNetOutputs
from .layers import apply_backend, layers_for
from .resnet import DEPTHS, ResNet

ARCHS = ("alexnet", "googlenet", "resnet18", "resnet34", "resnet50", "resnet101", "resnet152")
BACKENDS = ("torch", "triton")


def _resnet(arch, layers, num_classes, **options):
    block, depths = DEPTHS[arch]
    return ResNet(layers, block, depths, num_classes, **options)


_BUILDERS = {
    "alexnet": lambda layers, num_classes, **o: AlexNet(layers, num_classes, **o),
    "googlenet": lambda layers, num_classes, **o: GoogLeNet(layers, num_classes, **o),
    **{name: partial(_resnet, name) for name in DEPTHS},
}
_OPTIONS = {
    "alexnet": {"groups", "dropout"},
    "googlenet": {"aux_logits", "dropout", "aux_dropout"},
    **{name: {"zero_init_residual", "stride_in_3x3"} for name in DEPTHS},
}


def build(arch: str, backend: str = "torch", num_classes: int = 1000, **options) -> nn.Module:
    """The paper's `arch` on `backend`; options: alexnet (groups=2, dropout=0.5), googlenet
    (aux_logits=True, dropout=0.4, aux_dropout=0.7), resnet* (zero_init_residual=False, stride_in_3x3=False)."""
    if arch not in ARCHS:
        raise ValueError(f"arch must be one of {ARCHS}, got {arch!r}")
    layers = layers_for(backend)
    unknown = set(options) - _OPTIONS[arch]
    if unknown:
        raise TypeError(f"unknown option(s) for {arch}: {sorted(unknown)}; accepted: {sorted(_OPTIONS[arch])}")
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    model = apply_backend(_BUILDERS[arch](layers, num_classes, **options), backend)
    model.arch, model.backend, model.build_options = arch, backend, dict(options, num_classes=num_classes)
    return model


def alexnet(backend="torch", **kw):
    return build("alexnet", backend, **kw)


def googlenet(backend="torch", **kw):
    return build("googlenet", backend, **kw)


def resnet18(backend="torch", **kw):
    return build("resnet18", backend, **kw)


def resnet34(backend="torch", **kw):
    return build("resnet34", backend, **kw)


def resnet50(backend="torch", **kw):
    return build("resnet50", backend, **kw)


def resnet101(backend="torch", **kw):
    return build("resnet101", backend, **kw)


def resnet152(backend="torch", **kw):
    return build("resnet152", backend, **kw)


__all__ = ["ARCHS", "BACKENDS", "GoogLeNetOutputs", "build", "describe", "fuse_for_inference", *ARCHS]
