#!/usr/bin/env bash
# Mutation score of the modules that make the published numbers (benchmarks/metrics.py,
# benchmarks/timing.py, reports/compare.py, reports/schema.py) against the fast tests that pin
# them; what is mutated and which tests run is [tool.mutmut] in pyproject.toml. Prints each
# module's score and the survivors; docs/mutation.md says why each survivor is left.
# Usage: scripts/mutation.sh   (PYTHON=... for another interpreter; MUTMUT_CHILDREN=N workers, default 1)
# Exit status 1 when fewer than 90% of the mutants tested are killed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
unset PYTHONPATH  # the tests must import the mutated copy under mutants/, never this tree
# One thread per process: mutmut forks a test process per mutant, and a fork of a process whose
# OpenMP pool is running can deadlock (a hang mutmut would count as a kill, by timeout).
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
rm -rf mutants    # a fresh run: no verdict carried over from an older tree
mkdir -p mutants
"$PY" -m mutmut run --max-children "${MUTMUT_CHILDREN:-1}" > mutants/run.log 2>&1 || { tail -c 3000 mutants/run.log; exit 2; }
"$PY" -m mutmut results --all true > mutants/results.txt
"$PY" - <<'PY'
import collections
import re
import sys

counts = collections.defaultdict(collections.Counter)
survivors = []
for line in open("mutants/results.txt"):
    m = re.match(r"\s*(\S+)__mutmut_\d+: (\S.*)$", line)
    if not m:
        continue
    name, status = m.groups()
    module = ".".join(name.split(".")[:2])  # benchmarks.metrics.x_derive -> benchmarks.metrics
    counts[module][status] += 1
    if status != "killed":
        survivors.append(line.strip())
total = collections.Counter()
for module, c in sorted(counts.items()):
    tested = sum(c.values()) - c["skipped"] - c["not checked"]
    killed = c["killed"] + c["timeout"]
    total.update(c)
    print(f"{module:24s} {killed:4d} / {tested:4d} killed ({100 * killed / max(tested, 1):5.1f}%)  {dict(c)}")
tested = sum(total.values()) - total["skipped"] - total["not checked"]
killed = total["killed"] + total["timeout"]
score = 100 * killed / max(tested, 1)
print(f"{'all':24s} {killed:4d} / {tested:4d} killed ({score:5.1f}%)")
print("survivors:" if survivors else "no survivors")
for s in survivors:
    print("   ", s)
sys.exit(0 if score >= 90 else 1)
PY
