"""The fully-connected layers' epilogue in Triton: bias + ReLU + dropout in one pass, and
dropout alone.

Tiers: `_fc_epilogue_fwd_kernel`, `_fc_epilogue_bwd_kernel` -> launchers
`fc_epilogue_forward`, `fc_epilogue_backward` -> `LinearFunction`, `DropoutFunction` ->
`Linear` (an `nn.Linear`: same parameters and state_dict) and `Dropout` (an `nn.Dropout`).

The GEMM itself is torch's (`x @ weight.T`, cuBLAS on a GPU; the nets' FC layers are a few
percent of a step): what follows it, the bias add, the ReLU and the dropout that the paper
nets put after their hidden FC layers, runs as one Triton pass instead of three torch ops,
and the backward's masks as one more (the bias gradient is `_reduce.column_sum`).

Dropout keeps each element with probability 1 - p and scales kept ones by 1 / (1 - p), as
torch does; its random numbers are Philox (`tl.rand`) keyed by a seed drawn from torch's
generator on the input's device for each call (so `torch.manual_seed` makes runs
repeatable, and a CUDA graph replay draws a new one) and by the element's flat index. The
mask is not torch's own (its Philox stream differs) and is never stored: after a ReLU the
gradient's mask is the output's sign (`out <= 0` gives 0, as torch's threshold_backward);
dropout alone recomputes it from the seed. p = 1 drops everything (gradient zero), as torch.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from ._reduce import column_sum
from ._utils import cdiv, check_float_tensor, check_same, describe, first_order
from .configs import interpreting

ACTIVATIONS = (None, "relu")


# --------------------------------------------------------------------------- kernels
@triton.jit
def _keep(seed_ptr, offs_m, offs_n, N, p):
    """The dropout mask of elements (m, n): a uniform [0, 1) draw per flat index, >= p."""
    seed = tl.load(seed_ptr)
    return tl.rand(seed, (offs_m[:, None] * N + offs_n[None, :]).to(tl.uint32)) >= p


@triton.jit
def _fc_epilogue_fwd_kernel(
    z_ptr, b_ptr, y_ptr, seed_ptr,
    M, N,
    # strides: z, y (row, col); bias
    szm, szn, sym, syn, sb,
    p, scale,
    HAS_BIAS: tl.constexpr, RELU: tl.constexpr, DROPOUT: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """y = dropout(act(z + bias)): accumulate in fp32 (fp64 for fp64), round once."""
    ACC: tl.constexpr = tl.float64 if z_ptr.dtype.element_ty == tl.float64 else tl.float32
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    mask = (offs_m < M)[:, None] & (offs_n < N)[None, :]
    v = tl.load(z_ptr + offs_m[:, None] * szm + offs_n[None, :] * szn, mask=mask, other=0.0).to(ACC)
    if HAS_BIAS:
        v += tl.load(b_ptr + offs_n * sb, mask=offs_n < N, other=0.0).to(ACC)[None, :]
    if RELU:
        v = tl.where(v < 0, 0.0, v)  # NaN stays NaN, as torch.relu
    if DROPOUT:
        v = tl.where(_keep(seed_ptr, offs_m, offs_n, N, p), v * scale, 0.0)
    tl.store(y_ptr + offs_m[:, None] * sym + offs_n[None, :] * syn, v.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _fc_epilogue_bwd_kernel(
    g_ptr, y_ptr, dz_ptr, seed_ptr,
    M, N,
    # strides: grad, y, dz (row, col)
    sgm, sgn, sym, syn, sdm, sdn,
    p, scale,
    RELU: tl.constexpr, DROPOUT: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """dz = the gradient at z + bias: through the ReLU by the output's sign (dropped
    elements are 0 there too), else through the recomputed dropout mask; times the scale."""
    ACC: tl.constexpr = tl.float64 if g_ptr.dtype.element_ty == tl.float64 else tl.float32
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    mask = (offs_m < M)[:, None] & (offs_n < N)[None, :]
    g = tl.load(g_ptr + offs_m[:, None] * sgm + offs_n[None, :] * sgn, mask=mask, other=0.0).to(ACC)
    if DROPOUT:
        g = g * scale
    if RELU:
        y = tl.load(y_ptr + offs_m[:, None] * sym + offs_n[None, :] * syn, mask=mask, other=0.0)
        g = tl.where(y <= 0, 0.0, g)
    elif DROPOUT:
        g = tl.where(_keep(seed_ptr, offs_m, offs_n, N, p), g, 0.0)
    tl.store(dz_ptr + offs_m[:, None] * sdm + offs_n[None, :] * sdn, g.to(dz_ptr.dtype.element_ty), mask=mask)


# --------------------------------------------------------------------------- launchers
def _blocks() -> tuple[int, int]:
    return (32, 64) if interpreting() else (64, 128)


def _check_p(p) -> float:
    if not isinstance(p, (int, float)) or not 0 <= p <= 1:
        raise ValueError(f"dropout probability has to be between 0 and 1, but got {p!r}")
    return float(p)


def _scale(p: float) -> float:
    return 0.0 if p == 1 else 1.0 / (1.0 - p)


def new_seed(device) -> torch.Tensor:
    """A Philox seed from torch's generator of `device`, as a 1-element int64 tensor there
    (no host sync; a CUDA graph capture records the draw, so each replay gets a new seed)."""
    return torch.randint(0, 2**31 - 1, (1,), device=device, dtype=torch.int64)


def fc_epilogue_forward(z, bias=None, *, activation=None, p=0.0, seed=None) -> torch.Tensor:
    """dropout_p(act(z + bias)) of a 2-D z in one pass (p = 0: no dropout, seed unused)."""
    M, N = z.shape
    if p and M * N >= 2**32:
        raise ValueError(f"dropout numbers its elements in 32 bits: z {describe(z)} has too many")
    y = torch.empty((M, N), device=z.device, dtype=z.dtype)
    if not (M and N) or z.is_meta:
        return y
    bm, bn = _blocks()
    _fc_epilogue_fwd_kernel[(cdiv(M, bm), cdiv(N, bn))](
        z, bias if bias is not None else z, y, seed if seed is not None else z, M, N,
        *z.stride(), *y.stride(), bias.stride(0) if bias is not None else 0, float(p), _scale(p),
        HAS_BIAS=bias is not None, RELU=activation == "relu", DROPOUT=p > 0, BLOCK_M=bm, BLOCK_N=bn)
    return y


def fc_epilogue_backward(grad, y, *, activation=None, p=0.0, seed=None) -> torch.Tensor:
    """The gradient at z + bias of `fc_epilogue_forward`'s output y ([M, N]; needed with a
    ReLU only, None otherwise)."""
    M, N = grad.shape
    dz = torch.empty((M, N), device=grad.device, dtype=grad.dtype)
    if not (M and N) or grad.is_meta:
        return dz
    y = y if y is not None else grad  # read only with a ReLU
    bm, bn = _blocks()
    _fc_epilogue_bwd_kernel[(cdiv(M, bm), cdiv(N, bn))](
        grad, y, dz, seed if seed is not None else grad, M, N, *grad.stride(), *y.stride(), *dz.stride(),
        float(p), _scale(p), RELU=activation == "relu", DROPOUT=p > 0, BLOCK_M=bm, BLOCK_N=bn)
    return dz


# --------------------------------------------------------------------------- autograd
def _rows(t: torch.Tensor) -> torch.Tensor:
    """t as [rows, features] (leading dims flattened), as F.linear treats them; rows counted,
    not inferred, so a tensor without features (shape [..., 0]) works as well."""
    return t.reshape(math.prod(t.shape[:-1]), t.shape[-1])


class LinearFunction(torch.autograd.Function):
    """dropout_p(act(x @ weight.T + bias)): the GEMMs torch's, the rest one Triton pass."""

    @staticmethod
    def forward(ctx, x, weight, bias, activation, p):
        x2 = _rows(x)
        seed = new_seed(x.device) if p > 0 else None
        y = fc_epilogue_forward(x2 @ weight.t(), bias, activation=activation, p=p, seed=seed)
        ctx.params = (activation, p, bias is not None, x.shape)
        ctx.save_for_backward(x2, weight, y if activation == "relu" else None, seed)
        return y.view(*x.shape[:-1], weight.shape[0])

    @staticmethod
    @first_order
    def backward(ctx, grad):
        x2, weight, y, seed = ctx.saved_tensors
        activation, p, has_bias, x_shape = ctx.params
        g = _rows(grad)
        dz = g if (activation is None and p == 0) else fc_epilogue_backward(g, y, activation=activation, p=p,
                                                                             seed=seed)
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        dx = (dz @ weight).view(x_shape) if need_x else None
        dw = dz.t() @ x2 if need_w else None
        db = column_sum(dz, weight.dtype) if need_b and has_bias else None
        return dx, dw, db, None, None


class DropoutFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, p):
        x2 = _rows(x.contiguous())
        seed = new_seed(x.device)
        ctx.p = p
        ctx.save_for_backward(seed)
        return fc_epilogue_forward(x2, p=p, seed=seed).view(x.shape)

    @staticmethod
    @first_order
    def backward(ctx, grad):
        (seed,) = ctx.saved_tensors
        g = _rows(grad.contiguous())
        return fc_epilogue_backward(g, None, p=ctx.p, seed=seed).view(grad.shape), None


def linear(x, weight, bias=None, *, activation=None, p=0.0, training=True) -> torch.Tensor:
    """== F.dropout(act(F.linear(x, weight, bias)), p, training) in distribution (the mask
    is drawn by Triton's Philox, not torch's); activation None or "relu"."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
    p = _check_p(p)
    check_float_tensor(x, "x", ndim=None)
    check_float_tensor(weight, "weight", ndim=2)
    check_same(x, "x", weight, "weight")
    if x.dim() == 0 or x.shape[-1] != weight.shape[1]:
        raise ValueError(f"x's last dim must be weight's in_features {weight.shape[1]}, got x {describe(x)}")
    if bias is not None:
        check_float_tensor(bias, "bias", ndim=1)
        check_same(x, "x", bias, "bias")
        if bias.shape[0] != weight.shape[0]:
            raise ValueError(f"bias must have {weight.shape[0]} elements, got {describe(bias)}")
    return LinearFunction.apply(x, weight, bias, activation, p if training else 0.0)


def dropout(x, p=0.5, training=True) -> torch.Tensor:
    """== F.dropout(x, p, training) in distribution (Triton's Philox mask)."""
    p = _check_p(p)
    check_float_tensor(x, "x", ndim=None)
    if not training or p == 0:
        return x
    return DropoutFunction.apply(x, p)


# --------------------------------------------------------------------------- modules
class Linear(torch.nn.Linear):
    """`nn.Linear` (same parameters and state_dict) with its epilogue in Triton: bias, an
    optional ReLU and dropout after it (`activation`, `p`; dropout only in training)."""

    def __init__(self, *args, activation: str | None = None, p: float = 0.0, **kwargs):
        super().__init__(*args, **kwargs)
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
        self.activation, self.p = activation, _check_p(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight, self.bias, activation=self.activation, p=self.p, training=self.training)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", activation={self.activation!r}, p={self.p}"


class Dropout(torch.nn.Dropout):
    """`nn.Dropout` drawn by Triton's Philox (out of place; `inplace` is not supported)."""

    def __init__(self, p: float = 0.5, inplace: bool = False):
        if inplace:
            raise ValueError("inplace=True is not supported by the Triton dropout")
        super().__init__(p, inplace)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training)
