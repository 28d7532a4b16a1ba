"""Kernel benchmarks, declared: per kernel, a setup factory and providers as closures.

A `Case` makes its inputs for (device, dtype, batch); each provider maps those inputs to a
zero-argument forward closure; `reference` is the float64 forward. `runner.closure` turns a
provider into the timed closure of a pass (forward, or forward+backward). FLOPs come from
torch's counter run on the torch provider (meta tensors), bytes from the memory floor.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

import kernels
from nets.googlenet import TABLE1

from . import shapes as S

PROVIDERS = ("torch", "compile", "triton")


@dataclass
class Case:
    kernel: str
    name: str
    make: Callable  # (device, dtype, batch) -> dict of tensors
    providers: dict[str, Callable]  # name -> (inputs -> zero-arg forward closure)
    reference: Callable  # float64 inputs -> float64 output
    grad_inputs: tuple[str, ...] = ()  # inputs that get gradients in fwd+bwd
    floor_bytes: Callable | None = None  # (inputs, pass) -> bytes that must move, memory-bound ops
    meta: dict = field(default_factory=dict)

    @property
    def id(self) -> str:
        return f"{self.kernel}:{self.name}"


def _compiled(fn):
    """torch.compile of a forward function, compiled once per case (dynamic shapes off)."""
    compiled = torch.compile(fn, dynamic=False)
    return lambda inp: (lambda: compiled(**inp))


def _cl(t):
    return t.contiguous(memory_format=torch.channels_last) if t.dim() == 4 else t


def _randn(*shape, device, dtype, scale=1.0):
    return _cl(torch.randn(*shape, device=device, dtype=dtype) * scale)


# --------------------------------------------------------------------------- conv2d
def _conv_case(shape: S.ConvShape) -> Case:
    st, pad, g = shape.stride, shape.padding, shape.groups

    def make(device, dtype, batch):
        fan_in = shape.reduction()
        return {"x": _randn(*shape.x_shape(batch), device=device, dtype=dtype),
                "w": _randn(*shape.w_shape(), device=device, dtype=dtype, scale=fan_in**-0.5),
                "b": torch.randn(shape.K, device=device, dtype=dtype) * 0.1}

    def torch_fn(x, w, b):
        return F.relu(F.conv2d(x, w, b, st, pad, 1, g))

    return Case(
        "conv2d", shape.name, make,
        providers={
            "torch": lambda inp: (lambda: torch_fn(**inp)),
            "compile": _compiled(torch_fn),
            "triton": lambda inp: (lambda: kernels.conv2d(inp["x"], inp["w"], inp["b"], st, pad, 1, g,
                                                          activation="relu")),
        },
        reference=lambda inp: torch_fn(**inp),
        grad_inputs=("x", "w", "b"),
        meta={"shape": shape},
    )


# --------------------------------------------------------------------------- memory-bound
def _lrn_case(shape: S.LRNShape) -> Case:
    params = dict(size=shape.size, alpha=shape.alpha, beta=shape.beta, k=shape.k)

    def make(device, dtype, batch):
        return {"x": _randn(batch, shape.C, shape.H, shape.H, device=device, dtype=dtype)}

    def torch_fn(x):
        return F.local_response_norm(x, **params)

    # fwd: read x, write y; bwd: read x and dy, write dx.
    passes = {"fwd": 2, "fwd+bwd": 5}
    return Case(
        "lrn", shape.name, make,
        providers={
            "torch": lambda inp: (lambda: torch_fn(**inp)),
            "compile": _compiled(torch_fn),
            "triton": lambda inp: (lambda: kernels.local_response_norm(inp["x"], **params)),
        },
        reference=lambda inp: torch_fn(**inp),
        grad_inputs=("x",),
        floor_bytes=lambda inp, p: passes[p] * inp["x"].numel() * inp["x"].element_size(),
    )


def _add_relu_case(shape: S.EltwiseShape) -> Case:
    def make(device, dtype, batch):
        return {"x": _randn(batch, shape.C, shape.H, shape.H, device=device, dtype=dtype),
                "r": _randn(batch, shape.C, shape.H, shape.H, device=device, dtype=dtype)}

    def torch_fn(x, r):
        return F.relu(x + r)

    # fwd: read x, r, write y; bwd: read dy and y, write the one gradient both inputs share.
    passes = {"fwd": 3, "fwd+bwd": 6}
    return Case(
        "add_relu", shape.name, make,
        providers={
            "torch": lambda inp: (lambda: torch_fn(**inp)),
            "compile": _compiled(torch_fn),
            "triton": lambda inp: (lambda: kernels.add_relu(inp["x"], inp["r"])),
        },
        reference=lambda inp: torch_fn(**inp),
        grad_inputs=("x", "r"),
        floor_bytes=lambda inp, p: passes[p] * inp["x"].numel() * inp["x"].element_size(),
    )


# --------------------------------------------------------------------------- Inception blocks
def _inception_case(block, hw: int) -> Case:
    name, cin, c1, r3, c3, r5, c5, cp = block
    shapes = {"w1": (c1, cin, 1, 1), "wr3": (r3, cin, 1, 1), "w3": (c3, r3, 3, 3),
              "wr5": (r5, cin, 1, 1), "w5": (c5, r5, 5, 5), "wp": (cp, cin, 1, 1)}

    def make(device, dtype, batch):
        inp = {"x": _randn(batch, cin, hw, hw, device=device, dtype=dtype)}
        for key, s in shapes.items():
            inp[key] = _randn(*s, device=device, dtype=dtype, scale=(s[1] * s[2] * s[3]) ** -0.5)
            inp["b" + key[1:]] = torch.randn(s[0], device=device, dtype=dtype) * 0.1
        return inp

    def separate(x, w1, b1, wr3, br3, w3, b3, wr5, br5, w5, b5, wp, bp):
        """The torch backend: each branch on cuDNN, then torch.cat."""
        return torch.cat([
            F.relu(F.conv2d(x, w1, b1)),
            F.relu(F.conv2d(F.relu(F.conv2d(x, wr3, br3)), w3, b3, padding=1)),
            F.relu(F.conv2d(F.relu(F.conv2d(x, wr5, br5)), w5, b5, padding=2)),
            F.relu(F.conv2d(F.max_pool2d(x, 3, 1, 1), wp, bp)),
        ], 1)

    def concat_1x1(x, w1, b1, wr3, br3, w3, b3, wr5, br5, w5, b5, wp, bp):
        """cuDNN with the three 1x1s that read x as one conv over their concatenated filters."""
        y = F.relu(F.conv2d(x, torch.cat([w1, wr3, wr5]), torch.cat([b1, br3, br5])))
        b1_out, t3, t5 = y.split([c1, r3, r5], 1)
        return torch.cat([
            b1_out,
            F.relu(F.conv2d(t3, w3, b3, padding=1)),
            F.relu(F.conv2d(t5, w5, b5, padding=2)),
            F.relu(F.conv2d(F.max_pool2d(x, 3, 1, 1), wp, bp)),
        ], 1)

    def triton_fn(inp):
        pair = lambda k: (inp["w" + k], inp["b" + k])
        return lambda: kernels.inception_block(inp["x"], pair("1"), pair("r3"), pair("3"), pair("r5"),
                                               pair("5"), pair("p"))

    return Case(
        "inception", name, make,
        providers={
            "torch": lambda inp: (lambda: separate(**inp)),
            "cudnn_concat1x1": lambda inp: (lambda: concat_1x1(**inp)),
            "compile": _compiled(separate),
            "triton": triton_fn,
        },
        reference=lambda inp: separate(**inp),
        grad_inputs=("x", "w1", "b1", "wr3", "br3", "w3", "b3", "wr5", "br5", "w5", "b5", "wp", "bp"),
    )


_INCEPTION_HW = {"3": 28, "4": 14, "5": 7}

ALL = (
    [_conv_case(s) for s in S.CONV]
    + [_lrn_case(s) for s in S.LRN]
    + [_add_relu_case(s) for s in S.ADD_RELU]
    + [_inception_case(b, _INCEPTION_HW[b[0][9]]) for b in TABLE1]
)
# CPU: a reduced list (and batch 1), so the suite stays a few seconds per case there.
CPU_IDS = {"conv2d:alexnet.features.conv2", "conv2d:resnet50.layer1.1.conv1", "lrn:alexnet.features.norm2",
           "add_relu:resnet50.layer3.add", "inception:inception5b"}
# CONVBENCH_SET=quick on a GPU: the subset the GPU check script runs.
QUICK_IDS = ({f"conv2d:{n}" for n in S.QUICK_CONV}
             | {"lrn:alexnet.features.norm1", "add_relu:resnet50.layer1.add", "inception:inception3a"})


def cases(kernel: str, *, on_gpu: bool) -> list[Case]:
    if on_gpu:
        quick = os.environ.get("CONVBENCH_SET", "full") == "quick"
        return [c for c in ALL if c.kernel == kernel and (not quick or c.id in QUICK_IDS)]
    return [c for c in ALL if c.kernel == kernel and c.id in CPU_IDS]
