"""Scale-out on the CPU with 2 gloo ranks and tiny inputs: DDP gradients against one process
on the whole batch, the runner's rows (rank 0 only, efficiency, the all-reduce fields), the
towers layout, and failures that end the job with the rank's error instead of hanging."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

import nets
from benchmarks import distributed, profile
from benchmarks.distributed import CommTimer, Config, run_spawned, wrap_ddp
from benchmarks.distributed_launch import LaunchError, launch
from nets import recipe
from reports import scaling

from .helpers import assert_close

PER_RANK = 2


def _net():
    """GoogLeNet without BatchNorm (DDP's per-rank batch statistics would differ from one
    process's) and without dropout (random masks), float64, same weights on every rank."""
    torch.manual_seed(0)
    return nets.build("googlenet", aux_logits=False, dropout=0.0).double()


def _batch(world_size):
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(PER_RANK * world_size, 3, 32, 32, dtype=torch.float64, generator=gen)
    return x, torch.randint(0, 1000, (PER_RANK * world_size,), generator=gen)


def _ddp_worker(rank, world_size, folder):
    x, y = _batch(world_size)
    timer = CommTimer(torch.device("cpu"))
    ddp = wrap_ddp(_net(), torch.device("cpu"), bucket_mb=4.0, timer=timer)
    shard = slice(rank * PER_RANK, (rank + 1) * PER_RANK)
    for _ in range(2):  # DDP reduces everything in one bucket in its first step, then rebuilds them
        ddp.zero_grad(set_to_none=True)
        timer.start_step()
        recipe.loss(ddp(x[shard]), y[shard]).backward()
    comm = timer.summary(skip=1)
    assert comm["buckets"] >= 3 and comm["allreduce_ms"] > 0, comm  # 7M float64 parameters in 4 MB buckets
    assert 0 <= comm["allreduce_hidden_pct"] <= 100

    ref = _net()
    recipe.loss(ref(x), y).backward()  # the mean over the whole batch = the mean of the ranks' means
    for (name, p), (_, q) in zip(ddp.module.named_parameters(), ref.named_parameters()):
        # weight grads reduce over the batch and pixels (at most 2*PER_RANK * 16*16 here)
        assert_close(p.grad, q.grad, reduction=2 * PER_RANK * 16 * 16, name=f"rank {rank} {name}.grad")
    (Path(folder) / f"rank{rank}.ok").write_text("")


def test_ddp_gradients_equal_single_process_on_the_concatenated_batch(tmp_path):
    launch(_ddp_worker, 2, (str(tmp_path),), timeout_s=180, pg_timeout_s=60)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rank0.ok", "rank1.ok"]


def _cfg(tmp_path, **kw):
    base = dict(arch="resnet18", backends=("torch",), image_size=32, batch_size=2, warmup=1, steps=2,
                out=str(tmp_path), run_id="test-run", pg_timeout_s=30.0)
    return Config(**{**base, **kw})


def test_runner_rows_written_by_rank_0_only(tmp_path):
    cfg = _cfg(tmp_path)
    # A world-size-1 row of the same configuration, as an earlier world size of the run leaves it.
    base = dict(run_id="test-run", arch="resnet18", backend="torch", parallel="ddp", world_size=1, nodes=1,
                dtype="fp32", batch_per_device=2, image_size=32, global_batch=2, bucket_mb=25.0, steps=2,
                images_per_s=40.0, device="cpu", comm_backend="gloo", status="ok")
    scaling.append_rows(tmp_path, [base])
    errors = run_spawned(cfg, [2], timeout_s=180)
    assert errors == []
    rows = scaling.load_scaling(tmp_path)
    assert list(rows.world_size) == [1, 2]  # one new row: a second writer would add another
    assert sorted(p.name for p in tmp_path.iterdir()) == [scaling.SCALING_CSV]
    two = rows.iloc[1]
    assert two.status == "ok" and two.comm_backend == "gloo" and two.nodes == 1 and two.global_batch == 4
    assert two.images_per_s_per_device == pytest.approx(two.images_per_s / 2, rel=1e-5)
    assert two.efficiency == pytest.approx(two.images_per_s / (2 * 40.0), rel=1e-4)
    assert two.baseline_run_id == "test-run"
    assert two.allreduce_ms > 0 and two.buckets >= 1 and 0 <= two.allreduce_hidden_pct <= 100
    assert two.allreduce_exposed_ms <= two.allreduce_ms + 1e-9
    assert two.comm_share_pct == pytest.approx(100 * two.allreduce_exposed_ms / two.step_ms, rel=1e-4)
    assert pd.isna(two.peak_bytes)  # peak memory is CUDA's counter; none on the CPU


def test_an_unreadable_earlier_run_does_not_cost_the_measured_row(tmp_path):
    """Baselines are looked for in every run beside this one; a scaling.csv there that does
    not load (another layout, a broken file) leaves efficiency to this run's rows, and the
    world size's measured row is written all the same."""
    (tmp_path / "runs" / "0-old").mkdir(parents=True)
    (tmp_path / "runs" / "0-old" / scaling.SCALING_CSV).write_text("run_id,arch\nx,resnet18\n")
    folder = tmp_path / "runs" / "1-new"
    base = dict(run_id="test-run", arch="resnet18", backend="torch", parallel="ddp", world_size=1, nodes=1,
                dtype="fp32", batch_per_device=2, image_size=32, global_batch=2, bucket_mb=25.0, steps=2,
                images_per_s=40.0, device="cpu", comm_backend="gloo", status="ok")
    scaling.append_rows(folder, [base])
    assert run_spawned(_cfg(folder), [2], timeout_s=180) == []
    rows = scaling.load_scaling(folder)
    assert list(zip(rows.world_size, rows.status)) == [(1, "ok"), (2, "ok")]
    assert rows.efficiency[1] == pytest.approx(rows.images_per_s[1] / (2 * 40.0), rel=1e-4)


def _run_folder(out: Path) -> Path:
    (folder,) = (out / "runs").iterdir()  # one run, one folder
    return folder


def test_profile_cli_towers_layout(tmp_path):
    code = profile.main(["--arch", "alexnet", "--parallel", "towers", "--image-size", "63", "--steps", "1",
                         "--out", str(tmp_path)])
    assert code == 0
    folder = _run_folder(tmp_path)
    rows = scaling.load_scaling(folder)
    assert len(rows) == 1 and rows.parallel[0] == "towers" and rows.status[0] == "ok"
    assert rows.world_size[0] == 2 and rows.global_batch[0] == 2 and rows.images_per_s[0] > 0
    assert pd.isna(rows.allreduce_ms[0])  # no gradient all-reduce: each tower owns its parameters
    assert "Scale-out" in (folder / "report.html").read_text()


def test_under_torchrun_rank_0_writes_one_run(tmp_path):
    torchrun = Path(sys.executable).with_name("torchrun")
    if not torchrun.exists():
        pytest.skip(f"no torchrun beside {sys.executable}")
    cmd = [str(torchrun), "--standalone", "--nproc-per-node", "2", "-m", "benchmarks.profile", "--arch", "resnet18",
           "--parallel", "ddp", "--image-size", "32", "--steps", "1", "--out", str(tmp_path)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=180, check=False,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert done.returncode == 0, done.stderr[-3000:]
    rows = scaling.load_scaling(_run_folder(tmp_path))
    assert list(rows.world_size) == [2] and rows.status[0] == "ok" and rows.nodes[0] == 1


@pytest.mark.parametrize("argv, words", [
    (["--arch", "resnet50", "--parallel", "towers"], "--arch must be alexnet"),
    (["--parallel", "towers", "--nproc", "1,2"], "runs on 2 devices"),
    (["--nproc", "2"], "--nproc needs --parallel"),
    (["--parallel", "ddp", "--bucket-mb", "0"], "--bucket-mb must be positive"),
    (["--parallel", "ddp", "--nproc", "0,2"], "--nproc must be comma-separated positive ints"),
    (["--parallel", "ddp", "--inject-failure", "1"], "RANK:STEP"),
])
def test_profile_cli_refuses_bad_scale_out_arguments(argv, words, tmp_path, capsys):
    with pytest.raises(SystemExit):
        profile.main([*argv, "--out", str(tmp_path)])
    assert words in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("kind", ["raise", "hang"])
def test_a_failing_rank_ends_the_job_with_its_error(kind, tmp_path):
    """A rank that raises stops the others at once; one that hangs makes the others'
    collective time out (3 s here), and the launcher stops it: never a hang."""
    cfg = _cfg(tmp_path, inject_failure=(1, 1, kind), pg_timeout_s=3.0)
    start = time.monotonic()
    errors = run_spawned(cfg, [2], timeout_s=120)
    assert time.monotonic() - start < 60
    assert len(errors) == 1
    rows = scaling.load_scaling(tmp_path)
    assert (rows.status == "failed").all() and (rows.world_size == 2).all()
    if kind == "raise":
        assert "rank 1 failed: RuntimeError: injected failure on rank 1 at step 1" in errors[0]
        assert rows.error.str.startswith("rank 1: RuntimeError: injected failure").any()
    else:  # rank 1 is silent; rank 0's collective timed out and says so with its rank
        assert "rank 0 failed" in errors[0]
        assert rows.error.str.startswith("rank 0: ").any()


def test_a_failure_is_recorded_when_an_earlier_arch_of_the_run_succeeded(tmp_path):
    """`--arch a,b` measures each arch into the same run: b's failed world size is its own
    row, not taken for done because a's row at that world size is ok."""
    other = dict(run_id="test-run", arch="resnet34", backend="torch", parallel="ddp", world_size=2, nodes=1,
                 dtype="fp32", batch_per_device=2, image_size=32, global_batch=4, bucket_mb=25.0, steps=2,
                 images_per_s=40.0, device="cpu", comm_backend="gloo", status="ok")
    scaling.append_rows(tmp_path, [other])
    errors = run_spawned(_cfg(tmp_path, inject_failure=(1, 0, "raise")), [2], timeout_s=120)
    assert len(errors) == 1
    rows = scaling.load_scaling(tmp_path)
    mine = rows[rows.arch == "resnet18"]
    assert len(mine) >= 1 and (mine.status == "failed").all() and (mine.backend == "torch").all()
    assert mine.error.str.startswith("rank 1: RuntimeError: injected failure").any()


def test_the_backends_a_failed_world_size_never_reached_get_rows(tmp_path):
    """A world size that fails on its first backend ends before the next one runs: that
    backend's row says it was not run and why, instead of leaving no trace."""
    cfg = _cfg(tmp_path, backends=("torch", "triton"), inject_failure=(1, 0, "raise"))
    assert len(run_spawned(cfg, [2], timeout_s=120)) == 1
    rows = scaling.load_scaling(tmp_path)
    failed, skipped = rows[rows.backend == "torch"], rows[rows.backend == "triton"]
    assert len(failed) >= 1 and (failed.status == "failed").all()
    assert list(skipped.status) == ["skipped"] and (skipped.world_size == 2).all()
    assert skipped.error.iloc[0] == "not run: world size 2 failed on backend torch before it"


def _children(pid: int) -> list[str]:
    """The command lines of `pid`'s live child processes (Linux /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(stat.with_name("cmdline").read_bytes().decode(errors="replace"))
        except (OSError, ValueError, IndexError):
            continue
    return found


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds the ranks through /proc")
def test_an_interrupted_scale_out_run_keeps_its_rows_and_says_so(tmp_path):
    """SIGTERM (or Ctrl-C) to the profiler while world size 2 runs (its rank 1 hangs, so it
    is still running): world size 1's row stays, the cut one has an `interrupted` row, the
    summary says interrupted and not finished, the report is built, no rank outlives it."""
    cmd = [sys.executable, "-m", "benchmarks.profile", "--arch", "resnet18", "--parallel", "ddp", "--nproc", "1,2",
           "--image-size", "32", "--steps", "1", "--inject-failure", "1:0:hang", "--pg-timeout-s", "60",
           "--out", str(tmp_path)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    try:
        deadline = time.monotonic() + 120
        # world size 1's row written, then world size 2's two ranks started
        while not (list(tmp_path.glob(f"runs/*/{scaling.SCALING_CSV}"))
                   and sum("spawn_main" in c for c in _children(proc.pid)) == 2):
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1][-3000:]
            time.sleep(0.1)
        time.sleep(1.0)  # the launcher past starting them, waiting on the ranks (rank 1 hangs for 60 s)
        proc.terminate()
        _, err = proc.communicate(timeout=30)  # the ranks share its pipes: returns once they are gone too
    finally:
        proc.kill()
    assert proc.returncode == 143, err[-3000:]
    folder = _run_folder(tmp_path)
    rows = scaling.load_scaling(folder)
    assert list(zip(rows.world_size, rows.status)) == [(1, "ok"), (2, "interrupted")]
    assert rows.error[1] == "stopped by SIGTERM before it finished"
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["interrupted"] and summary["stopped_by"] == "SIGTERM" and not summary["finished"]
    assert summary["parallel"]["errors"] == []
    assert (folder / "report.html").exists()


def test_a_world_size_stopped_at_its_deadline_is_a_row(tmp_path):
    """Healthy ranks too slow for --job-timeout-s record no error of their own: the world
    size still gets its failed row, with the launcher's message."""
    errors = run_spawned(_cfg(tmp_path, steps=10_000), [1], timeout_s=1)
    assert len(errors) == 1 and "timeout" in errors[0]
    rows = scaling.load_scaling(tmp_path)
    assert list(zip(rows.world_size, rows.status)) == [(1, "failed")]
    assert "stopped after the 1 s timeout" in rows.error[0]


def test_launch_stops_a_job_past_its_deadline(tmp_path):
    with pytest.raises(LaunchError, match="stopped after the 2 s timeout") as info:
        launch(_sleeper, 1, (), timeout_s=2, pg_timeout_s=30)
    assert info.value.timed_out


def _sleeper(rank, world_size):
    time.sleep(60)


@pytest.mark.parametrize("kw, words", [
    ({"parallel": "pipeline"}, "parallel must be one of"),
    ({"backends": ("cudnn",)}, "backends must be"),
    ({"arch": "resnet50", "parallel": "towers"}, "arch must be 'alexnet'"),
    ({"bucket_mb": 0.0}, "bucket_mb must be positive"),
    ({"steps": 0}, "steps must be a positive int"),
])
def test_bad_config(kw, words, tmp_path):
    with pytest.raises(ValueError, match=words):
        _cfg(tmp_path, **kw)


def test_union_of_bucket_intervals():
    assert distributed._union_ms([(0.0, 2.0), (1.0, 3.0), (5.0, 6.0), (5.5, 5.7)]) == 4.0


def test_run_from_env_outside_torchrun_names_the_missing_variable(monkeypatch):
    from benchmarks.distributed_launch import run_from_env

    for name in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ValueError, match="environment variable RANK is unset"):
        run_from_env(_sleeper)
    with pytest.raises(ValueError, match="world_size must be a positive int"):
        launch(_sleeper, 0)
