"""Whole-step CUDA graphs: capture a training step (or an inference forward) once, replay it.

A replay launches every kernel of the step from one host call, so what the step costs the
host (Python, autotuner lookups, triton's launcher, torch's dispatcher) drops out and only
device time remains. The profiler's `--cuda-graphs` times each backend's step both ways in
the same run (backend label `<backend>+graph` for the replays), so the difference is the
host's share.

Capture follows torch's whole-network recipe (torch.cuda.graphs docs): warm-up steps on a
side stream (they also settle every autotuning decision and the tuned table's lookup, so no
benchmarking happens inside capture), then one step captured; gradients are set to None
inside the step, so backward allocates them from the graph's private pool. The step's inputs
are the tensors it closes over: a replay reads whatever they hold then.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

WARMUP_STEPS = 3


def check_device(device: torch.device) -> None:
    if torch.device(device).type != "cuda":
        raise ValueError(f"--cuda-graphs needs a CUDA device, got {device} (CUDA graphs capture GPU launches)")


def capture(step: Callable[[], object], device: torch.device, *, warmup: int = WARMUP_STEPS
            ) -> tuple[Callable[[], object], object]:
    """(replay, outputs): `replay()` runs the captured step again and returns its outputs,
    the tensors the captured call returned (static: each replay overwrites them)."""
    check_device(device)
    if warmup < 1:
        raise ValueError(f"warmup must be >= 1 (autotuning must not run inside capture), got {warmup}")
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        for _ in range(warmup):
            step()
    torch.cuda.current_stream(device).wait_stream(side)
    torch.cuda.synchronize(device)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        outputs = step()

    def replay():
        graph.replay()
        return outputs

    return replay, outputs
