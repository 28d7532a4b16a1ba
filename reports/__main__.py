"""python -m reports DIR [--run ID] [--list] [--benchmark-json FILE]: (re)build a run's
report.html and its PNGs in the run's folder (DIR/runs/<id>/; the latest run by default)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .html import build_report
from .schema import ResultFileError, list_runs, load_summary, run_dir


class Parser(argparse.ArgumentParser):
    """argparse, with every error on one line."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def main(argv=None) -> int:
    p = Parser(prog="python -m reports", description=__doc__)
    p.add_argument("dir", type=Path, help="a results folder (the profiler's --out) or one run's folder")
    p.add_argument("--run", default=None, help="run id (or a unique prefix of one); default: the latest")
    p.add_argument("--list", action="store_true", help="list the runs in DIR, oldest first, and exit")
    p.add_argument("--benchmark-json", type=Path, help="pytest-benchmark JSON of `pytest benchmarks/`")
    args = p.parse_args(argv)
    if args.benchmark_json and not args.benchmark_json.is_file():
        p.error(f"--benchmark-json: no such file {args.benchmark_json}")
    try:
        if args.list:
            for run_id in list_runs(args.dir):
                summary = load_summary(run_dir(args.dir, run_id))
                state = ("interrupted" if summary.get("interrupted") else
                         "finished" if summary.get("finished") else "unfinished")
                print(f"{run_id}  {state}  {(summary.get('env') or {}).get('command', '')}")
            return 0
        print(build_report(args.dir, run_id=args.run, benchmark_json=args.benchmark_json))
    except (ResultFileError, OSError, json.JSONDecodeError, UnicodeDecodeError, KeyError) as exc:
        print(f"{p.prog}: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
