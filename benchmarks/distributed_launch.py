"""Starting ranks on torch.distributed and ending them cleanly: one node spawned here, or
under `torchrun` (ranks from the environment). NCCL on CUDA, gloo on CPU.

  launch(fn, world_size, args)  spawn `world_size` processes on this node; each joins the
                                process group (rendezvous on a free localhost port, through
                                a TCPStore the parent holds) and runs fn(rank, world_size, *args)
  run_from_env(fn, args)        the same for one rank started by torchrun (RANK, WORLD_SIZE,
                                LOCAL_RANK, MASTER_ADDR, MASTER_PORT)

A rank that raises records its error, with its rank, in the job's store (`failures` reads
them back) and exits non-zero. Nothing hangs: the process group has a timeout (a collective
whose peer died fails after at most `pg_timeout_s`, gloo usually at once on the closed
connection), and the spawning parent watches its children: when one fails it stops the others
and raises `LaunchError` naming every failed rank; past `timeout_s` it stops them all.
Imports torch only.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import socket
import time
import traceback
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.multiprocessing.spawn import ProcessException

HOST = "127.0.0.1"
_FAILURE_KEY = "convbench/failure/{}"


@dataclass(frozen=True)
class RankFailure:
    rank: int
    error: str      # "Type: message"
    time: float     # time.time() when it was recorded (the earliest is the root cause)
    traceback: str = ""

    def __str__(self) -> str:
        return f"rank {self.rank}: {self.error}"


class LaunchError(RuntimeError):
    """A distributed job ended early: `failures` holds every rank's recorded error, first
    the earliest; `timed_out` when the launcher stopped it at its deadline."""

    def __init__(self, message: str, failures: list[RankFailure], timed_out: bool = False):
        super().__init__(message)
        self.failures, self.timed_out = failures, timed_out


def free_port() -> int:
    """A TCP port free on localhost now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def comm_backend(device_type: str) -> str:
    return "nccl" if device_type == "cuda" else "gloo"


def device_for(local_rank: int) -> torch.device:
    """This rank's device: cuda:LOCAL_RANK when CUDA is present, else the CPU."""
    if torch.cuda.is_available():
        if local_rank >= torch.cuda.device_count():
            raise ValueError(f"local rank {local_rank} has no GPU: {torch.cuda.device_count()} visible")
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def _record_failure(store, rank: int, exc: BaseException) -> None:
    record = {"rank": rank, "error": f"{type(exc).__name__}: {exc}"[:2000], "time": time.time(),
              "traceback": traceback.format_exc()[-4000:]}
    with contextlib.suppress(Exception):  # the store's host may be gone too; the error still raises
        store.set(_FAILURE_KEY.format(rank), json.dumps(record))


def failures(store, world_size: int) -> list[RankFailure]:
    """The failures recorded in `store` by ranks 0..world_size-1, the earliest first."""
    found = []
    for rank in range(world_size):
        key = _FAILURE_KEY.format(rank)
        try:
            if store.check([key]):
                found.append(RankFailure(**json.loads(store.get(key))))
        except Exception:  # an unreachable store has nothing more to tell
            break
    return sorted(found, key=lambda f: f.time)


def _run_rank(fn, args, rank: int, world_size: int, local_rank: int, store, pg_timeout_s: float):
    """Join the group (through `store`, or env:// when None), run fn, record a failure with
    the rank in the job's store; always leave the group."""
    try:
        device = device_for(local_rank)
        timeout = datetime.timedelta(seconds=pg_timeout_s)
        if store is None:  # torchrun: its rendezvous (and agent store) through the environment
            dist.init_process_group(comm_backend(device.type), init_method="env://", rank=rank,
                                    world_size=world_size, timeout=timeout)
            store = dist.distributed_c10d._get_default_store()
        else:
            dist.init_process_group(comm_backend(device.type), store=store, rank=rank, world_size=world_size,
                                    timeout=timeout)
        return fn(rank, world_size, *args)
    except BaseException as exc:
        if store is not None:
            _record_failure(store, rank, exc)
        raise
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def _spawned(local_rank, fn, args, world_size, port, pg_timeout_s):
    os.environ.update(RANK=str(local_rank), LOCAL_RANK=str(local_rank), WORLD_SIZE=str(world_size),
                      LOCAL_WORLD_SIZE=str(world_size), MASTER_ADDR=HOST, MASTER_PORT=str(port))
    store = dist.TCPStore(HOST, port, world_size + 1, is_master=False,
                          timeout=datetime.timedelta(seconds=pg_timeout_s))
    _run_rank(fn, args, local_rank, world_size, local_rank, store, pg_timeout_s)


def launch(fn, world_size: int, args: tuple = (), *, timeout_s: float = 600.0, pg_timeout_s: float = 60.0,
           poll_s: float = 0.2) -> None:
    """Run fn(rank, world_size, *args) on `world_size` processes spawned on this node.

    `fn` must be importable (a module-level function); only its side effects count (rank 0
    writes results). Raises `LaunchError` when a rank fails (after the others are stopped)
    or when the job runs past `timeout_s` (all are stopped)."""
    if not isinstance(world_size, int) or world_size < 1:
        raise ValueError(f"world_size must be a positive int, got {world_size!r}")
    if timeout_s <= 0 or pg_timeout_s <= 0:
        raise ValueError(f"timeout_s and pg_timeout_s must be positive, got {timeout_s}, {pg_timeout_s}")
    port = free_port()
    # The parent holds the store, so the ranks' failure records outlive the ranks.
    store = dist.TCPStore(HOST, port, world_size + 1, is_master=True, wait_for_workers=False,
                          timeout=datetime.timedelta(seconds=pg_timeout_s))
    ctx = mp.start_processes(_spawned, args=(fn, args, world_size, port, pg_timeout_s), nprocs=world_size,
                             join=False, start_method="spawn")
    deadline = time.monotonic() + timeout_s
    try:
        while not ctx.join(timeout=poll_s):
            if time.monotonic() > deadline:
                _stop(ctx)
                found = failures(store, world_size)
                detail = "; ".join(map(str, found)) or "no rank recorded an error"
                raise LaunchError(f"world size {world_size}: stopped after the {timeout_s:g} s timeout ({detail})",
                                  found, timed_out=True)
    except ProcessException as exc:  # a child failed; spawn's join has stopped the others
        _stop(ctx)
        found = failures(store, world_size)
        if not any(f.rank == exc.error_index for f in found):  # died without a word (killed, segfault)
            found.insert(0, RankFailure(exc.error_index, f"exited: {str(exc).splitlines()[0]}", time.time()))
        first = found[0]
        others = [str(f) for f in found[1:]]
        message = (f"world size {world_size}: rank {first.rank} failed: {first.error}"
                   + (f" (then {'; '.join(others)})" if others else "")
                   + "; the other ranks were stopped")
        raise LaunchError(message, found) from exc
    except BaseException:  # Ctrl-C or SIGTERM of the launcher: no rank outlives it
        _stop(ctx)
        raise


def _stop(ctx) -> None:
    for p in ctx.processes:
        if p.is_alive():
            p.terminate()
    for p in ctx.processes:
        p.join(5)
        if p.is_alive():
            p.kill()
            p.join()


def run_from_env(fn, args: tuple = (), *, pg_timeout_s: float = 60.0):
    """Run fn(rank, world_size, *args) as the rank torchrun started (env:// rendezvous)."""
    try:
        rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        missing = [k for k in ("MASTER_ADDR", "MASTER_PORT") if k not in os.environ]  # env:// needs both
        if missing:
            raise KeyError(missing[0])
    except KeyError as exc:
        raise ValueError(f"not started by torchrun: environment variable {exc.args[0]} is unset") from None
    return _run_rank(fn, args, rank, world_size, local_rank, None, pg_timeout_s)


def under_torchrun() -> bool:
    """True in a process torchrun started (it sets TORCHELASTIC_RUN_ID with the rank variables)."""
    return "TORCHELASTIC_RUN_ID" in os.environ and "RANK" in os.environ
