"""The compact table gpu_check.sh prints last: test counts, kernel benchmarks (torch vs
triton median ms, speedup, max relative error) and the profile's images/s per backend."""

from __future__ import annotations

import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pandas as pd


def main(out: Path) -> None:
    junit = out / "gpu-tests.xml"
    if junit.exists():
        suite = ET.parse(junit).getroot()
        suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
        print(f"gpu tests: {suite.get('tests')} run, {suite.get('failures')} failed, "
              f"{suite.get('errors')} errors, {suite.get('skipped')} skipped")
    bench = out / "benchmarks.json"
    if bench.exists():
        rows = [dict(b["extra_info"], group=b["group"]) for b in json.loads(bench.read_text())["benchmarks"]]
        frame = pd.DataFrame(rows)
        if not frame.empty:
            table = frame.pivot_table(index="group", columns="provider", values="median_ms", aggfunc="first")
            if "triton" in table and "torch" in table:
                table["speedup"] = table["torch"] / table["triton"]
            err = frame[frame.provider == "triton"].set_index("group").max_rel_error
            table["triton max rel err"] = err
            pct = frame[frame.provider == "triton"].set_index("group").pct_peak
            table["triton % peak"] = pct
            print("\nkernel benchmarks (median ms, do_bench):")
            print(table.round(4).to_string())
    for name in ("profile",):
        csv = out / name / "results.csv"
        if csv.exists():
            frame = pd.read_csv(csv)
            net = frame[(frame.layer == "(network)")]
            print(f"\n{name}: whole network")
            print(net[["arch", "backend", "pass", "ms", "images_per_s", "peak_bytes", "status"]].to_string(index=False))
    steps = out / "steps.txt"
    if steps.exists():
        print("\nsteps:\n" + steps.read_text())


if __name__ == "__main__":
    main(Path(sys.argv[1]))
