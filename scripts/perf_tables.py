"""The perf-log's tables from a GPU sweep's rows: per layer the Triton/cuDNN time ratio of
forward, data-grad and weight-grad, the memory-bound kernels' achieved bandwidth, the
Inception fused 1x1 against one concatenated cuDNN conv, and the nets' training images/s.

    python scripts/perf_tables.py SWEEP_CSV [--nets NETS_CSV] [--copy-tbps 3.0]

SWEEP_CSV is `sweep/sweep.csv` of a `scripts/gpu_check.sh` run (gzip is fine); each item's
best timed config is taken (weight-grad: the best split count). Bytes per memory-bound item
come from `benchmarks.sweep.all_items()` (the same count the sweep planned with). Ratios are
Triton time over cuDNN time: below 1 is faster than cuDNN.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.gpu_profile import best_rows  # noqa: E402 (the repository root on the path first)


def best_per_pass(best: pd.DataFrame) -> pd.DataFrame:
    """One row per (layer, pass): weight-grad keeps its fastest split count."""
    return best.loc[best.groupby(["layer", "pass"]).ms.idxmin()].reset_index(drop=True)


def _geomean(values) -> float:
    values = [v for v in values if v and v > 0 and math.isfinite(v)]
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else float("nan")


def _md(frame: pd.DataFrame) -> str:
    cols = list(frame.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for _, row in frame.iterrows():
        lines.append("| " + " | ".join("" if pd.isna(v) else (f"{v:.3f}" if isinstance(v, float) else str(v))
                                       for v in row) + " |")
    return "\n".join(lines)


def conv_table(per_pass: pd.DataFrame) -> str:
    convs = per_pass[per_pass.kind == "conv"].copy()
    convs["ratio"] = convs.ms / convs.cudnn_ms
    rows = []
    for layer, group in convs.groupby("layer", sort=False):
        row = {"layer": layer}
        for p in ("forward", "dgrad", "wgrad"):
            hit = group[group["pass"] == p]
            if len(hit):
                r = hit.iloc[0]
                split = f" s{int(r.split_k)}" if p == "wgrad" and pd.notna(r.split_k) else ""
                row[p] = f"{r.ms:.3f}/{r.cudnn_ms:.3f} = {r.ratio:.2f}{split}"
            else:
                row[p] = ""
        rows.append(row)
    geo = {p: _geomean(convs[convs["pass"] == p].ratio) for p in ("forward", "dgrad", "wgrad")}
    footer = "geomean Triton/cuDNN time: " + ", ".join(f"{p} {g:.2f}" for p, g in geo.items())
    return _md(pd.DataFrame(rows)) + "\n\n" + footer


def memory_table(per_pass: pd.DataFrame, copy_tbps: float) -> str:
    from benchmarks.sweep import all_items
    nbytes = {item.id: item.nbytes for item in all_items()}
    mem = per_pass[per_pass.kind.isin(["lrn", "lrn_pool", "max_pool", "batchnorm", "add_relu"])].copy()
    mem["MB"] = mem.item.map(nbytes) / 1e6
    mem["TB/s"] = mem.MB / 1e6 / (mem.ms / 1e3)
    mem["% copy"] = 100 * mem["TB/s"] / copy_tbps
    mem["eager TB/s"] = mem.MB / 1e6 / (mem.cudnn_ms / 1e3)
    mem["Triton/eager"] = mem.ms / mem.cudnn_ms
    out = mem[["item", "MB", "ms", "TB/s", "% copy", "cudnn_ms", "eager TB/s", "Triton/eager"]]
    return _md(out.rename(columns={"cudnn_ms": "eager ms"}))


def inception_table(per_pass: pd.DataFrame) -> str:
    inc = per_pass[per_pass.kind == "inception"].copy()
    inc["Triton/cuDNN"] = inc.ms / inc.cudnn_ms
    return _md(inc[["item", "ms", "cudnn_ms", "Triton/cuDNN"]].rename(columns={"cudnn_ms": "cuDNN ms"}))


def nets_table(nets: pd.DataFrame) -> str:
    wide = nets.pivot(index="arch", columns="backend", values="images_per_s")
    return _md(wide.reset_index())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep", type=Path)
    parser.add_argument("--nets", type=Path)
    parser.add_argument("--copy-tbps", type=float, default=3.0,
                        help="device copy bandwidth the %% column divides by (default: the H100 anchor, 3.0 TB/s)")
    args = parser.parse_args(argv)
    per_pass = best_per_pass(best_rows(pd.read_csv(args.sweep)))
    print("#### Convolutions: Triton ms / cuDNN ms = ratio (weight-grad: best split sN)\n")
    print(conv_table(per_pass))
    print(f"\n#### Memory-bound kernels (bytes as planned; % of {args.copy_tbps} TB/s copy)\n")
    print(memory_table(per_pass, args.copy_tbps))
    print("\n#### Inception: fused 1x1 (and pool projection) vs one cuDNN conv over the concatenated filters\n")
    print(inception_table(per_pass))
    if args.nets:
        print("\n#### Training images/s, batch 128 bf16\n")
        print(nets_table(pd.read_csv(args.nets)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
