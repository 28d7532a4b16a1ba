"""Session state for the kernel benchmarks: device, dtype, batch, measured ceilings and the
`torch` baselines speedups are computed against.

GPU defaults: bfloat16 channels_last at batch 128 over every real layer (CONVBENCH_SET=quick
for the subset scripts/gpu_check.sh runs). CPU: float32, batch 1, a reduced case list, and
the Triton providers skip. CONVBENCH_DTYPE / CONVBENCH_BATCH override the defaults.
"""

import pytest

from benchmarks.runner import BenchEnv


@pytest.fixture(scope="session")
def bench_env() -> BenchEnv:
    return BenchEnv.from_environment()
