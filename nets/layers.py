"""The layers a net is built from, one set per backend, injected into each net definition.

`TorchLayers` runs torch/cuDNN ops; `TritonLayers` runs our kernels. Both build modules with
the same parameters and buffers under the same names (`Conv2d` subclasses of `nn.Conv2d`,
`BatchNorm2d` of `nn.BatchNorm2d`, LRN, max-pool and add+ReLU without parameters), so a
net's state_dict is the same for either backend. Linear layers, dropout and average pools
are torch modules in both sets.

Fused pairs: a net lists in `FUSED_PAIRS` the (first, second) module names of an LRN and
a max-pool that follow each other (AlexNet's norm -> pool, GoogLeNet's maxpool1 -> norm1
and norm2 -> maxpool2), or of ResNet's stem BatchNorm+ReLU and max-pool. On the triton
backend one module of the pair runs both as one kernel (`kernels.lrn_max_pool2d`,
`kernels.max_pool2d_lrn`, `kernels.batch_norm_relu_max_pool2d`) and the other passes its
input through: of an LRN and a pool the second (so a module that computes returns what its
torch twin returns), of a BatchNorm and a pool the BatchNorm (it owns the parameters and
statistics). A conv and the BatchNorm after it (ResNet's every conv but the stem's): the
BatchNorm (`kernels.ConvBatchNorm2d`) runs the conv too, whose store then also emits the
batch statistics, so the BatchNorm reads the conv output once, not twice; the conv module
keeps its parameters and passes its input through. The torch backend runs them apart.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

import kernels


class _TorchEpilogue:
    """act(layer(x) + residual) after a torch layer, the add and ReLU in place on the layer's
    fresh output, as torchvision's blocks do: the torch twin of the Triton kernels' fused
    epilogue (`kernels.Conv2d`, `kernels.BatchNorm2d`)."""

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


class TorchConv2d(_TorchEpilogue, nn.Conv2d):
    """cuDNN conv with the same optional epilogue as `kernels.Conv2d`: act(conv + residual)."""


class TorchBatchNorm2d(_TorchEpilogue, nn.BatchNorm2d):
    """cuDNN BatchNorm with the same optional epilogue as `kernels.BatchNorm2d`:
    act(bn(x) + residual)."""


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
    BatchNorm2d = TorchBatchNorm2d
    MaxPool2d = nn.MaxPool2d
    LocalResponseNorm = nn.LocalResponseNorm
    AddReLU = TorchAddReLU
    # forward(x, block) of a whole Inception block from its branch modules
    inception = staticmethod(_torch_inception_unfused)


class TritonLayers:
    name = "triton"
    Conv2d = kernels.Conv2d
    BatchNorm2d = kernels.BatchNorm2d
    MaxPool2d = kernels.MaxPool2d
    LocalResponseNorm = kernels.LocalResponseNorm
    AddReLU = kernels.AddReLU
    inception = staticmethod(_triton_inception)


# --------------------------------------------------------------------------- fused pairs
class _PassThrough:
    """The first module of a fused pair on the triton backend: the second one runs both."""

    fused_into: str

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class FusedLocalResponseNorm(_PassThrough, nn.LocalResponseNorm):
    """An LRN whose work the following max-pool does (`TritonLRNMaxPool2d`)."""


class FusedMaxPool2d(_PassThrough, nn.MaxPool2d):
    """A max-pool whose work the following LRN does (`TritonMaxPool2dLRN`)."""


class FusedConv2d(_PassThrough, kernels.Conv2d):
    """A conv whose work the following BatchNorm does (`kernels.ConvBatchNorm2d`: the conv's
    store then also emits the batch statistics); its parameters stay here."""


class FusedReLU(_PassThrough, nn.ReLU):
    """A ReLU the Linear before it applies in its epilogue (`kernels.Linear`)."""


class FusedDropout(_PassThrough, nn.Dropout):
    """A dropout the Linear before it applies in its epilogue (`kernels.Linear`)."""


class TritonLRNMaxPool2d(nn.MaxPool2d):
    """The max-pool of an LRN -> max-pool pair: both in one kernel. `lrn` holds the LRN's
    (size, alpha, beta, k)."""

    lrn: tuple

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return kernels.lrn_max_pool2d(x, *self.lrn, kernel_size=self.kernel_size, stride=self.stride,
                                      padding=self.padding, ceil_mode=self.ceil_mode)


class TritonMaxPool2dLRN(nn.LocalResponseNorm):
    """The LRN of a max-pool -> LRN pair: both in one kernel. `pool` holds the pool's
    (kernel_size, stride, padding, ceil_mode)."""

    pool: tuple

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return kernels.max_pool2d_lrn(x, *self.pool, size=self.size, alpha=self.alpha, beta=self.beta, k=self.k)


# fused-pair class -> (its torch backend class, its triton backend class) when unfused
_FUSED = {
    FusedLocalResponseNorm: (nn.LocalResponseNorm, kernels.LocalResponseNorm),
    FusedMaxPool2d: (nn.MaxPool2d, kernels.MaxPool2d),
    TritonLRNMaxPool2d: (nn.MaxPool2d, kernels.MaxPool2d),
    TritonMaxPool2dLRN: (nn.LocalResponseNorm, kernels.LocalResponseNorm),
    kernels.BatchNormReLUMaxPool2d: (TorchBatchNorm2d, kernels.BatchNorm2d),
    FusedConv2d: (TorchConv2d, kernels.Conv2d),
    kernels.ConvBatchNorm2d: (TorchBatchNorm2d, kernels.BatchNorm2d),
    # the FC epilogues (a net's FC_EPILOGUES and DROPOUTS): torch modules on either backend when unfused
    kernels.Linear: (nn.Linear, nn.Linear),
    FusedReLU: (nn.ReLU, nn.ReLU),
    FusedDropout: (nn.Dropout, nn.Dropout),
    kernels.Dropout: (nn.Dropout, nn.Dropout),
}


def unfuse_pairs(model: nn.Module, backend: str = "torch") -> bool:
    """Every fused-pair module back to its plain class of `backend` (attributes kept, the
    pair's extras dropped). Returns whether there was any."""
    found = False
    for m in model.modules():
        plain = _FUSED.get(type(m))
        if plain is not None:
            m.__class__ = plain[backend == "triton"]
            for attr in ("fused_into", "lrn", "pool", "conv"):
                m.__dict__.pop(attr, None)
            found = True
    return found


def fuse_pairs(model: nn.Module) -> None:
    """Apply the model's FUSED_PAIRS for the triton backend (modules must be unfused).
    The module that owns parameters does the work (BatchNorm of BatchNorm+ReLU -> max-pool);
    of an LRN and a max-pool, the second. Pairs with a module folded away are skipped."""
    for first, second in getattr(model, "FUSED_PAIRS", ()):
        a, b = model.get_submodule(first), model.get_submodule(second)
        if isinstance(a, nn.Identity) or isinstance(b, nn.Identity):
            continue
        if isinstance(b, nn.MaxPool2d) and (b.dilation not in (1, (1, 1)) or b.return_indices):
            raise ValueError(f"{second}: a fused max-pool needs dilation=1 and return_indices=False")
        if isinstance(a, nn.MaxPool2d) and (a.dilation not in (1, (1, 1)) or a.return_indices):
            raise ValueError(f"{first}: a fused max-pool needs dilation=1 and return_indices=False")
        if isinstance(a, nn.Conv2d) and isinstance(b, nn.BatchNorm2d):
            if type(a) is not kernels.Conv2d or type(b) is not kernels.BatchNorm2d:
                continue  # a layer left on torch: it runs unfused (and tests/test_triton_backend.py says so)
            if b.num_features != a.out_channels:
                raise ValueError(f"{second}: a BatchNorm fused with {first} needs {a.out_channels} features, "
                                 f"got {b.num_features}")
            a.__class__, b.__class__ = FusedConv2d, kernels.ConvBatchNorm2d
            b.__dict__["conv"] = a  # a reference, not a submodule: state_dict keys stay as they are
            a.fused_into = second
        elif isinstance(a, nn.BatchNorm2d) and getattr(a, "activation", None) == "relu" and isinstance(b, nn.MaxPool2d):
            a.__class__, b.__class__ = kernels.BatchNormReLUMaxPool2d, FusedMaxPool2d
            a.pool = (b.kernel_size, b.stride, b.padding, b.ceil_mode)
            b.fused_into = first
        elif isinstance(a, nn.LocalResponseNorm) and isinstance(b, nn.MaxPool2d):
            a.__class__, b.__class__ = FusedLocalResponseNorm, TritonLRNMaxPool2d
            b.lrn = (a.size, a.alpha, a.beta, a.k)
            a.fused_into = second
        elif isinstance(a, nn.MaxPool2d) and isinstance(b, nn.LocalResponseNorm):
            a.__class__, b.__class__ = FusedMaxPool2d, TritonMaxPool2dLRN
            b.pool = (a.kernel_size, a.stride, a.padding, a.ceil_mode)
            a.fused_into = second
        else:
            raise TypeError(f"FUSED_PAIRS ({first!r}, {second!r}) must be an LRN and a max-pool, a "
                            f"BatchNorm+ReLU and a max-pool, or a conv and a BatchNorm, got {type(a).__name__} "
                            f"and {type(b).__name__}")


def fuse_fc_epilogues(model: nn.Module) -> None:
    """Apply the model's FC_EPILOGUES ((linear, relu or None, dropout or None) names) and
    DROPOUTS (names) for the triton backend: the Linear runs its bias, ReLU and dropout as
    one Triton pass (`kernels.Linear`, the dropout's p read now), the ReLU and dropout pass
    their input through; a lone dropout becomes `kernels.Dropout`."""
    for lin, act, drop in getattr(model, "FC_EPILOGUES", ()):
        m = model.get_submodule(lin)
        relu = model.get_submodule(act) if act else None
        dp = model.get_submodule(drop) if drop else None
        if type(m) is not nn.Linear or (relu is not None and type(relu) is not nn.ReLU) or \
                (dp is not None and type(dp) is not nn.Dropout):
            raise TypeError(f"FC_EPILOGUES ({lin!r}, {act!r}, {drop!r}) must be an nn.Linear, an nn.ReLU or None "
                            f"and an nn.Dropout or None, got {type(m).__name__}, {type(relu).__name__}, "
                            f"{type(dp).__name__}")
        m.__class__ = kernels.Linear
        m.activation, m.p = ("relu" if relu is not None else None), (dp.p if dp is not None else 0.0)
        for other, cls in ((relu, FusedReLU), (dp, FusedDropout)):
            if other is not None:
                other.__class__, other.fused_into = cls, lin
    for name in getattr(model, "DROPOUTS", ()):
        d = model.get_submodule(name)
        if type(d) is not nn.Dropout or d.inplace:
            raise TypeError(f"DROPOUTS {name!r} must be an nn.Dropout with inplace=False, got {d}")
        d.__class__ = kernels.Dropout


def apply_backend(model: nn.Module, backend: str) -> nn.Module:
    """Set up a model freshly built with `backend`'s layers: its fused pairs on the triton
    backend (in place); returns it."""
    if layers_for(backend) is TritonLayers:
        fuse_pairs(model)
        fuse_fc_epilogues(model)
    return model


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
    return isinstance(m, (kernels.Conv2d, kernels.BatchNorm2d, kernels.MaxPool2d, kernels.LocalResponseNorm,
                          kernels.AddReLU, *_FUSED))


# Module classes that correspond one to one across the sets (same parameters and attributes).
_PAIRS = [(TorchConv2d, kernels.Conv2d), (TorchBatchNorm2d, kernels.BatchNorm2d), (nn.MaxPool2d, kernels.MaxPool2d),
          (nn.LocalResponseNorm, kernels.LocalResponseNorm), (TorchAddReLU, kernels.AddReLU)]


def convert(model: nn.Module, backend: str) -> nn.Module:
    """A deep copy of `model` running on `backend`'s layers, with the same weights (and the
    same fusions, e.g. after `fuse_for_inference`)."""
    layers = layers_for(backend)
    src_index, dst_index = (0, 1) if backend == "triton" else (1, 0)
    swap = {pair[src_index]: pair[dst_index] for pair in _PAIRS}
    out = copy.deepcopy(model)
    unfuse_pairs(out, "torch")
    for m in out.modules():
        target = swap.get(type(m))
        if target is not None:
            m.__class__ = target
            if target is kernels.AddReLU and not hasattr(m, "inplace"):
                m.inplace = False
        if hasattr(m, "_run") and hasattr(m, "branch4"):  # an Inception block
            m._run = layers.inception
    if backend == "triton":
        fuse_pairs(out)
        fuse_fc_epilogues(out)
    if hasattr(out, "backend"):
        out.backend = backend
    return out
