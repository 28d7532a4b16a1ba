"""How correct each replayed layer is: its output (and in train mode its gradients) against
a reference copy of the torch model on the same captured input, as max |out - ref| / max |ref|,
with the bound `benchmarks.tolerance` derives for the run's dtype.

The reference is float64 ATen on a CPU, IEEE fp32 cuDNN/ATen (TF32 off) on a GPU: on a GPU
the fp32 reference's own error (~1e-7 relative) is far below any bf16/fp16 bound, and a
float64 conv is not what cuDNN runs. Every backend is checked, torch's eager layers too.
"""

from __future__ import annotations

import contextlib
import copy
import math
from dataclasses import dataclass

import torch
from torch import nn

from .metrics import max_rel_error
from .tolerance import relative_bound


def reference_dtype(device: torch.device) -> torch.dtype:
    return torch.float32 if device.type == "cuda" else torch.float64


def reference_label(device: torch.device) -> str:
    return "float32 IEEE cuDNN/ATen (TF32 off)" if device.type == "cuda" else "float64 ATen CPU"


def reference_model(base: nn.Module, device: torch.device) -> nn.Module:
    """A copy of the torch-backend model in the reference dtype (exact: a widening cast)."""
    return copy.deepcopy(base).to(dtype=reference_dtype(device))


@contextlib.contextmanager
def _ieee():
    """TF32 off while the reference runs (restored after)."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def uses_tf32(device: torch.device, dtype: torch.dtype) -> bool:
    """fp32 convs on a GPU round their inputs to TF32 when cuDNN's flag says so (ours follow it)."""
    return device.type == "cuda" and dtype == torch.float32 and torch.backends.cudnn.allow_tf32


def is_random(module: nn.Module, train: bool) -> bool:
    """A unit whose training output is random (dropout): nothing to compare against."""
    return train and isinstance(module, nn.modules.dropout._DropoutNd)


@dataclass
class Errors:
    max_rel_err: float | None = None
    rel_tol: float | None = None
    grad_max_rel_err: float | None = None
    grad_rel_tol: float | None = None


def _tensors(out) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, (tuple, list)):
        return [t for o in out for t in _tensors(o)]
    return []


def _inputs(args, kwargs, dtype, *, grad: bool):
    """Fresh copies of the captured inputs cast to `dtype` (in-place units must not touch the
    capture), and with `grad` the leaves of those that required grad: the unit gets a clone of
    each leaf, as in training, where an in-place layer never writes a leaf."""
    leaves = []

    def one(a):
        if not isinstance(a, torch.Tensor):
            return a
        c = a.detach().to(dtype=dtype if a.is_floating_point() else a.dtype, copy=True)
        if grad and a.requires_grad and c.is_floating_point():
            leaves.append(c.requires_grad_(True))
            return c.clone()
        return c

    return [one(a) for a in args], {k: one(v) for k, v in kwargs.items()}, leaves


def _worst(pairs, dtype, reductions) -> tuple[float, float]:
    """Largest error among (actual, expected) pairs, and the largest bound among them."""
    errs = [max_rel_error(a, e) for a, e in pairs]
    bound = max(relative_bound(dtype, k) for k in reductions)
    return max(errs), bound


def _reduction(flops: float, numel_out: int, numel: int) -> int:
    """Terms summed into one element of a tensor of `numel` elements, from the unit's forward
    FLOPs (2 per multiply-add) or, for FLOP-free units, its output size."""
    return max(1, math.ceil(max(flops / 2, numel_out) / max(numel, 1)))


def check(unit, module: nn.Module, ref: nn.Module, args, kwargs, *, train: bool, flops: float,
          dtype: torch.dtype, device: torch.device, grads: bool) -> Errors:
    """Errors of `unit` (the backend's layer; `module` its uncompiled form) against `ref` on
    the captured inputs. With `grads`, also every gradient the unit produces in training,
    under the same random output gradient; the gradient bound uses the largest reduction
    among the unit's gradients."""
    if is_random(module, train):
        return Errors()
    tf32 = uses_tf32(device, dtype)
    rdtype = reference_dtype(device)
    a_args, a_kwargs, leaves = _inputs(args, kwargs, dtype, grad=grads)
    r_args, r_kwargs, ref_leaves = _inputs(args, kwargs, rdtype, grad=grads)
    with torch.set_grad_enabled(grads):
        out = _tensors(unit(*a_args, **a_kwargs))
        with _ieee():
            ref_out = _tensors(ref(*r_args, **r_kwargs))
    numel_out = sum(t.numel() for t in out)
    per_out = max(1, math.ceil(flops / 2 / max(numel_out, 1)))
    errors = Errors()
    errors.max_rel_err = max(max_rel_error(a, e) for a, e in zip(out, ref_out, strict=True))
    errors.rel_tol = relative_bound(dtype, per_out, tf32=tf32)
    if not grads:
        return errors
    params = [p for p in module.parameters() if p.requires_grad]
    ref_params = [p for p in ref.parameters() if p.requires_grad]
    wrt, ref_wrt = leaves + params, ref_leaves + ref_params
    live = [(o, r) for o, r in zip(out, ref_out, strict=True) if o.requires_grad]
    if not wrt or not live:
        return errors
    gen = torch.Generator(device=out[0].device).manual_seed(0)
    g_out = [torch.randn(o.shape, generator=gen, device=o.device, dtype=o.dtype) for o, _ in live]
    got = torch.autograd.grad([o for o, _ in live], wrt, g_out, allow_unused=True)
    with _ieee():
        want = torch.autograd.grad([r for _, r in live], ref_wrt, [g.to(rdtype) for g in g_out], allow_unused=True)
    pairs = [(g, w) for g, w in zip(got, want, strict=True) if g is not None and w is not None]
    if pairs:
        reductions = [_reduction(flops, numel_out, g.numel()) for g, _ in pairs]
        errors.grad_max_rel_err, _ = _worst(pairs, dtype, reductions)
        errors.grad_rel_tol = relative_bound(dtype, max(reductions), tf32=tf32)
    return errors
