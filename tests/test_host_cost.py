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


def test_device_properties_are_asked_once_per_device(monkeypatch):
    """sm_count and the shared-memory limit run at launches on the GPU: each device's answer
    is kept (its properties never change) instead of asked of the driver every time."""
    from types import SimpleNamespace

    from kernels import _utils, configs

    asked = []
    monkeypatch.setattr(torch.cuda, "get_device_properties",
                        lambda index: asked.append(index) or SimpleNamespace(multi_processor_count=132))
    _utils._cuda_sm_count.cache_clear()
    try:
        assert [_utils.sm_count(torch.device("cuda", 0)) for _ in range(3)] == [132] * 3
        assert _utils.sm_count(torch.device("cuda", 1)) == 132 and asked == [0, 1]
        assert _utils.sm_count(torch.device("cpu")) == 1
    finally:
        _utils._cuda_sm_count.cache_clear()
    import triton.runtime

    limits = []
    fake = SimpleNamespace(utils=SimpleNamespace(
        get_device_properties=lambda index: limits.append(index) or {"max_shared_mem": 232448}))
    monkeypatch.setattr(triton.runtime.driver, "_active", fake, raising=False)
    monkeypatch.setattr(type(triton.runtime.driver), "active", property(lambda self: fake), raising=False)
    configs._cuda_shared_limit.cache_clear()
    try:
        assert [configs._shared_limit(torch.device("cuda", 0)) for _ in range(3)] == [232448] * 3
        assert limits == [0] and configs._shared_limit(torch.device("cpu")) is None
    finally:
        configs._cuda_shared_limit.cache_clear()
