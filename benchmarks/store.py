"""The results store: each profiler run writes into a folder of its own,
DIR/runs/<run id>/ (results.csv, kernels.csv, summary.json, report.html, traces), so no run
erases or mixes with another, whatever runs before or after it into the same DIR. The
layout and the loaders are `reports.schema`'s; this module only creates and fills a run.
"""

from __future__ import annotations

import datetime
import os
import uuid
from pathlib import Path

from reports.schema import RUNS, KernelWriter, ResultWriter, write_summary

_last_start: datetime.datetime | None = None


def new_run_id(now: datetime.datetime | None = None) -> str:
    """UTC start time to the microsecond, then a random suffix: ids sort as the runs started
    ("latest" and compare's A/B order depend on it). Within one process a start is moved one
    microsecond past the previous one, so two runs in the same clock tick still sort in order."""
    global _last_start
    if now is None:
        now = datetime.datetime.now(datetime.timezone.utc)
        if _last_start is not None and now <= _last_start:
            now = _last_start + datetime.timedelta(microseconds=1)
        _last_start = now
    return now.strftime("%Y%m%d-%H%M%S.%f-") + uuid.uuid4().hex[:6]


def check_out_dir(out: Path) -> None:
    """Raise ValueError (naming --out) unless DIR/runs/<id> could be created under `out`;
    writes nothing."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file, not a folder")
    probe = out
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise ValueError(f"--out {out}: {probe} is a file, so no folder can be made under it")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ValueError(f"--out {out}: {probe} is not writable")
    runs = out / RUNS
    if runs.exists() and not runs.is_dir():
        raise ValueError(f"--out {out}: {runs} is a file, not the runs folder")


class RunStore:
    """One run's folder and writers. Rows are flushed as written; the summary is replaced
    atomically each time it is saved."""

    def __init__(self, out: str | os.PathLike, run_id: str | None = None):
        self.run_id = run_id or new_run_id()
        self.dir = Path(out) / RUNS / self.run_id
        self.dir.mkdir(parents=True, exist_ok=False)  # a fresh id: never an existing run's folder
        self.results = ResultWriter(self.dir)
        self.kernels = KernelWriter(self.dir)

    def save_summary(self, summary: dict) -> Path:
        return write_summary(self.dir, summary)

    def close(self) -> None:
        self.results.close()
        self.kernels.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
