"""Residual add + ReLU in Triton, forward and backward; and the ReLU gradient every fused
epilogue (conv, Inception) reuses.

Tiers: `_add_relu_fwd_kernel` / `_relu_grad_kernel` -> launchers `add_relu_forward`,
`relu_grad` -> `AddReLUFunction` -> `AddReLU` module. Imports nothing from the other
kernel families.

Both kernels are flat element-wise passes over memory, so the two operands must share one
dense layout (NCHW or channels_last); the launcher converts `residual` to `x`'s layout when
they differ. Backward needs only the output's sign: `grad * (out > 0)` is the gradient of
both inputs, so nothing beyond the output is saved. NaN follows torch: relu(NaN) is NaN in
forward, and the gradient passes where the output is NaN (torch's threshold_backward
zeroes only where out <= 0). float64 adds in float64.

In place (`inplace=True`, torch's `x.add_(residual).relu_()`), torch's memory rules hold: an
x that repeats a memory location (a stride-0 dim) is refused, so is a residual that partly
overlaps x; residual *being* x (the same memory and strides) is allowed. An x that is not
dense is computed out of place and copied back into its strided memory.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._utils import (
    cdiv,
    check_float_tensor,
    check_no_partial_overlap,
    check_same,
    check_writable,
    dense,
    dense_like,
    describe,
    first_order,
    needs_int64,
    no_launch,
)
from .configs import autotune


@triton.jit
def flat_block(numel, BLOCK: tl.constexpr, INDEX_64: tl.constexpr):
    """This program's offsets into a flat tensor of `numel` elements, and their mask."""
    pid = tl.program_id(0)
    start = pid.to(tl.int64) * BLOCK if INDEX_64 else pid * BLOCK
    offs = start + tl.arange(0, BLOCK)
    return offs, offs < numel


# In place (out=x) a tuning re-run would add the residual again: x is restored after each.
@autotune("mem_bound", key=["numel"], restore_value=["x_ptr"])
@triton.jit
def _add_relu_fwd_kernel(
    x_ptr, r_ptr, y_ptr,
    # problem size
    numel,
    BLOCK: tl.constexpr, INDEX_64: tl.constexpr,
):
    """y = relu(x + r) over `numel` elements; all three pointers share one dense layout.
    The sum is taken in fp32 (fp64 for fp64 tensors) and rounded once."""
    ACC: tl.constexpr = tl.float64 if x_ptr.dtype.element_ty == tl.float64 else tl.float32
    offs, mask = flat_block(numel, BLOCK, INDEX_64)
    x = tl.load(x_ptr + offs, mask=mask).to(ACC)
    r = tl.load(r_ptr + offs, mask=mask).to(ACC)
    v = x + r
    # `v < 0` is False for NaN, so NaN propagates as in torch.relu.
    y = tl.where(v < 0, 0.0, v)
    tl.store(y_ptr + offs, y.to(y_ptr.dtype.element_ty), mask=mask)


@autotune("mem_bound", key=["numel"])
@triton.jit
def _relu_grad_kernel(
    g_ptr, y_ptr, dx_ptr,
    # problem size
    numel,
    BLOCK: tl.constexpr, INDEX_64: tl.constexpr,
):
    """dx = g where y > 0 (or y is NaN), else 0; g, y and dx share one dense layout."""
    offs, mask = flat_block(numel, BLOCK, INDEX_64)
    g = tl.load(g_ptr + offs, mask=mask)
    y = tl.load(y_ptr + offs, mask=mask)
    dx = tl.where(y <= 0, tl.zeros_like(g), g)
    tl.store(dx_ptr + offs, dx, mask=mask)


def _grid(numel):
    return lambda meta: (cdiv(numel, meta["BLOCK"]),)


def add_relu_forward(x: torch.Tensor, residual: torch.Tensor, *, out: torch.Tensor | None = None
                     ) -> torch.Tensor:
    """relu(x + residual) in one pass; `out=x` makes it in place (x must then be dense).
    Returns the output."""
    check_float_tensor(x, "x")
    check_float_tensor(residual, "residual")
    check_same(x, "x", residual, "residual")
    if residual.shape != x.shape:
        raise ValueError(f"residual must have x's shape (no broadcasting): residual {describe(residual)}, "
                         f"x {describe(x)}")
    x = dense(x) if out is None else x
    if out is None:
        out = torch.empty_like(x)
    elif out.stride() != x.stride():
        raise ValueError(f"out must share x's dense layout: out strides {out.stride()}, x {x.stride()}")
    if no_launch(out):
        return out
    # A residual that is out's own memory is read element by element before that element is
    # written (full overlap, as in x.add_(x)); any other layout is first made dense like x.
    residual = dense_like(residual, x)
    numel = x.numel()
    _add_relu_fwd_kernel[_grid(numel)](x, residual, out, numel, INDEX_64=needs_int64(x))
    return out


def relu_grad(grad_out: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """grad_out masked by the sign of the saved ReLU output `out`, in `out`'s layout (a
    dense copy of it when `out` is a strided view, e.g. an in-place result)."""
    out = dense(out)
    dx = torch.empty_like(out)
    if no_launch(dx):
        return dx
    grad_out = dense_like(grad_out, out)
    numel = out.numel()
    _relu_grad_kernel[_grid(numel)](grad_out, out, dx, numel, INDEX_64=needs_int64(out))
    return dx


class AddReLUFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, residual, inplace=False):
        if inplace:
            check_float_tensor(x, "x")
            check_float_tensor(residual, "residual")
            check_writable(x, "x")
            check_no_partial_overlap(x, "x", residual, "residual")
            if dense(x) is x:
                y = add_relu_forward(x, residual, out=x)
            else:  # a strided x: the result is copied back into its memory
                y = x.copy_(add_relu_forward(x, residual))
            ctx.mark_dirty(x)
        else:
            y = add_relu_forward(x, residual)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    @first_order
    def backward(ctx, grad_out):
        (y,) = ctx.saved_tensors
        g = relu_grad(grad_out, y)
        # Both inputs get this one tensor: autograd's AccumulateGrad clones a gradient that
        # is referenced twice, so leaf .grad fields never alias (tested).
        return g if ctx.needs_input_grad[0] else None, g if ctx.needs_input_grad[1] else None, None


def add_relu(x: torch.Tensor, residual: torch.Tensor, *, inplace: bool = False) -> torch.Tensor:
    """relu(x + residual), differentiable in both; == F.relu(x + residual)."""
    return AddReLUFunction.apply(x, residual, inplace)


class AddReLU(torch.nn.Module):
    """Module form of `add_relu`; `inplace=True` overwrites x (for use inside nets)."""

    def __init__(self, inplace: bool = False):
        super().__init__()
        self.inplace = inplace

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return add_relu(x, residual, inplace=self.inplace)

    def extra_repr(self) -> str:
        return "inplace=True" if self.inplace else ""
