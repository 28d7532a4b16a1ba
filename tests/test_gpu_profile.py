"""benchmarks.gpu_profile on the CPU: its rows, the ranking of items from a sweep CSV, a
failing item as a row, and the refusals. (On the CPU the profiler's CPU activity stands in
for CUDA's; the event column stays empty.)"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from benchmarks import gpu_profile
from benchmarks.sweep import Item, Rows
from kernels.residual import add_relu_forward

ROOT = Path(__file__).resolve().parents[1]
SWEEP = ROOT / "docs" / "perf-data" / "2026-11-27-h100" / "sweep.csv.gz"


def _rows(path: Path) -> list[dict]:
    with path.open() as f:
        return list(csv.DictReader(f))


def test_profile_call_rows_a_summary_and_each_launched_op(tmp_path):
    a, b = torch.randn(8, 16), torch.randn(8, 16)
    rows = Rows(tmp_path / "p.csv", gpu_profile.PROFILE_FIELDS)
    gpu_profile.profile_call("x", "torch", lambda: F.relu(a + b), rows, reps=3)
    rows.close()
    got = _rows(tmp_path / "p.csv")
    summary = got[0]
    assert summary["kernel"] == "*" and summary["status"] == "ok" and float(summary["host_us"]) > 0
    names = {r["kernel"] for r in got[1:]}
    assert {"aten::add", "aten::relu"} <= names, names
    # one add and one relu per call
    per_call = {r["kernel"]: float(r["launches_per_call"]) for r in got[1:]}
    assert per_call["aten::add"] == 1 and per_call["aten::relu"] == 1


def test_profile_call_records_a_failure_as_a_row(tmp_path):
    rows = Rows(tmp_path / "p.csv", gpu_profile.PROFILE_FIELDS)

    def broken():
        raise RuntimeError("launch failed")

    gpu_profile.profile_call("x", "triton", broken, rows, reps=2)
    rows.close()
    (row,) = _rows(tmp_path / "p.csv")
    assert row["status"] == "error" and "launch failed" in row["error"]


def test_best_configs_and_worst_items_from_the_committed_sweep():
    best = gpu_profile.best_configs(SWEEP)
    ms, cudnn_ms, spec = best["resnet50.layer4.0.conv1:forward"]
    assert ms == pytest.approx(0.128896, rel=1e-6) and cudnn_ms == pytest.approx(0.02104, rel=1e-3)
    assert spec == {"kwargs": {"BLOCK_M": 128, "BLOCK_N": 128, "BLOCK_K": 32, "GROUP_M": 8},
                    "num_warps": 4, "num_stages": 4}
    worst = gpu_profile.worst_items(best, 3)
    ratios = [best[i][0] / best[i][1] for i in worst]
    assert ratios == sorted(ratios, reverse=True)
    assert all(r >= max(b[0] / b[1] for i, b in best.items() if i not in worst) for r in ratios)


def test_run_profiles_each_item_beside_its_reference(tmp_path, monkeypatch):
    def make(device, init):
        g = torch.Generator().manual_seed(0)
        return {"x": torch.randn(2, 4, 3, 3, generator=g), "r": torch.randn(2, 4, 3, 3, generator=g)}

    item = Item("tiny.add", "add_relu", "forward", "_add_relu_fwd_kernel", make,
                lambda i: lambda: add_relu_forward(i["x"], i["r"]), lambda i: lambda: F.relu(i["x"] + i["r"]), 1)
    monkeypatch.setattr(gpu_profile, "all_items", lambda: [item])
    gpu_profile.run(tmp_path, ["tiny.add:forward"], {}, torch.device("cpu"), reps=2)
    got = _rows(tmp_path / "profile.csv")
    summaries = {(r["item"], r["side"]) for r in got if r["kernel"] == "*" and r["status"] == "ok"}
    assert summaries == {("tiny.add:forward", "triton"), ("tiny.add:forward", "cudnn")}
    with pytest.raises(SystemExit, match="unknown item ids: nope"):
        gpu_profile.run(tmp_path, ["nope"], {}, torch.device("cpu"))


def test_cli_refusals(tmp_path, monkeypatch):
    with pytest.raises(SystemExit):
        gpu_profile.main(["--out", str(tmp_path), "--worst", "3"])  # --worst without --sweep
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit, match="no CUDA device"):
        gpu_profile.main(["--out", str(tmp_path), "--items", "a"])


def test_gpu_summary_shows_the_profile_rows(tmp_path, capsys):
    """The follow-up command's summary: each item's Triton and cuDNN rows, then Triton's kernels."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("gpu_summary", ROOT / "scripts" / "gpu_summary.py")
    gpu_summary = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_summary)
    rows = Rows(tmp_path / "p.csv", gpu_profile.PROFILE_FIELDS)
    rows.add(item="r:forward", side="triton", kernel="*", launches_per_call=3, device_us=20.0, event_us=120.0,
             host_us=110.0, status="ok")
    rows.add(item="r:forward", side="triton", kernel="_bn_fwd_kernel", launches_per_call=1, device_us=10.5,
             status="ok")
    rows.add(item="r:forward", side="cudnn", kernel="*", launches_per_call=2, device_us=30.0, event_us=35.0,
             host_us=15.0, status="ok")
    rows.close()
    (tmp_path / "work" / "profile").mkdir(parents=True)
    (tmp_path / "p.csv").rename(tmp_path / "work" / "profile" / "profile.csv")
    gpu_summary.summarize(tmp_path / "work")
    out = capsys.readouterr().out
    assert "profile (us per call" in out and "r:forward: _bn_fwd_kernel x1 10.5 us" in out
    assert "120.0" in out and "110.0" in out
