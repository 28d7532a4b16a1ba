"""python -m reports.compare A B [--run-a ID] [--run-b ID] [--out DIR]: how run B differs
from run A, like with like only.

A and B are results folders (their latest run, or the one named; when A and B are the same
folder, A defaults to the run before the latest) or runs' own folders. Rows are matched on
arch, mode, layer, pass, backend, dtype, batch size and image size; nothing in common is an
error. Every configuration or environment field that differs between the runs is warned
about (stderr and the page), and so is every row that failed in either run (its statuses
and error, under "Not compared"), a run that was interrupted or did not finish, and how many
rows of each run have no counterpart in the other. Per layer: B's median over A's, "within noise" when the runs'
20-80 percentile bands overlap; whole network: B's images/s over A's. Writes
DIR/compare.html (default: in B's run folder) and prints its path.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from .html import CSS, _e, _fmt, _table
from .schema import NETWORK, RUNS, ResultFileError, list_runs, load_results, load_summary, run_dir

KEYS = ["arch", "mode", "layer", "pass", "backend", "dtype", "batch_size", "image_size"]
# Summary fields that do not make two runs unlike.
IGNORED = {"env.date", "env.command", "config.out"}


def compare_frames(a: pd.DataFrame, b: pd.DataFrame) -> pd.DataFrame:
    """One row per key present (status ok) in both runs: each run's ms, band and images/s,
    B's ms over A's, B's speedup, and a noise verdict."""
    a, b = a[a.status == "ok"], b[b.status == "ok"]
    cols = [*KEYS, "ms", "ms_p20", "ms_p80", "images_per_s"]
    merged = a[cols].merge(b[cols], on=KEYS, suffixes=("_a", "_b"))
    merged["ratio"] = merged.ms_b / merged.ms_a
    merged["speedup"] = speedup(merged)
    merged["verdict"] = verdict(merged)
    return merged


def not_compared(a: pd.DataFrame, b: pd.DataFrame) -> pd.DataFrame:
    """Rows under one key in both runs that failed (status not ok) in either: compare_frames
    matches measured rows only, so a layer that ran in A and OOMs in B would drop out."""
    cols = [*KEYS, "status", "error"]
    merged = a[cols].merge(b[cols], on=KEYS, suffixes=("_a", "_b"))
    return merged[(merged.status_a != "ok") | (merged.status_b != "ok")]


def unmatched(frame: pd.DataFrame, other: pd.DataFrame) -> int:
    """How many rows of `frame` have a key (`KEYS`) that `other` lacks: another arch, mode or
    backend, or a run that stopped before reaching them."""
    keys = frame[KEYS].drop_duplicates().merge(other[KEYS].drop_duplicates(), how="left", indicator=True)
    return int((keys["_merge"] == "left_only").sum())


def speedup(merged: pd.DataFrame) -> pd.Series:
    """How many times faster B is: images/s B / A for whole-network rows (throughput is what a
    network row measures), ms A / B for layer rows."""
    by_images = merged.images_per_s_b / merged.images_per_s_a
    by_ms = merged.ms_a / merged.ms_b
    return by_images.where(merged.layer == NETWORK, by_ms)


def verdict(merged: pd.DataFrame) -> pd.Series:
    """'within noise' when the 20-80 percentile bands overlap, else 'faster' or 'slower'."""
    overlap = (merged.ms_p20_b <= merged.ms_p80_a) & (merged.ms_p20_a <= merged.ms_p80_b)
    out = pd.Series("within noise", index=merged.index)
    out[~overlap & (merged.ratio < 1)] = "faster"
    out[~overlap & (merged.ratio > 1)] = "slower"
    return out


def _flatten(d, prefix="") -> dict:
    out = {}
    for k, v in (d or {}).items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def differences(summary_a: dict, summary_b: dict) -> list[tuple[str, object, object]]:
    """(field, A's value, B's value) for every environment and configuration field that
    differs between the runs (measured ceilings, dates and commands excepted)."""
    fa = _flatten({"env": summary_a.get("env"), "config": summary_a.get("config")})
    fb = _flatten({"env": summary_b.get("env"), "config": summary_b.get("config")})
    return [(k, fa.get(k), fb.get(k)) for k in sorted(set(fa) | set(fb))
            if k not in IGNORED and fa.get(k) != fb.get(k)]


def _describe(frame: pd.DataFrame) -> str:
    keys = frame[["arch", "mode", "backend", "dtype", "batch_size", "image_size"]].drop_duplicates()
    return "; ".join(f"{r.arch}/{r.mode}/{r.backend} {r.dtype} batch {r.batch_size:g} image {r.image_size:g}"
                     for r in keys.itertuples()) or "no rows"


def build_compare(dir_a: Path, dir_b: Path, out_dir: Path, warnings: list[str]) -> Path:
    frame_a, frame_b = load_results(dir_a), load_results(dir_b)
    cmp = compare_frames(frame_a, frame_b)
    if cmp.empty:
        ok_a, ok_b = frame_a[frame_a.status == "ok"], frame_b[frame_b.status == "ok"]
        raise ResultFileError(f"nothing to compare: no measured row of A ({_describe(ok_a)}) matches one of "
                              f"B ({_describe(ok_b)}) on {', '.join(KEYS)}")
    lost = not_compared(frame_a, frame_b)
    if not lost.empty:
        lost_warning = (f"{len(lost)} rows failed in A or B (status not ok) and are not compared: "
                        "see 'Not compared'")
        print(f"warning: {lost_warning}", file=sys.stderr)
        warnings = [*warnings, lost_warning]
    sum_a, sum_b = load_summary(dir_a), load_summary(dir_b)
    for name, summary, frame, other in (("A", sum_a, frame_a, frame_b), ("B", sum_b, frame_b, frame_a)):
        state = ("was interrupted" if summary.get("interrupted") else
                 "did not finish" if summary and not summary.get("finished", True) else None)
        alone = unmatched(frame, other)
        if state or alone:
            text = (f"{name} ({summary.get('run_id', '?')}) " + (f"{state}; " if state else "")
                    + f"{alone} of its rows have no counterpart in the other run and are not compared")
            print(f"warning: {text}", file=sys.stderr)
            warnings = [*warnings, text]
    env_a, env_b = sum_a.get("env", {}), sum_b.get("env", {})
    where = lambda env: _e(f"{env.get('gpu') or env.get('cpu')}, {env.get('date', '')}")
    parts = [f"<h1>convbench comparison</h1><p>A: <code>{_e(dir_a)}</code> ({where(env_a)})<br>"
             f"B: <code>{_e(dir_b)}</code> ({where(env_b)})</p>"]
    parts += [f'<p class="banner">{_e(w)}</p>' for w in warnings]
    net = cmp[cmp.layer == NETWORK]
    if not net.empty:
        rows = [[_e(r.arch), _e(r.backend), _e(r["mode"]), _e(r["pass"]), _e(r["dtype"]), _fmt(r.batch_size),
                 _fmt(r.images_per_s_a), _fmt(r.images_per_s_b), _fmt(r.speedup) + "x", _e(r.verdict)]
                for _, r in net.iterrows()]
        parts.append("<h2>Whole network</h2>" + _table(
            ["arch", "backend", "mode", "pass", "dtype", "batch", "A images/s", "B images/s", "B speedup",
             "verdict"], rows, left=5))
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
    if not lost.empty:
        rows = [[_e(r.arch), _e(r.backend), _e(r["mode"]), _e(r.layer), _e(r["pass"]), _e(r.status_a),
                 _e(r.status_b), _e(r.error_b if r.status_b != "ok" else r.error_a)] for _, r in lost.iterrows()]
        classes = [[""] * 5 + ["bad" if r.status_a != "ok" else "", "bad" if r.status_b != "ok" else "", ""]
                   for _, r in lost.iterrows()]
        parts.append("<h2>Not compared (failed, OOM or skipped in A or B)</h2>" + _table(
            ["arch", "backend", "mode", "layer", "pass", "A status", "B status", "error"], rows, left=8,
            classes=classes))
    parts.append('<p class="note">Rows are matched on ' + ", ".join(KEYS) + ". within noise: the runs' 20th-80th "
                 "percentile bands overlap. Whole-network speedups are images/s ratios.</p>")
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "compare.html"
    path.write_text(f"<!doctype html><html><head><meta charset='utf-8'><title>convbench comparison</title>"
                    f"<style>{CSS}</style></head><body>{''.join(parts)}</body></html>")
    return path


def pick_runs(a: Path, b: Path, run_a: str | None, run_b: str | None) -> tuple[Path, Path]:
    """The two run folders; the same results folder without ids means its last two runs."""
    dir_b = run_dir(b, run_b)
    if run_a is None and a.resolve() == b.resolve() and (a / RUNS).is_dir():
        ids = list_runs(a)
        earlier = [i for i in ids if i < dir_b.name]
        if not earlier:
            raise ResultFileError(f"{a} holds no run before {dir_b.name} to compare it with (give --run-a)")
        return run_dir(a, earlier[-1]), dir_b
    dir_a = run_dir(a, run_a)
    if dir_a.resolve() == dir_b.resolve():
        raise ResultFileError(f"A and B are the same run ({dir_a.name}); name two runs with --run-a / --run-b")
    return dir_a, dir_b


class Parser(argparse.ArgumentParser):
    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def main(argv=None) -> int:
    p = Parser(prog="python -m reports.compare", description=__doc__.split("\n\n")[0])
    p.add_argument("a", type=Path, help="results folder (or run folder) of the baseline run A")
    p.add_argument("b", type=Path, help="results folder (or run folder) of run B")
    p.add_argument("--run-a", default=None, help="run id in A (default: the latest; the one before B's if A is B)")
    p.add_argument("--run-b", default=None, help="run id in B (default: the latest)")
    p.add_argument("--out", type=Path, default=None, help="where compare.html goes (default: B's run folder)")
    args = p.parse_args(argv)
    try:
        dir_a, dir_b = pick_runs(args.a, args.b, args.run_a, args.run_b)
        warnings = [f"A and B differ in {k}: {va!r} vs {vb!r}"
                    for k, va, vb in differences(load_summary(dir_a), load_summary(dir_b))]
        for w in warnings:
            print(f"warning: {w}", file=sys.stderr)
        print(build_compare(dir_a, dir_b, args.out or dir_b, warnings))
    except (ResultFileError, OSError) as exc:
        print(f"{p.prog}: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
