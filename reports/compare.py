"""python -m reports.compare A B [--out DIR]: how run B differs from run A.

Per layer, pass and backend: B's median over A's, marked "within noise" when the two runs'
20-80 percentile bands overlap; per backend: images/s ratio. Writes DIR/compare.html
(default: B/compare.html) and prints the path.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from .html import CSS, _e, _fmt, _table
from .schema import NETWORK, load_results, load_summary

KEYS = ["arch", "backend", "mode", "layer", "pass"]


def compare_frames(a: pd.DataFrame, b: pd.DataFrame) -> pd.DataFrame:
    """One row per key present in both runs: ms of each, ratio B/A, and a noise verdict."""
    a, b = a[a.status == "ok"], b[b.status == "ok"]
    cols = [*KEYS, "ms", "ms_p20", "ms_p80", "images_per_s"]
    merged = a[cols].merge(b[cols], on=KEYS, suffixes=("_a", "_b"))
    merged["ratio"] = merged.ms_b / merged.ms_a
    overlap = (merged.ms_p20_b <= merged.ms_p80_a) & (merged.ms_p20_a <= merged.ms_p80_b)
    merged["verdict"] = "within noise"
    merged.loc[~overlap & (merged.ratio < 1), "verdict"] = "faster"
    merged.loc[~overlap & (merged.ratio > 1), "verdict"] = "slower"
    return merged


def build_compare(dir_a: Path, dir_b: Path, out_dir: Path) -> Path:
    cmp = compare_frames(load_results(dir_a), load_results(dir_b))
    env_a, env_b = load_summary(dir_a).get("env", {}), load_summary(dir_b).get("env", {})
    where = lambda env: _e(f"{env.get('gpu') or env.get('cpu')}, {env.get('date', '')}")
    parts = [f"<h1>convbench comparison</h1><p>A: <code>{_e(dir_a)}</code> ({where(env_a)})<br>"
             f"B: <code>{_e(dir_b)}</code> ({where(env_b)})</p>"]
    if env_a.get("gpu") != env_b.get("gpu"):
        parts.append('<p class="banner">The two runs were measured on different devices.</p>')
    net = cmp[cmp.layer == NETWORK]
    if not net.empty:
        rows = [[_e(r.arch), _e(r.backend), _e(r["mode"]), _e(r["pass"]), _fmt(r.images_per_s_a),
                 _fmt(r.images_per_s_b), _fmt(1 / r.ratio) + "x", _e(r.verdict)] for _, r in net.iterrows()]
        parts.append("<h2>Whole network</h2>" + _table(
            ["arch", "backend", "mode", "pass", "A images/s", "B images/s", "B speedup", "verdict"], rows, left=4))
    layers = cmp[cmp.layer != NETWORK]
    if not layers.empty:
        rows, classes = [], []
        for _, r in layers.iterrows():
            rows.append([_e(r.arch), _e(r.backend), _e(r["mode"]), _e(r.layer), _e(r["pass"]), _fmt(r.ms_a),
                         _fmt(r.ms_b), _fmt(r.ratio), _e(r.verdict)])
            classes.append([""] * 8 + [{"faster": "win", "slower": "bad"}.get(r.verdict, "")])
        parts.append("<h2>Per layer (B ms / A ms)</h2>" + _table(
            ["arch", "backend", "mode", "layer", "pass", "A ms", "B ms", "ratio", "verdict"], rows, left=5,
            classes=classes))
        parts.append('<p class="note">within noise: the runs\' 20th-80th percentile bands overlap.</p>')
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "compare.html"
    path.write_text(f"<!doctype html><html><head><meta charset='utf-8'><title>convbench comparison</title>"
                    f"<style>{CSS}</style></head><body>{''.join(parts)}</body></html>")
    return path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m reports.compare", description=__doc__.split("\n\n")[0])
    p.add_argument("a", type=Path)
    p.add_argument("b", type=Path)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    for d in (args.a, args.b):
        if not (d / "results.csv").exists():
            p.error(f"{d} has no results.csv")
    print(build_compare(args.a, args.b, args.out or args.b))
    return 0


if __name__ == "__main__":
    sys.exit(main())
