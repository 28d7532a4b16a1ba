"""A pytest plugin for the GPU check's correctness step: registers the hypothesis profile
`gpu-check`, sized for its budget (benchmarks/gpu_plan.py counts its compiles from
MAX_EXAMPLES). Load it with `-p benchmarks.gpu_hypothesis` and HYPOTHESIS_PROFILE=gpu-check;
tests/conftest.py loads the profile HYPOTHESIS_PROFILE names."""

from __future__ import annotations

from hypothesis import HealthCheck, Phase, settings

MAX_EXAMPLES = 4  # per fuzz test; each example can be a new specialization (a compile)

# derandomized: the same examples each run, so one run's compiles are the plan's; no
# shrinking (each shrink step is another compile), a failing example is printed as found.
settings.register_profile(
    "gpu-check", max_examples=MAX_EXAMPLES, deadline=None, derandomize=True,
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
