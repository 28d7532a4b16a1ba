"""Scale-out results: the `scaling.csv` schema (one row per run x arch x backend x layout x
world size), its writer and loader, scaling efficiency, and the report's chart and table:
images/s against world size with the linear line, efficiency, the all-reduce time and how
much of it backward hid, and AlexNet's two towers beside data parallelism on two devices.

Reads and writes result files only; imports neither kernels, nets nor benchmarks.
`python -m reports.scaling DIR` writes DIR/scaling.html and its PNG.
"""

from __future__ import annotations

import csv
import html
import math
import os
import sys
from pathlib import Path

import pandas as pd

from .schema import RUNS

SCALING_CSV = "scaling.csv"
SCALING_HTML = "scaling.html"
PARALLEL = ("ddp", "towers")
COLUMNS = [
    "run_id", "arch", "backend", "parallel", "world_size", "nodes", "dtype", "batch_per_device", "image_size",
    "global_batch", "bucket_mb", "steps",
    "step_ms", "step_ms_p20", "step_ms_p80", "images_per_s", "images_per_s_per_device",
    "efficiency", "baseline_run_id",
    # all-reduce of the gradient buckets (DDP): the union of the buckets' launch-to-done
    # intervals per step, the part of it before backward's last gradient (hidden), the part
    # after (exposed), and exposed as a share of the step
    "allreduce_ms", "allreduce_hidden_pct", "allreduce_exposed_ms", "comm_share_pct", "buckets",
    "peak_bytes", "device", "comm_backend", "status", "error",
]
NUMERIC = ["world_size", "nodes", "batch_per_device", "image_size", "global_batch", "bucket_mb", "steps", "step_ms",
           "step_ms_p20", "step_ms_p80", "images_per_s", "images_per_s_per_device", "efficiency",
           "allreduce_ms", "allreduce_hidden_pct", "allreduce_exposed_ms", "comm_share_pct", "buckets",
           "peak_bytes"]
# Rows compare for efficiency only when all of these agree (and the baseline is world size 1).
LIKE = ["arch", "backend", "parallel", "dtype", "batch_per_device", "image_size", "bucket_mb", "device",
        "comm_backend"]


def _cell(v):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    return f"{v:.6g}" if isinstance(v, float) else v


def append_rows(out_dir: str | os.PathLike, rows: list[dict]) -> Path:
    """Append rows to DIR/scaling.csv (header once); never rewrites earlier runs' rows."""
    path = Path(out_dir) / SCALING_CSV
    path.parent.mkdir(parents=True, exist_ok=True)
    for row in rows:
        unknown = set(row) - set(COLUMNS)
        if unknown:
            raise ValueError(f"unknown scaling columns: {sorted(unknown)}")
        if row.get("parallel") not in PARALLEL:
            raise ValueError(f"parallel must be one of {PARALLEL}, got {row.get('parallel')!r}")
    fresh = not path.exists() or path.stat().st_size == 0
    with open(path, "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        if fresh:
            writer.writeheader()
        for row in rows:
            writer.writerow({k: _cell(row.get(k)) for k in COLUMNS} | {"status": row.get("status", "ok")})
    return path


def load_scaling(out_dir: str | os.PathLike) -> pd.DataFrame:
    path = Path(out_dir) / SCALING_CSV
    if not path.exists():
        raise FileNotFoundError(f"no {SCALING_CSV} in {str(out_dir)!r}")
    frame = pd.read_csv(path, dtype={"error": str, "run_id": str, "baseline_run_id": str},
                        keep_default_na=False, na_values={c: [""] for c in NUMERIC})
    if "image_size" not in frame.columns:  # written before rows recorded it: unknown, like no baseline
        frame.insert(frame.columns.get_loc("batch_per_device") + 1 if "batch_per_device" in frame else 0,
                     "image_size", math.nan)
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"{path} lacks columns {missing}: not a convbench scaling file")
    for c in NUMERIC:
        frame[c] = pd.to_numeric(frame[c], errors="coerce")
    return frame


def load_scaling_runs(run_folder: str | os.PathLike) -> pd.DataFrame:
    """This run's rows and those of every run beside it (RESULTS/runs/*/scaling.csv), for
    baselines from earlier runs; an empty frame when there are none."""
    run_folder = Path(run_folder)
    folders = sorted(run_folder.parent.glob(f"*/{SCALING_CSV}")) if run_folder.parent.name == RUNS else []
    paths = {p.parent for p in folders} | ({run_folder} if (run_folder / SCALING_CSV).exists() else set())
    frames = [load_scaling(p) for p in sorted(paths)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=COLUMNS)


def baseline(frame: pd.DataFrame, row: dict) -> pd.Series | None:
    """The world-size-1 row `row` scales against: like for like (`LIKE`), ok, from the same
    run when it has one, else the latest such row in the file."""
    if frame.empty:
        return None
    ok = frame[(frame.world_size == 1) & (frame.status == "ok")]
    for key in LIKE:
        value = row.get(key)
        ok = ok[ok[key] == value] if not (isinstance(value, float) and math.isnan(value)) else ok[ok[key].isna()]
    if ok.empty:
        return None
    same = ok[ok.run_id == row.get("run_id")]
    return (same if not same.empty else ok).iloc[-1]


def efficiency(images_per_s: float, world_size: int, base_images_per_s: float) -> float:
    """Throughput over the linear ideal: images/s at N / (N x images/s at 1)."""
    return images_per_s / (world_size * base_images_per_s)


# --------------------------------------------------------------------------- report
def throughput_chart(frame: pd.DataFrame, out_dir: Path) -> str | None:
    """images/s against world size per arch and backend (DDP), the linear line from world
    size 1 dashed, and the towers as single points at world size 2."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = frame[frame.status == "ok"]
    if rows.empty:
        return None
    fig, ax = plt.subplots(figsize=(7.5, 5))
    for (arch, backend, dtype, batch), group in rows[rows.parallel == "ddp"].groupby(
            ["arch", "backend", "dtype", "batch_per_device"]):
        group = group.sort_values("world_size").drop_duplicates("world_size", keep="last")
        label = f"{arch} {backend} {dtype} b{int(batch)}/dev"
        (line,) = ax.plot(group.world_size, group.images_per_s, marker="o", label=label)
        base = group[group.world_size == 1]
        if not base.empty:
            ws = group.world_size.to_numpy()
            ax.plot(ws, ws * base.images_per_s.iloc[0], ls="--", color=line.get_color(), alpha=0.6)
    for (arch, backend, dtype, batch), group in rows[rows.parallel == "towers"].groupby(
            ["arch", "backend", "dtype", "batch_per_device"]):
        ax.scatter(group.world_size, group.images_per_s, marker="*", s=120,
                   label=f"{arch} towers {backend} {dtype} b{int(batch)}")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("world size (devices)")
    ax.set_ylabel("training images/s (all devices)")
    ax.set_title("Data-parallel scaling (dashed: linear from 1 device)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    name = "scaling.png"
    fig.savefig(out_dir / name, dpi=110)
    plt.close(fig)
    return name


def _fmt(v, spec: str) -> str:
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def _pct(v) -> str:
    return "" if v is None or v != v else f"{v:.1f}%"


def table_html(frame: pd.DataFrame) -> str:
    """One line per row: layout, world size, images/s (total, per device), step ms,
    efficiency, all-reduce ms / hidden % / exposed ms / share of the step, peak memory, or
    the failure with its rank."""
    head = ("<tr><th>arch</th><th>backend</th><th>layout</th><th>devices</th><th>batch/dev</th>"
            "<th>images/s</th><th>per device</th><th>step ms (p20-p80)</th><th>efficiency</th>"
            "<th>all-reduce ms</th><th>hidden by bwd</th><th>exposed ms</th><th>comm share</th>"
            "<th>peak GiB</th><th>device</th><th>status</th></tr>")
    body = []
    order = frame.sort_values(["arch", "backend", "parallel", "world_size"], kind="stable")
    for r in order.itertuples(index=False):
        step = f"{_fmt(r.step_ms, '.4g')} ({_fmt(r.step_ms_p20, '.4g')}-{_fmt(r.step_ms_p80, '.4g')})"
        if r.status != "ok":
            step = ""
        status = "ok" if r.status == "ok" else f"{r.status}: {html.escape(str(r.error))}"
        peak = r.peak_bytes / 2**30 if r.peak_bytes == r.peak_bytes else None
        cells = [html.escape(str(c)) for c in (r.arch, r.backend, r.parallel)] + [
            _fmt(r.world_size, ".0f"), _fmt(r.batch_per_device, ".0f"), _fmt(r.images_per_s, ",.1f"),
            _fmt(r.images_per_s_per_device, ",.1f"), step, _pct(r.efficiency * 100), _fmt(r.allreduce_ms, ".3g"),
            _pct(r.allreduce_hidden_pct), _fmt(r.allreduce_exposed_ms, ".3g"), _pct(r.comm_share_pct),
            _fmt(peak, ".2f"), html.escape(str(r.device)), status]
        body.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return f"<table>{head}{''.join(body)}</table>"


def towers_vs_ddp(frame: pd.DataFrame) -> pd.DataFrame:
    """AlexNet's towers against DDP on the same two devices (same backend, dtype, device and
    image size; DDP's row from the towers' run where it has one): images/s of each and their
    ratio. DDP's batch is per device (global 2x), the towers' batch is the global one (both
    devices work on every image)."""
    rows = frame[(frame.status == "ok") & (frame.world_size == 2)]
    towers = rows[rows.parallel == "towers"]
    ddp = rows[(rows.parallel == "ddp") & (rows.arch == "alexnet")]
    out = []
    for t in towers.itertuples(index=False):
        match = ddp[(ddp.backend == t.backend) & (ddp.dtype == t.dtype) & (ddp.device == t.device)
                    & (ddp.image_size == t.image_size)]  # NaN (a size not recorded) matches nothing
        if match.empty:
            continue
        same_run = match[match.run_id == t.run_id]
        d = (same_run if not same_run.empty else match).iloc[-1]
        out.append({"backend": t.backend, "dtype": t.dtype, "towers_batch": t.global_batch,
                    "towers_images_per_s": t.images_per_s, "ddp_global_batch": d.global_batch,
                    "ddp_images_per_s": d.images_per_s, "towers_over_ddp": t.images_per_s / d.images_per_s,
                    "towers_peak_bytes": t.peak_bytes, "ddp_peak_bytes": d.peak_bytes})
    return pd.DataFrame(out)


def section_html(out_dir: str | os.PathLike) -> str:
    """The scaling section of a report (chart + tables) from DIR/scaling.csv; '' if none."""
    out_dir = Path(out_dir)
    if not (out_dir / SCALING_CSV).exists():
        return ""
    frame = load_scaling(out_dir)
    chart = throughput_chart(frame, out_dir)
    parts = ["<h2>Scale-out: data parallel and AlexNet's two towers</h2>",
             "<p>Efficiency = images/s at N devices / (N x images/s at 1 device), like for like. "
             "All-reduce: per step, the union of the gradient buckets' launch-to-completion intervals; "
             "'hidden' is the part before backward produced its last gradient, 'exposed' the rest, and "
             "'comm share' the exposed part as a share of the step.</p>"]
    if chart:
        parts.append(f'<img src="{chart}" alt="images/s against world size">')
    parts.append(table_html(frame))
    vs = towers_vs_ddp(frame)
    if not vs.empty:
        parts.append("<h3>AlexNet: two towers vs data parallel on the same two devices</h3>")
        parts.append(vs.to_html(index=False, float_format=lambda v: f"{v:,.3g}", border=0))
    return "\n".join(parts)


def write_report(out_dir: str | os.PathLike) -> Path:
    out_dir = Path(out_dir)
    section = section_html(out_dir)
    if not section:
        raise FileNotFoundError(f"no {SCALING_CSV} in {str(out_dir)!r}")
    path = out_dir / SCALING_HTML
    path.write_text("<!doctype html><html><head><meta charset='utf-8'><title>convbench scaling</title>"
                    "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;font-size:13px}"
                    "td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}</style></head><body>"
                    f"{section}</body></html>")
    return path


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m reports.scaling DIR", file=sys.stderr)
        return 2
    print(write_report(argv[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
