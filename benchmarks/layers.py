"""Per-layer measurement of a net: which modules are measured units, their captured inputs,
and the closures that replay one unit in isolation (forward, or backward only).

A unit is a leaf module, or a whole Inception block (the Triton backend runs a block as one
fused kernel set, so a block is the smallest unit every backend shares). Modules folded
away (nn.Identity) are not units.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from nets.googlenet import Inception


def units(model: nn.Module) -> list[tuple[str, nn.Module]]:
    out = []

    def visit(prefix, module):
        for name, child in module.named_children():
            full = f"{prefix}.{name}" if prefix else name
            if isinstance(child, Inception) or not list(child.children()):
                if not isinstance(child, nn.Identity):
                    out.append((full, child))
            else:
                visit(full, child)

    visit("", model)
    return out


@dataclass
class Captured:
    args: tuple
    kwargs: dict
    out_bytes: int
    saved_bytes: int = 0


def _nbytes(t) -> int:
    if isinstance(t, torch.Tensor):
        return t.numel() * t.element_size()
    if isinstance(t, (tuple, list)):
        return sum(_nbytes(x) for x in t)
    return 0


def capture(model: nn.Module, x: torch.Tensor, named_units, *, train: bool) -> dict[str, Captured]:
    """Run one forward (train mode: with grad, so saved-for-backward bytes are seen) and keep
    each unit's first inputs by reference, its output size and the bytes autograd saved while
    it ran (parameters excluded: they are not extra memory)."""
    captured: dict[str, Captured] = {}
    current: list[str] = []
    param_ptrs = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[str, set] = {}
    hooks = []
    for name, module in named_units:
        def pre(mod, args, kwargs, name=name):
            current.append(name)
            if name not in captured:
                captured[name] = Captured(args, dict(kwargs), 0)
                seen[name] = set()

        def post(mod, args, kwargs, out, name=name):
            current.pop()
            if captured[name].out_bytes == 0:
                captured[name].out_bytes = _nbytes(out)

        hooks.append(module.register_forward_pre_hook(pre, with_kwargs=True))
        hooks.append(module.register_forward_hook(post, with_kwargs=True))

    def pack(t):
        if current:
            name = current[-1]
            ptr = t.untyped_storage().data_ptr()
            if ptr not in param_ptrs and ptr not in seen[name]:
                seen[name].add(ptr)
                captured[name].saved_bytes += t.untyped_storage().nbytes()
        return t

    try:
        with torch.set_grad_enabled(train), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            model(x)
    finally:
        for h in hooks:
            h.remove()
    return captured


def _is_add_relu(module) -> bool:
    module = getattr(module, "_orig_mod", module)  # look through torch.compile's wrapper
    return type(module).__name__.endswith("AddReLU")


def replay_inputs(module, cap: Captured):
    """The captured inputs, made safe to replay many times: an add+ReLU (in place on x in
    the torch backend) gets a zero residual so repeated calls do not grow x; same kernels,
    same bytes, bounded values."""
    args, kwargs = cap.args, cap.kwargs
    if _is_add_relu(module) and len(args) == 2:
        args = (args[0], torch.zeros_like(args[1]))
    return args, kwargs


def forward_closure(module, cap: Captured):
    args, kwargs = replay_inputs(module, cap)
    return lambda: module(*args, **kwargs)


def backward_closure(module, cap: Captured):
    """Backward only: one forward builds a graph (outside the timing), then the closure
    recomputes every gradient the unit produces in training (inputs that required grad,
    and its parameters) with retain_graph. None when the unit has nothing to differentiate."""
    args, kwargs = replay_inputs(module, cap)
    leaves, call_args = [], []
    for a in args:
        if isinstance(a, torch.Tensor) and a.requires_grad:
            leaf = a.detach().requires_grad_(True)
            leaves.append(leaf)
            a = leaf.clone()  # in-place units must not modify a leaf
        elif isinstance(a, torch.Tensor):
            a = a.detach()
        call_args.append(a)
    kwargs = {k: (v.detach().requires_grad_(v.requires_grad) if isinstance(v, torch.Tensor) else v)
              for k, v in kwargs.items()}
    leaves += [v for v in kwargs.values() if isinstance(v, torch.Tensor) and v.requires_grad]
    params = [p for p in module.parameters() if p.requires_grad]
    wrt = leaves + params
    if not wrt:
        return None
    out = module(*call_args, **kwargs)
    if not isinstance(out, torch.Tensor) or not out.requires_grad:
        return None
    grad = torch.randn_like(out)
    return lambda: torch.autograd.grad(out, wrt, grad, retain_graph=True)
