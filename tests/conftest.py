"""Fixtures and markers for the correctness suite.

The interpreter switch lives in the repository's root conftest.py, which pytest loads first.
"""

from __future__ import annotations

import os

import pytest
import torch
from hypothesis import HealthCheck, Phase, settings

HAS_CUDA = torch.cuda.is_available()
INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"

# The interpreter is orders of magnitude slower than a GPU: few, tiny examples on CPU, and
# no shrinking (minutes per failure there); a failing example is still printed as found.
settings.register_profile(
    "interpret", max_examples=12, deadline=None, derandomize=True,
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile("gpu", max_examples=60, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "gpu" if HAS_CUDA else "interpret"))


def pytest_collection_modifyitems(config, items):
    if HAS_CUDA:
        return
    skip = pytest.mark.skip(reason="needs a CUDA device: torch.cuda.is_available() is False")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def device() -> str:
    """Where Triton kernels run: the GPU when present, else CPU under the interpreter."""
    return "cuda" if HAS_CUDA else "cpu"


@pytest.fixture(autouse=True)
def restore_torch_flags():
    """Tests may flip TF32 / cudnn flags; put every global back afterwards."""
    saved = (
        torch.backends.cudnn.allow_tf32,
        torch.backends.cuda.matmul.allow_tf32,
        torch.backends.cudnn.benchmark,
        torch.backends.cudnn.deterministic,
        torch.get_default_dtype(),
    )
    yield
    (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32,
     torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic) = saved[:4]
    torch.set_default_dtype(saved[4])


@pytest.fixture(autouse=True)
def ieee_fp32_unless_gpu_marked(request, restore_torch_flags):
    """Tests that take `device` and are not `gpu`-marked compare fp32 results with IEEE
    tolerances (tests/helpers.py: `tf32=False` unless a test says otherwise). On a GPU,
    torch's default `cudnn.allow_tf32=True` would make every fp32 GEMM launcher pass TF32
    (kernels/_utils.py `dot_precision`), whose input rounding (2**-11) is far outside those
    tolerances: the conv and Inception fuzz, named-case, split-K, int64 and module tests
    would fail on a GPU, or pass only with tolerances that hide real errors. So for them
    both TF32 flags are off (the precision the tolerances derive from); the TF32 path is
    checked by the `gpu`-marked tests, which read the flag and widen their tolerance
    (`tf32=True`) themselves, and by tests/test_gpu_paths.py, which checks the precision
    each launcher passes under each flag. A test may still set the flags itself. Applied
    on the CPU as well, where the interpreter's fp32 `tl.dot` is exact either way, so
    both machines run the same configuration; restore_torch_flags puts them back."""
    if "device" in request.fixturenames and request.node.get_closest_marker("gpu") is None:
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False


@pytest.fixture
def ieee_fp32():
    """fp32 convs and matmuls in IEEE precision (no TF32) on both sides of a comparison;
    the flags are put back by restore_torch_flags."""
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
