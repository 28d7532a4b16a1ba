"""pytest-benchmark: add_relu on the real layers, providers side by side (one group per shape and pass)."""

import pytest

from benchmarks.runner import params, run


@pytest.mark.parametrize("case, provider, pass_", params("add_relu"))
def test_add_relu(benchmark, bench_env, case, provider, pass_):
    run(benchmark, bench_env, case, provider, pass_)
