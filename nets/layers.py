"""The layers a net is built from, one set per backend, injected into each net definition.

`TorchLayers` runs torch/cuDNN ops; `TritonLayers` runs our kernels. Both build modules with
the same parameters under the same names (`Conv2d` subclasses of `nn.Conv2d`, LRN and
add+ReLU without parameters), so a net's state_dict is the same for either backend.
Pools, linear layers, BatchNorm and dropout are torch modules in both sets.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

import kernels


class TorchConv2d(nn.Conv2d):
    """cuDNN conv with the same optional epilogue as `kernels.Conv2d`: act(conv + residual).

    The add and ReLU run in place on the conv's fresh output, as torchvision's blocks do.
    """

    def __init__(self, *args, activation: str | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        if activation not in (None, "relu"):
            raise ValueError(f"activation must be None or 'relu', got {activation!r}")
        self.activation = activation

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        y = super().forward(x)
        if residual is not None:
            y = y.add_(residual)
        return F.relu(y, inplace=True) if self.activation == "relu" else y

    def extra_repr(self) -> str:
        s = super().extra_repr()
        return s + (f", activation={self.activation!r}" if self.activation else "")


class TorchAddReLU(nn.Module):
    """relu(x + residual) with torch ops (in place on x, as torchvision's blocks)."""

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return F.relu(x.add_(residual), inplace=True)


def _torch_inception_unfused(x, block):
    return torch.cat([block.branch1(x), block.branch2(x), block.branch3(x), block.branch4(x)], 1)


def _triton_inception(x, block):
    pair = lambda conv: (conv.weight, conv.bias)
    return kernels.inception_block(x, pair(block.branch1), pair(block.branch2[0]), pair(block.branch2[1]),
                                   pair(block.branch3[0]), pair(block.branch3[1]), pair(block.branch4[1]))


class TorchLayers:
    name = "torch"
    Conv2d = TorchConv2d
    LocalResponseNorm = nn.LocalResponseNorm
    AddReLU = TorchAddReLU
    # forward(x, block) of a whole Inception block from its branch modules
    inception = staticmethod(_torch_inception_unfused)


class TritonLayers:
    name = "triton"
    Conv2d = kernels.Conv2d
    LocalResponseNorm = kernels.LocalResponseNorm
    AddReLU = kernels.AddReLU
    inception = staticmethod(_triton_inception)


BACKENDS = {"torch": TorchLayers, "triton": TritonLayers}


def layers_for(backend: str):
    try:
        return BACKENDS[backend]
    except KeyError:
        raise ValueError(f"backend must be one of {tuple(BACKENDS)}, got {backend!r}") from None


def is_triton_inception(block: nn.Module) -> bool:
    """True for an Inception block run as one fused Triton block set (the triton layers)."""
    return getattr(block, "_run", None) is _triton_inception


def is_triton_module(m: nn.Module) -> bool:
    return isinstance(m, (kernels.Conv2d, kernels.LocalResponseNorm, kernels.AddReLU))


# Module classes that correspond one to one across the sets (same parameters and attributes).
_PAIRS = [(TorchConv2d, kernels.Conv2d), (nn.LocalResponseNorm, kernels.LocalResponseNorm),
          (TorchAddReLU, kernels.AddReLU)]


def convert(model: nn.Module, backend: str) -> nn.Module:
    """A deep copy of `model` running on `backend`'s layers, with the same weights (and the
    same fusions, e.g. after `fuse_for_inference`)."""
    layers = layers_for(backend)
    src_index, dst_index = (0, 1) if backend == "triton" else (1, 0)
    swap = {pair[src_index]: pair[dst_index] for pair in _PAIRS}
    out = copy.deepcopy(model)
    for m in out.modules():
        target = swap.get(type(m))
        if target is not None:
            m.__class__ = target
            if target is kernels.AddReLU and not hasattr(m, "inplace"):
                m.inplace = False
        if hasattr(m, "_run") and hasattr(m, "branch4"):  # an Inception block
            m._run = layers.inception
    if hasattr(out, "backend"):
        out.backend = backend
    return out
