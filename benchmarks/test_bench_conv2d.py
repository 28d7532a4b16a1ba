"""pytest-benchmark: conv2d on the real layers, providers side by side (one group per shape and pass)."""

import pytest

from benchmarks.runner import params, run


@pytest.mark.parametrize("case, provider, pass_", params("conv2d"))
def test_conv2d(benchmark, bench_env, case, provider, pass_):
    run(benchmark, bench_env, case, provider, pass_)
