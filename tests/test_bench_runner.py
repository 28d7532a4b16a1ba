"""benchmarks.runner (the kernel benchmarks' one runner) on CPU: the FLOPs its rates and
% of peak are derived from."""

from __future__ import annotations

import pytest
import torch

from benchmarks.cases import cases
from benchmarks.runner import BenchEnv, count_flops


@pytest.mark.parametrize("kernel", ["conv2d", "inception"])
def test_fwd_bwd_flops_are_one_forward_and_its_two_gradients(kernel):
    """A convolution's backward is two forwards' worth (input and weight gradients): a
    fwd+bwd pass counts 3x its forward, not the extra forward the closure runs to make its
    output gradient (that gave 4x, TFLOP/s and % of peak a third too high)."""
    env = BenchEnv(torch.device("cpu"), torch.float32, 1)
    case = cases(kernel, on_gpu=False)[0]
    fwd = count_flops(case, "fwd", env)
    assert fwd > 0
    assert count_flops(case, "fwd+bwd", env) == 3 * fwd
