"""The result files: their layout on disk, column names, the row writers, and the loaders.

A results folder (the profiler's `--out`) holds one folder per run, never shared:

    DIR/runs/<run id>/results.csv   one row per arch x mode x backend x layer x pass
    DIR/runs/<run id>/kernels.csv   the device kernels (or CPU ops) each row's replay ran
    DIR/runs/<run id>/summary.json  environment, ceilings, configuration, throughput
    DIR/runs/<run id>/report.html   (+ PNGs) built from the three files above

Run ids start with the UTC start time, so sorting them sorts the runs; "latest" is the last.
Rows are flushed as they are measured (a killed run keeps them). Nothing here launches a kernel.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from pathlib import Path

import pandas as pd

RUNS = "runs"
RESULTS_CSV = "results.csv"
KERNELS_CSV = "kernels.csv"
SUMMARY_JSON = "summary.json"
REPORT_HTML = "report.html"

# One row per (run, arch, mode, backend, layer, pass). Layer rows replay one layer in
# isolation; NETWORK rows time the whole net (pass: fwd, fwd+bwd, train_step); a CAPTURE row
# records a failed input capture (that backend's layers were then not measured).
# max_rel_err / grad_max_rel_err: max |out - ref| / max |ref| of the output (and of the worst
# gradient) against `reference` on the same captured input; rel_tol / grad_rel_tol: the bound
# derived from the dtype and the reduction length. ceiling_value is in ceiling_unit.
COLUMNS = [
    "run_id", "arch", "backend", "dtype", "batch_size", "image_size", "mode", "layer", "op", "kernel", "pass",
    "ms", "ms_p20", "ms_p80", "samples", "gflop", "tflops", "gbytes", "gbps",
    "pct_peak", "ceiling", "ceiling_value", "ceiling_unit",
    "images_per_s", "act_bytes", "saved_bytes", "param_bytes", "peak_bytes",
    "max_rel_err", "rel_tol", "grad_max_rel_err", "grad_rel_tol", "reference",
    "device", "status", "error",
]
# One row per (run, arch, mode, backend, layer, pass, kernel): what torch.profiler saw while
# the row's closure ran. source says what the names are: "device kernels" (a GPU's kernels,
# share of their summed device time) or "cpu ops" (the top-level ops and Triton launches under
# the layer's range, share of the range's CPU time).
KERNEL_COLUMNS = ["run_id", "arch", "mode", "backend", "layer", "pass", "kernel", "calls", "us", "share", "source"]
NETWORK = "(network)"
CAPTURE = "(layer inputs)"  # the forward that captures every layer's input, when it fails
STATUSES = ("ok", "oom", "failed", "skipped")
PASSES = ("fwd", "bwd", "fwd+bwd", "train_step")
NUMERIC = ["batch_size", "image_size", "ms", "ms_p20", "ms_p80", "samples", "gflop", "tflops", "gbytes", "gbps",
           "pct_peak", "ceiling_value", "images_per_s", "act_bytes", "saved_bytes", "param_bytes", "peak_bytes",
           "max_rel_err", "rel_tol", "grad_max_rel_err", "grad_rel_tol"]
KERNEL_NUMERIC = ["calls", "us", "share"]


class ResultFileError(ValueError):
    """A result file that cannot be read as one: missing, empty, corrupt, not ours."""


# --------------------------------------------------------------------------- writing
class _CsvWriter:
    """Appends rows to one CSV file (LF line ends), writing the header once, flushing each row."""

    columns: tuple[str, ...] = ()

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fresh = not self.path.exists()
        self._file = open(self.path, "a", newline="")  # noqa: SIM115 (closed in close())
        self._csv = csv.DictWriter(self._file, fieldnames=self.columns, extrasaction="raise", lineterminator="\n")
        if fresh:
            self._csv.writeheader()
            self._file.flush()
        self.rows = 0

    def _write(self, row: dict) -> None:
        unknown = set(row) - set(self.columns)
        if unknown:
            raise ValueError(f"unknown result columns: {sorted(unknown)}")
        self._csv.writerow({k: _cell(row.get(k)) for k in self.columns})
        self._file.flush()
        self.rows += 1

    def close(self) -> None:
        self._file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class ResultWriter(_CsvWriter):
    """Appends rows to `RUN_DIR/results.csv` (a run's own folder: nothing else writes there)."""

    columns = COLUMNS

    def __init__(self, run_dir: str | os.PathLike):
        super().__init__(Path(run_dir) / RESULTS_CSV)

    def write(self, **row) -> None:
        status = row.setdefault("status", "ok")
        if status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {status!r}")
        if row.get("pass") not in PASSES:
            raise ValueError(f"pass must be one of {PASSES}, got {row.get('pass')!r}")
        self._write(row)


class KernelWriter(_CsvWriter):
    """Appends kernel-attribution rows to `RUN_DIR/kernels.csv`."""

    columns = KERNEL_COLUMNS

    def __init__(self, run_dir: str | os.PathLike):
        super().__init__(Path(run_dir) / KERNELS_CSV)

    def write(self, **row) -> None:
        self._write(row)


def _cell(v):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    if isinstance(v, float):
        return f"{v:.6g}"
    return v


def write_summary(run_dir: str | os.PathLike, summary: dict) -> Path:
    path = Path(run_dir) / SUMMARY_JSON
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(summary, indent=1, default=str))
    tmp.replace(path)  # never a half-written summary
    return path


# --------------------------------------------------------------------------- finding runs
def list_runs(out_dir: str | os.PathLike) -> list[str]:
    """The run ids under DIR/runs, oldest first."""
    runs = Path(out_dir) / RUNS
    if not runs.is_dir():
        return []
    return sorted(p.name for p in runs.iterdir() if p.is_dir())


def run_dir(out_dir: str | os.PathLike, run_id: str | None = None) -> Path:
    """The folder of run `run_id` (default: the latest) under DIR. DIR may also be a run's own
    folder (one holding results.csv), then `run_id` must be None or its name."""
    out_dir = Path(out_dir)
    if (out_dir / RESULTS_CSV).exists() and not (out_dir / RUNS).is_dir():
        if run_id not in (None, out_dir.name):
            raise ResultFileError(f"{out_dir} is the folder of run {out_dir.name}, not of run {run_id}")
        return out_dir
    if not out_dir.is_dir():
        raise ResultFileError(f"{out_dir}: no such folder")
    ids = list_runs(out_dir)
    if not ids:
        raise ResultFileError(f"{out_dir} holds no runs (no {RUNS}/<id>/{RESULTS_CSV}); "
                              f"run `python -m benchmarks.profile --out {out_dir}` first")
    if run_id is None:
        return out_dir / RUNS / ids[-1]
    if run_id not in ids:
        matches = [i for i in ids if i.startswith(run_id)]
        if len(matches) != 1:
            raise ResultFileError(f"{out_dir} has no run {run_id!r}" + (" (ambiguous prefix)" if matches else "")
                                  + f"; runs there: {', '.join(ids[-5:])}" + (" ..." if len(ids) > 5 else ""))
        run_id = matches[0]
    return out_dir / RUNS / run_id


# --------------------------------------------------------------------------- reading
def _read_csv(path: Path, columns: list[str], numeric: list[str], text: list[str]) -> pd.DataFrame:
    """A result CSV as a frame with every column, numbers as floats. A file that ends mid-line
    (a run killed while writing) loses its partial last row and says so in attrs['truncated']."""
    if not path.exists():
        raise ResultFileError(f"{path}: no such file")
    raw = path.read_bytes()
    if not raw.strip():
        raise ResultFileError(f"{path} is empty (not even a header): not a convbench result file")
    truncated = not raw.endswith(b"\n")
    if truncated:
        raw = raw[: raw.rfind(b"\n") + 1]
    try:
        frame = pd.read_csv(io.BytesIO(raw), dtype={c: str for c in text}, keep_default_na=False,
                            na_values={c: [""] for c in numeric})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise ResultFileError(f"{path} is not a readable CSV: {str(exc).splitlines()[0]}") from None
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ResultFileError(f"{path} lacks columns {missing}: not a convbench result file of this version")
    for c in numeric:
        frame[c] = pd.to_numeric(frame[c], errors="coerce")
    frame.attrs["truncated"] = truncated
    return frame


def load_results(run: str | os.PathLike) -> pd.DataFrame:
    """RUN_DIR/results.csv (or the latest run's, given a results folder) as a DataFrame."""
    frame = _read_csv(run_dir(run) / RESULTS_CSV, COLUMNS, NUMERIC,
                      ["error", "op", "kernel", "ceiling", "ceiling_unit", "reference", "run_id", "layer"])
    bad = sorted(set(frame.status) - set(STATUSES))
    if bad:
        raise ResultFileError(f"{run_dir(run) / RESULTS_CSV} has rows with unknown status {bad}")
    return frame


def load_kernels(run: str | os.PathLike) -> pd.DataFrame:
    """RUN_DIR/kernels.csv; an empty frame with the columns when the run recorded none."""
    path = run_dir(run) / KERNELS_CSV
    if not path.exists():
        return pd.DataFrame(columns=KERNEL_COLUMNS)
    return _read_csv(path, KERNEL_COLUMNS, KERNEL_NUMERIC, ["kernel", "layer", "run_id"])


def load_summary(run: str | os.PathLike) -> dict:
    """RUN_DIR/summary.json ({} when absent: a run killed before writing it)."""
    path = run_dir(run) / SUMMARY_JSON
    if not path.exists():
        return {}
    try:
        summary = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ResultFileError(f"{path} is not valid JSON ({exc})") from None
    if not isinstance(summary, dict):
        raise ResultFileError(f"{path} holds a {type(summary).__name__}, not a run summary object")
    return summary


def beyond_tolerance(frame: pd.DataFrame) -> pd.Series:
    """True for rows whose output or gradient error exceeds its bound, or is missing (NaN:
    the layer produced NaN) beside a bound."""
    out = (frame.max_rel_err > frame.rel_tol) | (frame.max_rel_err.isna() & frame.rel_tol.notna())
    grad = (frame.grad_max_rel_err > frame.grad_rel_tol) | (frame.grad_max_rel_err.isna()
                                                           & frame.grad_rel_tol.notna())
    return (out | grad).astype(bool)
