"""pytest-benchmark: lrn on the real layers, providers side by side (one group per shape and pass)."""

import pytest

from benchmarks.runner import params, run


@pytest.mark.parametrize("case, provider, pass_", params("lrn"))
def test_lrn(benchmark, bench_env, case, provider, pass_):
    run(benchmark, bench_env, case, provider, pass_)
