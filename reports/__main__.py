"""python -m reports DIR [--benchmark-json FILE]: (re)build DIR/report.html and its PNGs."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .html import build_report


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m reports", description=__doc__)
    p.add_argument("dir", type=Path, help="a folder with results.csv (and summary.json)")
    p.add_argument("--benchmark-json", type=Path, help="pytest-benchmark JSON of `pytest benchmarks/`")
    args = p.parse_args(argv)
    if not (args.dir / "results.csv").exists():
        p.error(f"{args.dir} has no results.csv (run `python -m benchmarks.profile --out {args.dir}` first)")
    if args.benchmark_json and not args.benchmark_json.exists():
        p.error(f"--benchmark-json: no such file {args.benchmark_json}")
    print(build_report(args.dir, benchmark_json=args.benchmark_json))
    return 0


if __name__ == "__main__":
    sys.exit(main())
