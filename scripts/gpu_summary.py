"""The compact summary gpu_check.sh writes last, from its work folder: environment, compile
workers, correctness tests (the JUnit XML, or when the run was cut off before writing it, the
per-test progress and failure files), the sweep (per layer and pass: best Triton config vs
cuDNN, and every config that was wrong, spilled or failed), the bench (copy bandwidth, the
memory-bound kernels as % of it, Inception fused vs separate vs cuDNN), the nets' training
images/s with the tuned table's hits and misses, step times.

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
    plan = work / "compile" / "compile-plan.json"
    planned = len(json.loads(plan.read_text())["launches"]) if plan.exists() else None
    if not compiled.empty:
        counts = compiled.status.value_counts().to_dict()
        print(f"\ncompile: {len(compiled)} of {planned} planned launches {counts}, {compiled.s.sum():.0f} "
              f"worker-seconds, slowest {compiled.s.max():.1f} s ({compiled.loc[compiled.s.idxmax(), 'item']})")
        if "worker" in compiled:
            per = compiled.groupby("worker").s.agg(["count", "sum"])
            print("  per worker (launches, seconds): "
                  + ", ".join(f"{int(w)}: {int(r['count'])}, {r['sum']:.0f}" for w, r in per.iterrows()))
        for _, row in compiled[compiled.status != "ok"].head(10).iterrows():
            print(f"  {row['item']} {row['config']}: {row['error']}")
    junit = work / "correct.xml"
    progress = work / "correct-progress.csv"
    if progress.exists() and progress.stat().st_size:
        done = pd.read_csv(progress)
        print(f"\ncorrectness tests reported as they finished: {len(done)} {done.outcome.value_counts().to_dict()}, "
              f"slowest {done.duration_s.max():.1f} s")
    failures = work / "correct-failures.txt"
    if failures.exists():
        for line in failures.read_text().splitlines():
            if line.startswith("=== FAILED "):
                print("  " + line.removeprefix("=== "))
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
    for name in ("sweep", "paths"):  # the generic layers' sweep; the paths' items
        summarize_sweep(name, work / name / "sweep.csv")
    for table in sorted((work / "tuned").glob("*.json")) if (work / "tuned").exists() else []:
        data = json.loads(table.read_text())
        print(f"\ntuned table {table.name}: {len(data['entries'])} entries, {len(data.get('dispatch', []))} path "
              f"records ({data.get('items_done')}/{data.get('items_total')} items measured)")
        for r in data.get("dispatch", []):
            print(f"  {r['site']} {r.get('layer', '')} {r['key']}: {r['path']} "
                  + ", ".join(f"{p} {ms:.4f} ms" for p, ms in r["ms"].items()))
    _summarize_rest(work)


def summarize_sweep(name: str, sweep: Path) -> None:
    """A sweep's rows: counts by status, every wrong or failed config, each item's best
    config beside cuDNN and the geomean speedup."""
    if sweep.exists() and sweep.stat().st_size:
        rows = pd.read_csv(sweep)
        counts = rows.status.value_counts().to_dict()
        print(f"\n{name}: {rows['item'].nunique()} items, {len(rows)} config rows {counts}")
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


def _summarize_nets(folder: Path) -> None:
    """The nets.csv of one nets run (and the table misses it counted)."""
    nets = folder / "nets.csv"
    if not (nets.exists() and nets.stat().st_size):
        return
    print(f"\n{folder.name}, training images/s at batch 128 bf16 (table_hits / table_misses: launches of our "
          "kernels the tuned table served / did not, over the whole run):")
    print(pd.read_csv(nets).to_string(index=False))
    misses = folder / "nets-misses.csv"
    if misses.exists() and misses.stat().st_size:
        missed = pd.read_csv(misses)
        if not missed.empty:
            print("  table misses (kernel: distinct keys, launches):")
            for (arch, backend), group in missed.groupby(["arch", "backend"]):
                kinds = group.groupby("kernel").launches.agg(["count", "sum"])
                print(f"  {arch} {backend}: " + ", ".join(f"{k} {int(r['count'])}, {int(r['sum'])}"
                                                         for k, r in kinds.iterrows()))


def _summarize_rest(work: Path) -> None:
    """The bench, the nets, the profile and the steps of a work folder."""
    bench = work / "bench" / "bench.csv"
    if bench.exists() and bench.stat().st_size:
        summarize_bench(pd.read_csv(bench))
    for folder in ("nets", "graphs"):  # the nets step's backends; --followup's graph replays
        _summarize_nets(work / folder)
    profile = work / "profile" / "profile.csv"
    if profile.exists() and profile.stat().st_size:
        summarize_profile(pd.read_csv(profile))
    steps = work / "steps.txt"
    if steps.exists():
        print("\nsteps:\n" + steps.read_text())


def summarize_profile(rows: pd.DataFrame) -> None:
    """Per profiled item, Triton beside cuDNN: kernel launches and device time per call, the
    CUDA-event time (what the sweep reports) and the host's time per call; then Triton's kernels."""
    calls = rows[rows.kernel == "*"]
    if calls.empty:
        return
    print("\nprofile (us per call; device: kernels' sum by torch.profiler, event: CUDA events as the sweep "
          "times, host: the call's Python and launches):")
    cols = ["item", "side", "launches_per_call", "device_us", "event_us", "host_us", "status", "error"]
    print(calls[[c for c in cols if c in calls]].to_string(index=False))
    kernels = rows[(rows.kernel != "*") & (rows.side == "triton")]
    for item, group in kernels.groupby("item", sort=False):
        print(f"  {item}: " + ", ".join(f"{r.kernel} x{r.launches_per_call:g} {r.device_us:.1f} us"
                                        for r in group.itertuples()))


def summarize_bench(rows: pd.DataFrame) -> None:
    copy = rows[rows.what == "copy"]
    if not copy.empty:
        print(f"\nbench: copy bandwidth {copy.tb_per_s.iloc[0]:.3f} TB/s ({copy['item'].iloc[0]}, bytes read + "
              f"written over do_bench's median)")
    memory = rows[rows.what == "memory"]
    if not memory.empty:
        print("memory-bound kernels, achieved bandwidth (item.nbytes / ms) and % of the copy's:")
        wide = memory.pivot_table(index="item", columns="variant", values=["ms", "tb_per_s", "pct_of_copy"],
                                  aggfunc="first")
        wide.columns = [f"{v}_{m}" for m, v in wide.columns]
        info = memory[memory.variant == "triton"].set_index("item")[["status", "table", "config"]]
        with pd.option_context("display.width", 220, "display.max_colwidth", 50):
            print(wide.join(info).round(4).to_string())
    inception = rows[rows.what == "inception"]
    if not inception.empty:
        print("Inception 1x1 GEMMs (ms; separate launches timed one by one and summed):")
        wide = inception.pivot_table(index="item", columns="variant", values="ms", aggfunc="first")
        for a, b in (("separate_triton", "fused_triton"), ("concat_cudnn", "fused_triton"),
                     ("separate_cudnn", "fused_triton")):
            if a in wide and b in wide:
                wide[f"{a}/{b}"] = wide[a] / wide[b]
        print(wide.round(4).to_string())
    bad = rows[rows.status != "ok"]
    for _, row in bad.iterrows():
        error = row.error if isinstance(row.error, str) else ""
        print(f"  {str(row.status).upper()} {row['item']} {row.variant}: {error}")


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
