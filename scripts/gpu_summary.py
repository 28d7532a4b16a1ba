"""The compact summary gpu_check.sh writes last, from its work folder: environment, compile
workers, correctness tests, the sweep (per layer and pass: best Triton config vs cuDNN, and
every config that was wrong, spilled or failed), the nets' training images/s, step times.

Usage: python scripts/gpu_summary.py WORK_DIR [--out summary.txt]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pandas as pd


def _read_csvs(paths) -> pd.DataFrame:
    frames = [pd.read_csv(p) for p in paths if p.stat().st_size]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def summarize(work: Path) -> None:
    env = work / "env.json"
    if env.exists():
        print("environment:", json.loads(env.read_text()))
    compiled = _read_csvs(sorted((work / "compile").glob("compile-*.csv"))) if (work / "compile").exists() \
        else pd.DataFrame()
    if not compiled.empty:
        counts = compiled.status.value_counts().to_dict()
        print(f"\ncompile: {len(compiled)} launches {counts}, {compiled.s.sum():.0f} worker-seconds")
        for _, row in compiled[compiled.status != "ok"].head(10).iterrows():
            print(f"  {row['item']} {row['config']}: {row['error']}")
    junit = work / "correct.xml"
    if junit.exists():
        suite = ET.parse(junit).getroot()
        suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
        print(f"\ncorrectness tests: {suite.get('tests')} run, {suite.get('failures')} failed, "
              f"{suite.get('errors')} errors, {suite.get('skipped')} skipped")
        for case in suite.iter("testcase"):
            failure = case.find("failure")
            if failure is None:
                failure = case.find("error")
            if failure is not None:
                print(f"  FAILED {case.get('classname')}::{case.get('name')}: {failure.get('message', '')[:300]}")
    sweep = work / "sweep" / "sweep.csv"
    if sweep.exists() and sweep.stat().st_size:
        rows = pd.read_csv(sweep)
        counts = rows.status.value_counts().to_dict()
        print(f"\nsweep: {rows['item'].nunique()} items, {len(rows)} config rows {counts}")
        bad = rows[rows.status.isin(["wrong", "error"])]
        for _, row in bad.head(20).iterrows():
            print(f"  {row.status.upper()} {row['item']} {row.config} w{row.num_warps} s{row.num_stages}: "
                  f"err/bound {row.err_over_bound} {row.error if isinstance(row.error, str) else ''}")
        ok = rows[rows.status == "ok"]
        if not ok.empty:
            best = ok.loc[ok.groupby("item").ms.idxmin()]
            best = best.assign(speedup=best.cudnn_ms / best.ms)
            cols = ["item", "ms", "cudnn_ms", "speedup", "config", "num_warps", "num_stages", "n_regs"]
            with pd.option_context("display.width", 200, "display.max_colwidth", 60):
                print(best[cols].sort_values("item").round(4).to_string(index=False))
            print(f"geomean speedup vs cuDNN over {len(best)} items: "
                  f"{float(pd.Series(best.speedup).pow(1 / len(best)).prod()):.3f}")
    for table in sorted((work / "tuned").glob("*.json")) if (work / "tuned").exists() else []:
        data = json.loads(table.read_text())
        print(f"\ntuned table {table.name}: {len(data['entries'])} entries "
              f"({data.get('items_done')}/{data.get('items_total')} items measured)")
    nets = work / "nets" / "nets.csv"
    if nets.exists() and nets.stat().st_size:
        print("\nnets, training images/s at batch 128 bf16:")
        print(pd.read_csv(nets).to_string(index=False))
    steps = work / "steps.txt"
    if steps.exists():
        print("\nsteps:\n" + steps.read_text())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("work", type=Path)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    text = io.StringIO()
    with contextlib.redirect_stdout(text):
        summarize(args.work)
    if args.out:
        args.out.write_text(text.getvalue())
    sys.stdout.write(text.getvalue())
    return 0


if __name__ == "__main__":
    sys.exit(main())
