"""The result files: column names, the row writer, and the loaders.

The profiler writes through `ResultWriter` (one CSV row per run x backend x layer x pass,
flushed as it goes, so an interrupted run keeps its rows) and `write_summary`; the report
reads them back with `load_results` / `load_summary`. Nothing here launches a kernel.
"""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path

import pandas as pd

RESULTS_CSV = "results.csv"
SUMMARY_JSON = "summary.json"
REPORT_HTML = "report.html"

# One row per (run, arch, backend, layer, pass). Layer rows replay one layer in isolation;
# NETWORK rows time the whole net (pass: fwd, fwd+bwd, train_step).
COLUMNS = [
    "run_id", "arch", "backend", "dtype", "batch_size", "mode", "layer", "op", "kernel", "pass",
    "ms", "ms_p20", "ms_p80", "gflop", "tflops", "gbytes", "gbps", "pct_peak", "ceiling",
    "images_per_s", "act_bytes", "saved_bytes", "param_bytes", "peak_bytes",
    "device", "status", "error",
]
NETWORK = "(network)"
STATUSES = ("ok", "oom", "failed", "skipped")
PASSES = ("fwd", "bwd", "fwd+bwd", "train_step")
NUMERIC = ["batch_size", "ms", "ms_p20", "ms_p80", "gflop", "tflops", "gbytes", "gbps", "pct_peak",
           "images_per_s", "act_bytes", "saved_bytes", "param_bytes", "peak_bytes"]


class ResultWriter:
    """Appends rows to `DIR/results.csv`, writing the header once and flushing each row."""

    def __init__(self, out_dir: str | os.PathLike, *, append: bool = False):
        self.path = Path(out_dir) / RESULTS_CSV
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fresh = not (append and self.path.exists())
        self._file = open(self.path, "w" if fresh else "a", newline="")  # noqa: SIM115 (closed in close())
        self._csv = csv.DictWriter(self._file, fieldnames=COLUMNS, extrasaction="raise")
        if fresh:
            self._csv.writeheader()
            self._file.flush()
        self.rows = 0

    def write(self, **row) -> None:
        unknown = set(row) - set(COLUMNS)
        if unknown:
            raise ValueError(f"unknown result columns: {sorted(unknown)}")
        status = row.get("status", "ok")
        if status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {status!r}")
        if row.get("pass") not in PASSES:
            raise ValueError(f"pass must be one of {PASSES}, got {row.get('pass')!r}")
        clean = {k: _cell(row.get(k)) for k in COLUMNS}
        clean["status"] = status
        self._csv.writerow(clean)
        self._file.flush()
        self.rows += 1

    def close(self) -> None:
        self._file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _cell(v):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    if isinstance(v, float):
        return f"{v:.6g}"
    return v


def load_results(out_dir: str | os.PathLike) -> pd.DataFrame:
    """`DIR/results.csv` as a DataFrame with every column of the schema (numbers as floats)."""
    path = Path(out_dir) / RESULTS_CSV
    if not path.exists():
        raise FileNotFoundError(f"no {RESULTS_CSV} in {str(out_dir)!r}")
    frame = pd.read_csv(path, dtype={"error": str, "op": str, "kernel": str}, keep_default_na=False,
                        na_values={c: [""] for c in NUMERIC})
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"{path} lacks columns {missing}: not a convbench result file")
    for c in NUMERIC:
        frame[c] = pd.to_numeric(frame[c], errors="coerce")
    return frame


def write_summary(out_dir: str | os.PathLike, summary: dict) -> Path:
    path = Path(out_dir) / SUMMARY_JSON
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(summary, indent=1, default=str))
    tmp.replace(path)  # never a half-written summary
    return path


def load_summary(out_dir: str | os.PathLike) -> dict:
    path = Path(out_dir) / SUMMARY_JSON
    return json.loads(path.read_text()) if path.exists() else {}
