"""pytest-benchmark: inception on the real layers, providers side by side (one group per shape and pass)."""

import pytest

from benchmarks.runner import params, run


@pytest.mark.parametrize("case, provider, pass_", params("inception"))
def test_inception(benchmark, bench_env, case, provider, pass_):
    run(benchmark, bench_env, case, provider, pass_)
