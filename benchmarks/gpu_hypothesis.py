"""A pytest plugin for the GPU check's correctness step: registers the hypothesis profile
`gpu-check`, sized for its budget (benchmarks/gpu_plan.py counts its compiles from
MAX_EXAMPLES). Load it with `-p benchmarks.gpu_hypothesis` and HYPOTHESIS_PROFILE=gpu-check;
tests/conftest.py loads the profile HYPOTHESIS_PROFILE names.

It also writes, as each test report arrives (so a run cut off at its time limit still says
which tests failed and how far it got), flushed line by line:
  --failures-file PATH  every failed or errored report: node id, phase, seconds and
                        the whole failure text pytest would print in its summary
  --progress-file PATH  one CSV row per test (node id, outcome, seconds): its call, or the
                        setup that skipped it, or the setup or teardown that failed ("error in
                        setup" / "error in teardown", pytest's E)
Under xdist only the controller writes (the workers' reports reach it as they finish).
"""

from __future__ import annotations

import csv

from hypothesis import HealthCheck, Phase, settings

MAX_EXAMPLES = 4  # per fuzz test; each example can be a new specialization (a compile)

# derandomized: the same examples each run, so one run's compiles are the plan's; no
# shrinking (each shrink step is another compile), a failing example is printed as found.
settings.register_profile(
    "gpu-check", max_examples=MAX_EXAMPLES, deadline=None, derandomize=True,
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def pytest_addoption(parser):
    group = parser.getgroup("gpu-check", "GPU check reports written as tests finish")
    group.addoption("--failures-file", default=None, help="append each failed or errored test report here")
    group.addoption("--progress-file", default=None, help="append one CSV row per finished test here")


class ReportFiles:
    """The two files, opened for appending and flushed after every write."""

    def __init__(self, failures: str | None, progress: str | None):
        self.failures = open(failures, "a") if failures else None  # noqa: SIM115 (open for the session)
        self.progress = open(progress, "a", newline="") if progress else None  # noqa: SIM115
        self.rows = csv.writer(self.progress) if self.progress else None
        if self.progress is not None and self.progress.tell() == 0:
            self.rows.writerow(["nodeid", "outcome", "duration_s"])
            self.progress.flush()

    def pytest_runtest_logreport(self, report):
        final = report.when == "call" or report.outcome != "passed"
        if self.rows is not None and final:
            outcome = f"error in {report.when}" if report.failed and report.when != "call" else report.outcome
            self.rows.writerow([report.nodeid, outcome, f"{report.duration:.3f}"])
            self.progress.flush()
        if self.failures is not None and report.failed:
            self.failures.write(f"=== FAILED {report.nodeid} ({report.when}, {report.duration:.2f} s)\n"
                                f"{report.longreprtext}\n\n")
            self.failures.flush()

    def pytest_unconfigure(self, config):
        for f in (self.failures, self.progress):
            if f is not None:
                f.close()


def pytest_configure(config):
    if hasattr(config, "workerinput"):  # an xdist worker: the controller writes
        return
    failures, progress = config.getoption("--failures-file"), config.getoption("--progress-file")
    if failures or progress:
        config.pluginmanager.register(ReportFiles(failures, progress), "gpu-check-report-files")
