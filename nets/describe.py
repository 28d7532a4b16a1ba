"""`describe(model, input_shape)`: one row per layer, saying what runs it.

Shapes and FLOPs come from a torch-backend twin of the model run on the meta device (no
memory, no compute): Triton kernels are invisible to torch's FLOP counter, and the twin has
the same layer names by construction. The backend column comes from the real model.
"""

from __future__ import annotations

import pandas as pd
import torch
from torch import nn

import kernels

from .flops import flop_counter
from .layers import (
    FusedConv2d,
    FusedDropout,
    FusedLocalResponseNorm,
    FusedMaxPool2d,
    FusedReLU,
    TritonLRNMaxPool2d,
    TritonMaxPool2dLRN,
    convert,
    is_triton_inception,
    is_triton_module,
)


def _pool_op(kind: str, kernel_size, stride) -> str:
    k = kernel_size if isinstance(kernel_size, int) else kernel_size[0]
    st = stride if isinstance(stride, int) else stride[0]
    return f"{kind}pool{k}x{k}/{st}"


def _op(m: nn.Module, takes_residual: bool) -> str:
    if isinstance(m, kernels.BatchNormReLUMaxPool2d):
        return f"batchnorm+relu+{_pool_op('max', *m.pool[:2])}"
    if isinstance(m, (nn.Conv2d, nn.BatchNorm2d)):
        if isinstance(m, nn.Conv2d):
            r, s = m.kernel_size
            op = f"conv{r}x{s}/{m.stride[0]}" + (f" g{m.groups}" if m.groups > 1 else "")
            epi = ["bias"] if m.bias is not None else []
        else:
            op, epi = "batchnorm", []
        if takes_residual:
            epi.append("residual")
        if getattr(m, "activation", None):
            epi.append(m.activation)
        return op + ("+" + "+".join(epi) if epi else "")
    if isinstance(m, TritonLRNMaxPool2d):  # the second of a pair runs both
        return f"lrn(size={m.lrn[0]})+{_pool_op('max', m.kernel_size, m.stride)}"
    if isinstance(m, TritonMaxPool2dLRN):
        return f"{_pool_op('max', *m.pool[:2])}+lrn(size={m.size})"
    if isinstance(m, nn.LocalResponseNorm):
        return f"lrn(size={m.size})"
    if isinstance(m, (nn.MaxPool2d, nn.AvgPool2d)):
        return _pool_op("max" if isinstance(m, nn.MaxPool2d) else "avg", m.kernel_size, m.stride)
    names = {nn.AdaptiveAvgPool2d: "adaptive_avgpool", nn.Linear: "linear", nn.ReLU: "relu", nn.Dropout: "dropout"}
    for cls, name in names.items():
        if isinstance(m, cls):
            return name
    return "add+relu" if type(m).__name__.endswith("AddReLU") else type(m).__name__


def _runs_on(model: nn.Module) -> dict[str, tuple[str, str]]:
    """name -> (backend, kernel) for every leaf of the real model."""
    out = {}
    fused_blocks = {name for name, m in model.named_modules() if is_triton_inception(m)}
    for name, m in model.named_modules():
        if list(m.children()):
            continue
        if any(name.startswith(b + ".") for b in fused_blocks):
            kernel = ("inception_block (max-pool fused into pool_proj's operand load)"
                      if isinstance(m, nn.MaxPool2d) else "inception_block")
            out[name] = ("triton", kernel)
        elif isinstance(m, (FusedLocalResponseNorm, FusedMaxPool2d, FusedConv2d, FusedReLU, FusedDropout)):
            out[name] = ("triton", f"fused into {m.fused_into}")
        elif is_triton_module(m):
            kernel = {"Conv2d": "conv2d", "LocalResponseNorm": "local_response_norm", "AddReLU": "add_relu",
                      "BatchNorm2d": "batch_norm", "MaxPool2d": "max_pool2d",
                      "TritonLRNMaxPool2d": "lrn_max_pool2d", "TritonMaxPool2dLRN": "max_pool2d_lrn",
                      "BatchNormReLUMaxPool2d": "batch_norm_relu_max_pool2d",
                      "ConvBatchNorm2d": "conv2d (batch statistics in its store) + batch_norm",
                      "Linear": "x @ W.T (torch GEMM) + Triton bias/ReLU/dropout", "Dropout": "dropout (Philox)"}
            out[name] = ("triton", kernel[type(m).__name__])
        else:
            torch_kernels = {"TorchConv2d": "F.conv2d (cuDNN)", "TorchAddReLU": "add_ + relu_",
                             "TorchBatchNorm2d": "F.batch_norm (cuDNN) + add_ + relu_"}
            out[name] = ("torch", torch_kernels.get(type(m).__name__, f"torch.nn.{type(m).__name__}"))
    return out


def describe(model: nn.Module, input_shape, *, dtype: torch.dtype = torch.float32) -> pd.DataFrame:
    """One row per leaf layer: name, op, backend ("triton" or "torch"), kernel, output shape,
    parameters and forward GFLOP (torch's counter, 2 FLOPs per multiply-add) for an input of
    `input_shape`. Layers folded away (nn.Identity) are skipped; layers that do not run in
    the model's current mode (aux heads in eval) are listed with no shape and 0 FLOPs."""
    if len(tuple(input_shape)) != 4:
        raise ValueError(f"input_shape must be (N, C, H, W), got {tuple(input_shape)}")
    twin = convert(model, "torch").to("meta")
    twin.train(model.training)
    shapes: dict[str, tuple] = {}
    hooks = []
    for name, m in twin.named_modules():
        if name and not list(m.children()):
            hooks.append(m.register_forward_hook(
                lambda mod, args, out, name=name: shapes.__setitem__(
                    name, tuple(out.shape) if isinstance(out, torch.Tensor) else None)))
    counter = flop_counter()
    try:
        with counter, torch.no_grad():
            twin(torch.empty(*input_shape, device="meta", dtype=dtype))
    finally:
        for h in hooks:
            h.remove()
    counts = counter.get_flop_counts()
    prefix = type(twin).__name__
    runs_on = _runs_on(model)
    # Which module of each residual block takes the shortcut: its last BN, or once folded
    # for inference its last conv.
    takes_residual = set()
    for n, b in model.named_modules():
        if hasattr(b, "folded"):
            last = "3" if hasattr(b, "conv3") else "2"
            takes_residual.add(f"{n}.{'conv' if b.folded else 'bn'}{last}")
    rows = []
    for name, m in model.named_modules():
        if not name or list(m.children()) or isinstance(m, nn.Identity):
            continue
        backend, kernel = runs_on[name]
        rows.append({
            "layer": name,
            "op": _op(m, name in takes_residual),
            "backend": backend,
            "kernel": kernel,
            "output_shape": shapes.get(name),
            "params": sum(p.numel() for p in m.parameters(recurse=False)),
            "gflop": sum(counts.get(f"{prefix}.{name}", {}).values()) / 1e9,
        })
    return pd.DataFrame(rows)
