"""`scripts/gpu_check.sh --plan`: the whole GPU check, counted on the CPU, fits its budget,
and the script's step limits are the plan's."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import gpu_plan

ROOT = Path(__file__).resolve().parents[1]
STEPS = ("env", "compile", "correct", "sweep", "paths", "bench", "nets", "pack")
FOLLOWUP_STEPS = ("env", "graphs", "profile", "tcompile", "pack")


@pytest.fixture(scope="module")
def plan_output() -> str:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # python3 = this venv's
    done = subprocess.run(["bash", "scripts/gpu_check.sh", "--plan"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def followup_output() -> str:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    done = subprocess.run(["bash", "scripts/gpu_check.sh", "--plan", "--followup"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def _rows(text: str, steps=STEPS) -> dict[str, list[str]]:
    rows = [line.split() for line in text.splitlines()]
    return {row[0]: row for row in rows if row and row[0] in steps}


def test_plan_fits_the_budget_with_total_last(plan_output):
    rows = _rows(plan_output)
    assert list(rows) == list(STEPS)
    total_line = plan_output.strip().splitlines()[-1]
    total = float(re.match(r"total: (\d+) s estimated \(with \d+ s between steps\), fits", total_line).group(1))
    assert total <= gpu_plan.BUDGET_S
    steps = sum(float(r[3]) for r in rows.values())
    assert abs(total - gpu_plan.SCRIPT_S - steps) <= len(rows)  # rounding of each step
    # real counts, not placeholders: the compile plan's launches, the tests
    assert int(rows["compile"][1]) > 100 and int(rows["correct"][2]) > 100
    assert "measured:" in plan_output and "docs/perf-data/2026-11-27-h100" in plan_output


def test_followup_plan_fits_its_budget_and_the_script_has_its_limits(followup_output):
    rows = _rows(followup_output, FOLLOWUP_STEPS)
    assert list(rows) == list(FOLLOWUP_STEPS)
    total = float(re.search(r"total: (\d+) s estimated", followup_output).group(1))
    assert total <= gpu_plan.FOLLOWUP_BUDGET_S and int(rows["tcompile"][2]) == 3 and int(rows["profile"][2]) >= 6
    assert int(rows["graphs"][2]) == 6
    script = (ROOT / "scripts" / "gpu_check.sh").read_text()
    limits = dict(re.findall(r"\bFLIMIT_(\w+)=(\d+)", script))
    assert {step: int(r[4]) for step, r in rows.items()} == {k: int(v) for k, v in limits.items()}
    # the optional steps run in what is left: the others' limits fit the budget
    optional = re.search(r'^OPTIONAL_STEPS="([^"]*)"', script, re.M).group(1).split()
    assert optional == ["tcompile"] and all("if time is left" in " ".join(rows[o]) for o in optional)
    required = sum(int(v) for k, v in limits.items() if k not in optional)
    assert required + gpu_plan.SCRIPT_S <= gpu_plan.FOLLOWUP_BUDGET_S
    assert int(re.search(r"^FBUDGET=(\d+)", script, re.M).group(1)) == gpu_plan.FOLLOWUP_BUDGET_S
    # the first command's budget, a start and the follow-up fit the 15 device minutes
    assert gpu_plan.BUDGET_S + gpu_plan.FOLLOWUP_BUDGET_S + 120 <= 900


def test_correct_step_count_is_the_scripts_collection():
    """gpu_plan.CORRECT_TESTS is what the script's pytest command collects."""
    script = (ROOT / "scripts" / "gpu_check.sh").read_text()
    command = re.search(r"step correct \\\n(.*?)--junitxml", script, re.S).group(1)
    files = re.findall(r"tests/test_\w+\.py", command)
    expr = re.sub(r"\\\n\s*", " ", re.search(r'-k "([^"]+)"', command).group(1))  # bash's line continuations
    done = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:randomly", *files,
                           "-k", expr], cwd=ROOT, capture_output=True, text=True, timeout=300)
    count = int(re.search(r"(\d+)/\d+ tests collected", done.stdout).group(1))
    assert count == gpu_plan.CORRECT_TESTS, done.stdout[-2000:]


def test_script_limits_are_the_plans(plan_output):
    script = (ROOT / "scripts" / "gpu_check.sh").read_text()
    limits = dict(re.findall(r"\bLIMIT_(\w+)=(\d+)", script))
    assert {step: int(r[4]) for step, r in _rows(plan_output).items()} == {k: int(v) for k, v in limits.items()}
    assert sum(int(v) for v in limits.values()) + gpu_plan.SCRIPT_S <= gpu_plan.BUDGET_S
    assert int(re.search(r"^BUDGET=(\d+)", script, re.M).group(1)) == gpu_plan.BUDGET_S
    graces = {k: int(v) for k, v in re.findall(r"GRACE_(\w+)=(\d+)", script)}
    assert graces == gpu_plan.GRACE_S
    assert gpu_plan.BUDGET_S + max(graces.values()) <= gpu_plan.COMMAND_LIMIT_S
    # the returned files: summary, steps, the table, the failures, the archive (at most 8)
    runner = (ROOT / "scripts" / "gpu_steps.sh").read_text()
    assert "correct-failures.txt\" \"$OUT_DIR/\"" in runner and "--failures-file" in script
    assert ". scripts/gpu_steps.sh" in script


def test_compile_schedule_is_claim_by_claim():
    """Workers claim the next launch when free: one long compile overlaps the short ones."""
    assert gpu_plan.schedule_s([14.0, 1.0, 1.0, 1.0, 1.0], 2) == 14.0
    assert gpu_plan.schedule_s([1.0] * 6, 3) == 2.0
    assert gpu_plan.schedule_s([], 4) == 0.0


def test_nets_estimate_holds_the_measured_first_steps():
    first = gpu_plan.first_steps()
    assert len(first) == 9 and first[("googlenet", "compile")] == pytest.approx(92.82)
    assert sum(first.values()) < gpu_plan.NETS_S


_DUMMY_TESTS = '''
import time
import pytest

def test_wrong():
    assert 1 + 1 == 3, "arithmetic"

@pytest.fixture
def broken():
    raise RuntimeError("setup broke")

def test_broken(broken):
    pass

def test_fine():
    pass

def test_slow():
    time.sleep(60)
'''


def test_failures_are_on_disk_when_the_run_is_interrupted(tmp_path):
    """The correctness step's plugin writes each failure and each finished test as it is
    reported: a run stopped by SIGINT at its limit (as gpu_check.sh's `timeout -s INT`)
    still says which tests failed, with the whole failure text."""
    (tmp_path / "test_dummy.py").write_text(_DUMMY_TESTS)
    failures, progress = tmp_path / "failures.txt", tmp_path / "progress.csv"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run(["timeout", "-s", "INT", "-k", "20", "5", sys.executable, "-m", "pytest", "-q",
                           "-p", "benchmarks.gpu_hypothesis", "-p", "no:cacheprovider", "--rootdir", str(tmp_path),
                           "--failures-file", str(failures), "--progress-file", str(progress),
                           str(tmp_path / "test_dummy.py")], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 124, done.stdout + done.stderr  # interrupted at the limit, not killed
    text = failures.read_text()
    assert "=== FAILED test_dummy.py::test_wrong (call," in text and "AssertionError: arithmetic" in text
    assert "=== FAILED test_dummy.py::test_broken (setup," in text and "RuntimeError: setup broke" in text
    rows = progress.read_text().splitlines()
    assert rows[0] == "nodeid,outcome,duration_s"
    outcomes = {row.split(",")[0]: row.split(",")[1] for row in rows[1:]}
    assert outcomes == {"test_dummy.py::test_wrong": "failed", "test_dummy.py::test_broken": "error in setup",
                        "test_dummy.py::test_fine": "passed"}


_STUCK_TESTS = '''
import signal
import time

def test_wrong():
    assert 1 + 1 == 3, "arithmetic"

def test_stuck():
    # a long call that no signal interrupts (as a Triton compile): SIGINT waits until it returns
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    time.sleep(25)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})

def test_fine():
    pass
'''


def test_xdist_run_stopped_at_its_limit_still_reports(tmp_path):
    """gpu_check.sh's correctness step under its limit and grace: SIGINT reaches the xdist
    controller and its workers (timeout signals the process group); a worker caught in a
    call that signals cannot interrupt holds the controller's teardown for xdist's 10 s, and
    the grace lets it end with the summary and the JUnit XML (with 10 s it was killed first)."""
    pytest.importorskip("xdist")
    (tmp_path / "test_stuck.py").write_text(_STUCK_TESTS)
    grace = re.search(r"^GRACE_correct=(\d+)", (ROOT / "scripts" / "gpu_check.sh").read_text(), re.M).group(1)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run(["timeout", "-s", "INT", "-k", grace, "12", sys.executable, "-m", "pytest", "-n", "2", "-q",
                           "-p", "benchmarks.gpu_hypothesis", "-p", "no:cacheprovider", "--rootdir", str(tmp_path),
                           "--junitxml", str(tmp_path / "junit.xml"), "--failures-file", str(tmp_path / "f.txt"),
                           str(tmp_path / "test_stuck.py")], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 124, done.stdout + done.stderr  # interrupted, not killed
    assert "FAILED test_stuck.py::test_wrong" in done.stdout and (tmp_path / "junit.xml").exists()
    assert "=== FAILED test_stuck.py::test_wrong (call," in (tmp_path / "f.txt").read_text()


@pytest.mark.parametrize("steps, failed", [
    ("step tcompile sleep 5", False),             # optional, cut at its limit: logged, not a failure
    ("step tcompile false", True),       # optional but failed on its own: a failure
    ("step nets sleep 5", True),                # required and cut at its limit: a failure
    ("BUDGET=1; step tcompile true", False),      # optional, no time left: skipped, not a failure
    ("BUDGET=1; step nets true", True),         # required, no time left: a failure
    ("step nets true; step tcompile sleep 5", False),
])
def test_step_runner_status(tmp_path, steps, failed):
    """scripts/gpu_steps.sh, the step runner gpu_check.sh sources: the exit status it leaves
    fails the command for a required step cut or skipped, and for any step that failed, but
    not for an optional step cut at its limit by what was left of the budget."""
    script = (f'WORK={tmp_path} OUT_DIR={tmp_path}/out LAST_TABLE_DIR={tmp_path}/last BUDGET=30 '
              f'LIMIT_pack=1 LIMIT_nets=1 LIMIT_tcompile=1 OPTIONAL_STEPS="tcompile"\n'
              f'mkdir -p $OUT_DIR\n. scripts/gpu_steps.sh\n{steps}\nexit $status\n')
    done = subprocess.run(["bash", "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60)
    log = (tmp_path / "steps.txt").read_text()
    assert done.returncode == int(failed), (done.stdout, done.stderr, log)
    if "sleep" in steps.split(";")[-1]:
        assert "rc=124" in log, log
