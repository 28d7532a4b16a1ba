"""Training throughput across devices on torch.distributed: data parallel (DDP) at several
world sizes, and AlexNet's two towers (nets/towers.py) on two devices.

Per arch, backend (torch = cuDNN eager, compile = torch.compile of the DDP module, triton =
our kernels) and world size, rank 0 appends one row to DIR/scaling.csv (reports/scaling.py):
images/s in total and per device, step ms (median, p20, p80), scaling efficiency against
world size 1, the gradient all-reduce per step and how much of it backward hid, peak memory.

How the all-reduce is measured: a DDP communication hook (`CommTimer`) wraps the default
all-reduce hook and timestamps each bucket's launch (its gradients are ready) and its
completion: CUDA events on the GPU (the launch on the compute stream, the completion in the
future's callback, on a stream synchronized with the collective), time.perf_counter on the
CPU (gloo completes the future in its own thread). Backward's end is the launch of the
last bucket (the moment its last gradient was ready). Per step: all-reduce ms = the union of
the buckets' intervals, hidden = the part before backward's end, exposed = the rest.

Launching: `run_spawned` starts each world size on this node (benchmarks/distributed_launch);
`run_torchrun` is one rank of a torchrun job (ranks from the environment). A rank's failure
is recorded with its rank (by rank 0, or by the spawning parent when the ranks were stopped)
and the job ends within its timeouts instead of hanging.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
from torch.nn.parallel import DistributedDataParallel

import nets
from nets import data, recipe
from nets.layers import convert
from nets.towers import WORLD_SIZE as TOWERS_WORLD_SIZE
from nets.towers import build_tower
from reports import scaling

from .distributed_launch import LaunchError, RankFailure, comm_backend, device_for, failures, launch, run_from_env

BACKENDS = ("torch", "compile", "triton")
PARALLEL = ("ddp", "towers")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16, "fp64": torch.float64}


@dataclass(frozen=True)
class Config:
    """What one scale-out measurement runs: the same on every rank."""

    arch: str
    backends: tuple[str, ...]
    parallel: str = "ddp"
    batch_size: int = 2             # per device (DDP); the towers' global batch
    dtype: str = "fp32"
    image_size: int = 224
    warmup: int = 2
    steps: int = 10
    bucket_mb: float = 25.0         # DDP's bucket_cap_mb
    out: str | None = None          # the run's folder: set on the writer only (rank 0 / launcher)
    run_id: str = ""
    pg_timeout_s: float = 120.0     # a collective whose peer died fails after this
    inject_failure: tuple | None = None  # (rank, step, "raise" | "hang"): tests the failure path

    def __post_init__(self):
        if self.parallel not in PARALLEL:
            raise ValueError(f"parallel must be one of {PARALLEL}, got {self.parallel!r}")
        bad = [b for b in self.backends if b not in BACKENDS]
        if bad or not self.backends:
            raise ValueError(f"backends must be a non-empty subset of {BACKENDS}, got {self.backends!r}")
        if self.arch not in nets.ARCHS:
            raise ValueError(f"arch must be one of {nets.ARCHS}, got {self.arch!r}")
        if self.parallel == "towers" and self.arch != "alexnet":
            raise ValueError(f"parallel 'towers' is AlexNet's split: arch must be 'alexnet', got {self.arch!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {tuple(DTYPES)}, got {self.dtype!r}")
        for name in ("batch_size", "image_size", "steps"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive int, got {getattr(self, name)!r}")
        if not isinstance(self.warmup, int) or self.warmup < 0:
            raise ValueError(f"warmup must be an int >= 0, got {self.warmup!r}")
        if not self.bucket_mb > 0:
            raise ValueError(f"bucket_mb must be positive, got {self.bucket_mb!r}")


# --------------------------------------------------------------------------- all-reduce timing
class CommTimer:
    """DDP communication hook state: the default all-reduce (sum / world size), with each
    bucket's launch and completion time recorded per step. Register with `attach(ddp)`."""

    def __init__(self, device: torch.device, group=None):
        self.cuda = device.type == "cuda"
        self.group = group
        self.steps: list[dict] = []   # per step: {"start": t, "backward": t, "buckets": [[launch, done], ...]}
        self._current: dict | None = None

    def attach(self, ddp: DistributedDataParallel) -> None:
        ddp.register_comm_hook(self, _timed_allreduce)

    def _now(self):
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            return event
        return time.perf_counter()

    def start_step(self) -> None:
        self._current = {"start": self._now(), "buckets": []}
        self.steps.append(self._current)

    def record_launch(self) -> list:
        if self._current is None:
            raise RuntimeError("CommTimer: a bucket was reduced outside start_step()")
        pair = [self._now(), None]
        self._current["buckets"].append(pair)
        return pair

    def summary(self, skip: int = 0) -> dict:
        """Per-step medians over the steps after the first `skip`: all-reduce ms (union of
        the bucket intervals), hidden % (the part before backward's end), exposed ms, buckets.
        On CUDA call after a synchronize."""
        totals, hidden, exposed, counts = [], [], [], []
        for step in self.steps[skip:]:
            if not step["buckets"]:
                continue
            ms = [(self._ms(step["start"], a), self._ms(step["start"], b)) for a, b in step["buckets"]]
            backward_end = max(a for a, _ in ms)
            total = _union_ms(ms)
            before = _union_ms([(a, min(b, backward_end)) for a, b in ms if a < backward_end])
            totals.append(total)
            hidden.append(100.0 * before / total if total > 0 else 100.0)
            exposed.append(total - before)
            counts.append(len(ms))
        if not totals:
            return {"allreduce_ms": None, "allreduce_hidden_pct": None, "allreduce_exposed_ms": None, "buckets": None}
        return {"allreduce_ms": float(np.median(totals)), "allreduce_hidden_pct": float(np.median(hidden)),
                "allreduce_exposed_ms": float(np.median(exposed)), "buckets": int(np.median(counts))}

    def _ms(self, start, t) -> float:
        if t is None:
            raise RuntimeError("CommTimer: a bucket's all-reduce never completed")
        return start.elapsed_time(t) if self.cuda else (t - start) * 1e3


def _timed_allreduce(state, bucket):  # unannotated: DDP checks the annotation, a string here
    pair = state.record_launch()
    fut = default_hooks.allreduce_hook(state.group, bucket)

    def done(f):
        pair[1] = state._now()  # on CUDA: recorded on a stream synchronized with the collective
        return f.value()

    return fut.then(done)


def _union_ms(intervals) -> float:
    total, end = 0.0, -float("inf")
    for a, b in sorted(intervals):
        if b <= end:
            continue
        total += b - max(a, end)
        end = b
    return total


# --------------------------------------------------------------------------- one rank
def build_model(cfg: Config, backend: str, rank: int, device: torch.device) -> torch.nn.Module:
    """The module a rank trains, before DDP: the full net (same seeded weights on every rank)
    or its tower, on the device in the config's dtype, channels_last."""
    torch.manual_seed(0)
    layers = "triton" if backend == "triton" else "torch"
    if cfg.parallel == "towers":
        model = build_tower(rank, layers)
    else:
        model = nets.build(cfg.arch, "torch")
        model = convert(model, "triton") if layers == "triton" else model
    return model.to(device=device, dtype=DTYPES[cfg.dtype], memory_format=torch.channels_last).train()


def wrap_ddp(model: torch.nn.Module, device: torch.device, bucket_mb: float,
             timer: CommTimer | None = None) -> DistributedDataParallel:
    """DDP over the default group with `bucket_mb` buckets; with a timer, its all-reduce hook."""
    ddp = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                  bucket_cap_mb=bucket_mb)
    if timer is not None:
        timer.attach(ddp)
    return ddp


def _maybe_fail(cfg: Config, rank: int, step: int) -> None:
    if cfg.inject_failure and cfg.inject_failure[0] == rank and cfg.inject_failure[1] == step:
        if cfg.inject_failure[2] == "hang":
            time.sleep(10 * cfg.pg_timeout_s)  # the others' collectives time out meanwhile
        raise RuntimeError(f"injected failure on rank {rank} at step {step}")


def measure_rank(cfg: Config, backend: str, rank: int, world_size: int, device: torch.device) -> dict:
    """Train `warmup` + `steps` steps on this rank; the row's fields (same on every rank
    after the reductions at the end)."""
    model = build_model(cfg, backend, rank, device)
    timer = None
    if cfg.parallel == "ddp":
        timer = CommTimer(device)
        model = wrap_ddp(model, device, cfg.bucket_mb, timer)
    net = torch.compile(model, dynamic=False) if backend == "compile" else model
    global_batch = cfg.batch_size * (world_size if cfg.parallel == "ddp" else 1)
    # Each DDP rank its own images; the towers all see the same ones.
    seed = rank if cfg.parallel == "ddp" else 0
    x, y = data.synthetic_batch(cfg.batch_size, image_size=cfg.image_size, device=device, dtype=DTYPES[cfg.dtype],
                                channels_last=True, seed=seed)
    opt = recipe.optimizer(model.module if cfg.parallel == "ddp" else model, cfg.arch, batch_size=global_batch)
    cuda = device.type == "cuda"
    marks = []

    def mark():
        if cuda:
            e = torch.cuda.Event(enable_timing=True)
            e.record()
            return e
        return time.perf_counter()

    for i in range(cfg.warmup + cfg.steps):
        if i == cfg.warmup and cuda:
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
        _maybe_fail(cfg, rank, i)
        if timer is not None:
            timer.start_step()
        marks.append(mark())
        opt.zero_grad(set_to_none=True)
        recipe.loss(net(x), y).backward()
        opt.step()
    marks.append(mark())
    if cuda:
        torch.cuda.synchronize(device)
        step_ms = np.array([a.elapsed_time(b) for a, b in zip(marks[cfg.warmup:-1], marks[cfg.warmup + 1:])])
    else:
        step_ms = np.diff(np.array(marks[cfg.warmup:])) * 1e3
    comm = timer.summary(skip=cfg.warmup) if timer is not None else {}
    # The slowest rank sets the pace: max over ranks of the step time and of the peak.
    peak = torch.cuda.max_memory_allocated(device) if cuda else -1
    stats = torch.tensor([float(step_ms.sum()), float(peak)], dtype=torch.float64, device=device)
    dist.all_reduce(stats, op=dist.ReduceOp.MAX)
    total_s = stats[0].item() * 1e-3
    images_per_s = global_batch * cfg.steps / total_s
    step_median = float(np.median(step_ms))
    exposed = comm.get("allreduce_exposed_ms")
    return {
        "world_size": world_size, "global_batch": global_batch, "step_ms": step_median,
        "step_ms_p20": float(np.percentile(step_ms, 20)), "step_ms_p80": float(np.percentile(step_ms, 80)),
        "images_per_s": images_per_s, "images_per_s_per_device": images_per_s / world_size,
        **comm, "comm_share_pct": 100.0 * exposed / step_median if exposed is not None else None,
        "peak_bytes": stats[1].item() if cuda else None,
    }


def _device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def _base_row(cfg: Config, backend: str, world_size: int, device: torch.device) -> dict:
    # ranks per node: torchrun's LOCAL_WORLD_SIZE (spawned here: all of them on this node)
    nodes = world_size // int(os.environ.get("LOCAL_WORLD_SIZE", world_size))
    return {"run_id": cfg.run_id, "arch": cfg.arch, "backend": backend, "parallel": cfg.parallel,
            "world_size": world_size, "nodes": nodes, "dtype": cfg.dtype, "batch_per_device": cfg.batch_size,
            "image_size": cfg.image_size,
            "bucket_mb": cfg.bucket_mb if cfg.parallel == "ddp" else None, "steps": cfg.steps,
            "device": _device_name(device) + (" (triton interpreter)" if backend == "triton" and device.type != "cuda"
                                              else ""),
            "comm_backend": comm_backend(device.type)}


def write_rows(cfg: Config, rows: list[dict]) -> None:
    """Append rows to the run's scaling.csv (rank 0 or the launcher only), each ok row with
    its efficiency against the like-for-like world-size-1 row: this run's, else the latest
    earlier run's in the same results folder (a torchrun job measures one world size)."""
    if cfg.out is None:
        raise RuntimeError("only rank 0 (or the launcher) writes results: this process has no run folder")
    for row in rows:
        if row.get("status", "ok") == "ok" and row.get("images_per_s"):
            if row["world_size"] == 1:
                row.update(efficiency=1.0, baseline_run_id=row["run_id"])
            else:
                base = scaling.baseline(_baseline_rows(cfg.out), row)
                if base is not None:
                    row.update(efficiency=scaling.efficiency(row["images_per_s"], row["world_size"],
                                                             base.images_per_s),
                               baseline_run_id=base.run_id)
        scaling.append_rows(cfg.out, [row])


def _baseline_rows(out: str) -> pd.DataFrame:
    """The rows a baseline may come from: every run's beside this one; if one of those files
    cannot be read, this run's own (the measured row is written either way)."""
    try:
        return scaling.load_scaling_runs(out)
    except (OSError, ValueError) as exc:
        print(f"warning: efficiency against this run's rows only: {exc}"[:1000], file=sys.stderr)
    path = Path(out) / scaling.SCALING_CSV
    return scaling.load_scaling(out) if path.exists() else pd.DataFrame(columns=scaling.COLUMNS)


def rank_main(rank: int, world_size: int, cfg: Config) -> None:
    """What every rank runs: each backend in turn; rank 0 writes its rows as they come."""
    device = device_for(int(os.environ.get("LOCAL_RANK", rank)))
    if device.type == "cpu":  # the node's cores shared by its ranks, as torchrun's OMP_NUM_THREADS intends
        local = int(os.environ.get("LOCAL_WORLD_SIZE", world_size))
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local))
    if cfg.parallel == "towers" and world_size != TOWERS_WORLD_SIZE:
        raise ValueError(f"parallel 'towers' needs world size {TOWERS_WORLD_SIZE}, got {world_size}")
    for backend in cfg.backends:
        row = _base_row(cfg, backend, world_size, device)
        try:
            row.update(measure_rank(cfg, backend, rank, world_size, device))
        except BaseException as exc:
            if rank == 0:  # the peers' records, if they wrote theirs first (they may be stopping)
                own = RankFailure(0, f"{type(exc).__name__}: {exc}"[:2000], time.time())
                _write_failures(cfg, row, [own, *_peer_failures(world_size)])
            raise
        if rank == 0:
            write_rows(cfg, [row])
        if device.type == "cuda":
            torch.cuda.empty_cache()


def _peer_failures(world_size: int) -> list[RankFailure]:
    time.sleep(1.0)  # a peer that raised records before it exits; give it a moment
    with contextlib.suppress(Exception):
        return [f for f in failures(dist.distributed_c10d._get_default_store(), world_size) if f.rank != 0]
    return []


def _write_failures(cfg: Config, row: dict, found: list[RankFailure], status: str = "failed") -> None:
    for f in sorted(found, key=lambda f: f.time):
        scaling.append_rows(cfg.out, [dict(row, status=status, error=str(f)[:500])])


# --------------------------------------------------------------------------- launchers
def run_spawned(cfg: Config, nprocs: list[int], *, timeout_s: float = 1800.0) -> list[str]:
    """Each world size in `nprocs` spawned on this node in turn. A failed world size is
    recorded (one row per failed rank) and the next one runs; returns the failure messages."""
    errors = []
    if torch.cuda.is_available() and max(nprocs) > torch.cuda.device_count():
        raise ValueError(f"nproc {max(nprocs)} exceeds the {torch.cuda.device_count()} visible GPUs")
    # the device the launcher's own rows name (rank 0's)
    device = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    for n in nprocs:
        try:
            launch(rank_main, n, (cfg,), timeout_s=timeout_s, pg_timeout_s=cfg.pg_timeout_s)
        except KeyboardInterrupt as exc:  # the ranks are stopped: the cut world size says so in a row
            unfinished = _unfinished(cfg, n)
            if unfinished and not _written_errors(cfg, n):
                scaling.append_rows(cfg.out, [dict(_base_row(cfg, unfinished[0], n, device), status="interrupted",
                                                   error=f"stopped by {str(exc) or 'SIGINT'} before it finished")])
            raise
        except LaunchError as exc:
            # Rank 0 records what it saw unless it was stopped first; the launcher adds the rest,
            # on the backend the failure ended.
            written = _written_errors(cfg, n)
            unfinished = _unfinished(cfg, n)
            if unfinished:
                row = _base_row(cfg, unfinished[0], n, device)
                new = [f for f in exc.failures if str(f)[:500] not in written]
                if new:
                    _write_failures(cfg, row, new)
                elif not written:  # stopped at its deadline with no rank's error: the launcher's
                    scaling.append_rows(cfg.out, [dict(row, status="failed", error=str(exc)[:500])])
                # the backends the ranks never reached: a row each, not a silent gap
                scaling.append_rows(cfg.out, [
                    dict(_base_row(cfg, b, n, device), status="skipped",
                         error=f"not run: world size {n} failed on backend {unfinished[0]} before it")
                    for b in unfinished[1:]])
            errors.append(str(exc))
            print(f"error: {exc}", file=sys.stderr)
    return errors


def _rows_of_run(cfg: Config, world_size: int):
    if not (Path(cfg.out) / scaling.SCALING_CSV).exists():
        return None
    frame = scaling.load_scaling(cfg.out)  # this config's rows: a run measures each --arch in turn
    return frame[(frame.run_id == cfg.run_id) & (frame.arch == cfg.arch) & (frame.world_size == world_size)
                 & (frame.parallel == cfg.parallel)]


def _written_errors(cfg: Config, world_size: int) -> set[str]:
    rows = _rows_of_run(cfg, world_size)
    return set() if rows is None else set(rows[rows.status != "ok"].error)


def _unfinished(cfg: Config, world_size: int) -> list[str]:
    rows = _rows_of_run(cfg, world_size)
    done = set() if rows is None else set(rows[rows.status == "ok"].backend)
    return [b for b in cfg.backends if b not in done]


def run_torchrun(cfg: Config) -> None:
    """This process's rank of a torchrun job (all world sizes are torchrun's: one per job)."""
    run_from_env(rank_main, (cfg,), pg_timeout_s=cfg.pg_timeout_s)


# --------------------------------------------------------------------------- command line
def add_arguments(p: argparse.ArgumentParser) -> None:
    """The scale-out options, for this module's command line and the profiler's."""
    p.add_argument("--parallel", choices=PARALLEL, default=None,
                   help="ddp: DistributedDataParallel at each --nproc (--batch-size per device); towers: "
                        "AlexNet's two-GPU split (--batch-size for both); training steps only")
    p.add_argument("--nproc", type=_sizes, default=None,
                   help="world sizes to spawn on this node, e.g. 1,2,4,8 (ignored under torchrun)")
    p.add_argument("--bucket-mb", type=float, default=25.0, help="DDP bucket_cap_mb (default 25)")
    p.add_argument("--steps", type=int, default=None,
                   help="with --parallel: timed training steps after 2 warm-up steps (default 20 GPU, 3 CPU)")
    p.add_argument("--pg-timeout-s", type=float, default=120.0,
                   help="a collective whose peer died fails after this many seconds (default 120)")
    p.add_argument("--job-timeout-s", type=float, default=1800.0,
                   help="a spawned world size is stopped after this many seconds (default 1800)")
    p.add_argument("--inject-failure", type=_failure_spec, default=None,
                   help="RANK:STEP[:hang]: that rank raises (or hangs) at that step; checks the failure path")


def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        sizes = []
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"--nproc must be comma-separated positive ints, got {text!r}")
    return sizes


def _failure_spec(text: str) -> tuple:
    parts = text.split(":")
    try:
        rank, step = int(parts[0]), int(parts[1])
        kind = parts[2] if len(parts) > 2 else "raise"
    except (ValueError, IndexError):
        raise argparse.ArgumentTypeError(f"--inject-failure must be RANK:STEP[:hang], got {text!r}") from None
    if kind not in ("raise", "hang") or len(parts) > 3:
        raise argparse.ArgumentTypeError(f"--inject-failure must be RANK:STEP[:hang], got {text!r}")
    return rank, step, kind


def config_from_args(args: argparse.Namespace, arch: str, out: str | None, run_id: str) -> Config:
    on_gpu = torch.cuda.is_available()
    return Config(arch=arch, backends=tuple(args.backend), parallel=args.parallel or "ddp",
                  batch_size=args.batch_size, dtype=args.dtype, image_size=args.image_size,
                  warmup=2, steps=args.steps or (20 if on_gpu else 3), bucket_mb=args.bucket_mb,
                  out=out, run_id=run_id, pg_timeout_s=args.pg_timeout_s, inject_failure=args.inject_failure)


def check_args(args: argparse.Namespace) -> None:
    """Raise ValueError naming the argument for scale-out options that do not fit together."""
    if args.parallel is None:
        for name in ("nproc", "inject_failure"):
            if getattr(args, name) is not None:
                raise ValueError(f"--{name.replace('_', '-')} needs --parallel ddp or towers")
        return
    if args.parallel == "towers":
        if args.arch != ["alexnet"]:
            raise ValueError(f"--parallel towers is AlexNet's split: --arch must be alexnet, got {','.join(args.arch)}")
        if args.nproc not in (None, [TOWERS_WORLD_SIZE]):
            raise ValueError(f"--parallel towers runs on {TOWERS_WORLD_SIZE} devices, got --nproc {args.nproc}")
    if torch.cuda.is_available() and args.nproc and max(args.nproc) > torch.cuda.device_count():
        raise ValueError(f"--nproc {max(args.nproc)} exceeds the {torch.cuda.device_count()} visible GPUs")
    for name in ("bucket_mb", "pg_timeout_s", "job_timeout_s"):
        if not getattr(args, name) > 0:
            raise ValueError(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    if args.steps is not None and args.steps < 1:
        raise ValueError(f"--steps must be a positive int, got {args.steps}")


def run(args: argparse.Namespace, store, summary: dict) -> int:
    """The scale-out measurement the profiler's arguments ask for, into `store`'s run folder
    (None on the ranks of a torchrun job other than 0: they write nothing). 0 when every
    rank of every world size succeeded."""
    from .distributed_launch import under_torchrun

    out, run_id = (str(store.dir), store.run_id) if store is not None else (None, "")
    errors = []  # filled as the world sizes end, so an interrupted run's summary has them too
    summary["parallel"] = {"layout": args.parallel, "bucket_mb": args.bucket_mb, "nproc": args.nproc,
                           "errors": errors}
    for arch in args.arch:
        cfg = config_from_args(args, arch, out, run_id)
        if under_torchrun():
            try:
                run_torchrun(cfg)
            except Exception as exc:
                errors.append(f"rank {os.environ.get('RANK', '?')}: {type(exc).__name__}: {exc}")
                print(f"error: {errors[-1]}", file=sys.stderr)
                break  # the job's group is gone; torchrun ends the other ranks
        else:
            nprocs = args.nproc or ([TOWERS_WORLD_SIZE] if cfg.parallel == "towers" else [1, 2])
            errors += run_spawned(cfg, nprocs, timeout_s=args.job_timeout_s)
    return 1 if errors else 0


def main(args: argparse.Namespace, command: str) -> int:
    """`python -m benchmarks.profile --parallel ...`: a run folder in the results store with
    scaling.csv, summary.json and report.html, written by the launcher or torchrun's rank 0."""
    from reports.html import build_report

    from .distributed_launch import under_torchrun
    from .environment import environment
    from .store import RunStore

    writer = not under_torchrun() or os.environ.get("RANK") == "0"
    store = RunStore(args.out) if writer else None
    summary = {}
    if store is not None:
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        summary = {"run_id": store.run_id, "env": environment(device, command), "ceilings": None,
                   "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                   "backends": [], "interrupted": False, "finished": False}
        store.save_summary(summary)
        print(f"run {store.run_id} -> {store.dir}", file=sys.stderr)
    stopped_by = None
    try:
        code = run(args, store, summary)
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM (the profiler turns it into this)
        if store is None:
            raise
        stopped_by = str(exc) or "SIGINT"
        code = 143 if stopped_by == "SIGTERM" else 130
        summary.update(interrupted=True, stopped_by=stopped_by)
        print(f"\ninterrupted ({stopped_by}): keeping the rows measured so far", file=sys.stderr)
    finally:
        if store is not None:
            summary["finished"] = stopped_by is None and sys.exc_info()[0] is None
            store.save_summary(summary)
            store.close()
    if store is not None:
        print(f"rows -> {store.dir / scaling.SCALING_CSV}\nreport -> {build_report(store.dir)}")
    return code
