"""reports/scaling.py from hand-written rows: the schema, efficiency against the right
world-size-1 row (this run's first, else the latest earlier run's), the chart, the table and
the towers-vs-DDP comparison."""

from __future__ import annotations

import pandas as pd
import pytest

from reports import scaling
from reports.html import build_report
from reports.schema import RUNS, ResultWriter, write_summary


def _row(run_id, world_size, images_per_s, **kw):
    row = dict(run_id=run_id, arch="alexnet", backend="torch", parallel="ddp", world_size=world_size, nodes=1,
               dtype="bf16", batch_per_device=128, image_size=224, global_batch=128 * world_size, bucket_mb=25.0,
               steps=20,
               step_ms=128 * world_size / images_per_s * 1e3, images_per_s=images_per_s,
               images_per_s_per_device=images_per_s / world_size, allreduce_ms=4.0, allreduce_hidden_pct=75.0,
               allreduce_exposed_ms=1.0, comm_share_pct=5.0, buckets=9, peak_bytes=3 * 2**30, device="GPU X",
               comm_backend="nccl", status="ok")
    row.update(kw)
    return row


def test_baseline_prefers_this_run_then_the_latest_like_row(tmp_path):
    runs = tmp_path / RUNS
    scaling.append_rows(runs / "a", [_row("a", 1, 1000.0), _row("a", 1, 500.0, dtype="fp32")])
    scaling.append_rows(runs / "b", [_row("b", 1, 1100.0)])
    frame = scaling.load_scaling_runs(runs / "c")  # c has no rows yet: the latest like row is b's
    base = scaling.baseline(frame, _row("c", 8, 7000.0))
    assert base.run_id == "b" and base.images_per_s == 1100.0
    assert scaling.baseline(frame, _row("a", 2, 1900.0)).images_per_s == 1000.0  # a's own, not b's
    assert scaling.baseline(frame, _row("c", 2, 900.0, dtype="fp32")).images_per_s == 500.0
    assert scaling.baseline(frame, _row("c", 2, 900.0, device="GPU Y")) is None  # nothing like it
    # a smaller image is another workload: not b's 224-pixel row (a 3x efficiency otherwise)
    assert scaling.baseline(frame, _row("c", 2, 6000.0, image_size=128)) is None
    scaling.append_rows(runs / "a", [_row("a", 1, 3000.0, image_size=128)])
    frame = scaling.load_scaling_runs(runs / "c")
    assert scaling.baseline(frame, _row("c", 2, 6000.0, image_size=128)).images_per_s == 3000.0
    assert scaling.baseline(frame, _row("c", 8, 7000.0)).images_per_s == 1100.0
    assert scaling.efficiency(7000.0, 8, 1100.0) == pytest.approx(7000 / 8800)


def test_a_scaling_file_without_image_sizes_loads_and_is_no_baseline(tmp_path):
    """scaling.csv written before rows recorded the image size: it still loads (a later
    run's baseline search reads every run's file), and its rows are like nothing."""
    old = tmp_path / RUNS / "old"
    scaling.append_rows(old, [_row("old", 1, 1000.0)])
    path = old / scaling.SCALING_CSV
    frame = pd.read_csv(path, keep_default_na=False).drop(columns="image_size")
    frame.to_csv(path, index=False)
    loaded = scaling.load_scaling_runs(tmp_path / RUNS / "new")
    assert list(loaded.columns) == scaling.COLUMNS and loaded.image_size.isna().all()
    assert loaded.images_per_s.tolist() == [1000.0]
    assert scaling.baseline(loaded, _row("new", 2, 1900.0)) is None


def test_append_refuses_unknown_columns_and_layouts(tmp_path):
    with pytest.raises(ValueError, match="unknown scaling columns"):
        scaling.append_rows(tmp_path, [_row("a", 1, 1.0, speed=3)])
    with pytest.raises(ValueError, match="parallel must be one of"):
        scaling.append_rows(tmp_path, [_row("a", 1, 1.0, parallel="pipeline")])


def test_report_section_chart_table_and_towers_vs_ddp(tmp_path):
    folder = tmp_path / RUNS / "r1"
    rows = [_row("r1", 1, 1000.0, efficiency=1.0), _row("r1", 2, 1900.0, efficiency=0.95),
            _row("r1", 2, 800.0, parallel="towers", global_batch=128, bucket_mb=None, allreduce_ms=None),
            {**_row("r1", 4, 1.0), "status": "failed", "error": "rank 3: RuntimeError: NCCL timeout",
             "step_ms": None, "images_per_s": None, "images_per_s_per_device": None}]
    scaling.append_rows(folder, rows)
    vs = scaling.towers_vs_ddp(scaling.load_scaling(folder))
    assert len(vs) == 1 and vs.towers_over_ddp[0] == pytest.approx(800 / 1900)
    # like with like: a DDP row at another image size is no match, and one from the towers' own
    # run is preferred to a later run's
    other = tmp_path / "elsewhere"
    scaling.append_rows(other, [_row("r2", 2, 5000.0, image_size=128), _row("r2", 2, 2500.0)])
    both = pd.concat([scaling.load_scaling(folder), scaling.load_scaling(other)], ignore_index=True)
    assert scaling.towers_vs_ddp(both).ddp_images_per_s.tolist() == [1900.0]
    alone = scaling.load_scaling(other).assign(run_id="r1")
    towers = scaling.load_scaling(folder)
    towers = towers[towers.parallel == "towers"]
    assert scaling.towers_vs_ddp(pd.concat([towers, alone], ignore_index=True)).ddp_images_per_s.tolist() == [2500.0]
    ResultWriter(folder).close()  # the run's (empty) profiler rows, as a scale-out run leaves them
    write_summary(folder, {"run_id": "r1"})
    page = build_report(tmp_path).read_text()
    assert "Scale-out" in page and "scaling.png" in page and (folder / "scaling.png").exists()
    assert "95.0%" in page and "75.0%" in page  # efficiency and the hidden share of the all-reduce
    assert "rank 3: RuntimeError: NCCL timeout" in page
    assert "two towers vs data parallel" in page
