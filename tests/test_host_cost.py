"""scripts/host_cost.py: the launches of a training step, counted with every launch stubbed.
The counts are the nets' launch budget: one launch per conv pass, the BatchNorm's five (two
forward, three backward) after each conv, nothing launched twice."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

import nets

ROOT = Path(__file__).resolve().parents[1]


def _host_cost():
    spec = importlib.util.spec_from_file_location("host_cost", ROOT / "scripts" / "host_cost.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_resnet18_launches_one_kernel_per_conv_pass():
    ms, launches = _host_cost().measure("resnet18", rounds=1, steps=1)
    model = nets.build("resnet18", "triton")
    convs = sum(isinstance(m, torch.nn.Conv2d) for m in model.modules())
    bns = sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert (convs, bns) == (20, 20)
    assert launches["_conv_fwd_kernel"] == convs
    assert launches["_conv_dgrad_kernel"] == convs - 1  # the stem's input (the images) needs no gradient
    assert launches["_conv_wgrad_kernel"] == convs
    # each BatchNorm: its statistics from the conv's own epilogue, then finalize and normalize
    # (the stem's normalize is fused with its ReLU and max-pool); backward: reduce, finalize, dx
    assert launches["_bn_finalize_kernel"] == bns
    assert launches["_bn_fwd_kernel"] + launches["_bn_relu_pool_fwd_kernel"] == bns
    for kernel in ("_bn_bwd_reduce_kernel", "_bn_bwd_finalize_kernel", "_bn_bwd_dx_kernel"):
        assert launches[kernel] == bns, kernel
    assert sum(launches.values()) == 3 * convs - 1 + 5 * bns + 2  # + the stem's stats pass and pool backward
    assert 0 < ms < 60_000
