"""What one training step of a net costs the host, on any machine: the kernel launches of a
forward and backward on the triton backend, by kernel, and the Python time spent issuing
them (thread CPU time, best of several rounds), with every launch stubbed out.

A GPU step is host-bound where this time (plus triton's own launch cost, not counted here)
exceeds the kernels' device time; `benchmarks.sweep nets --backends triton+graph` measures
that share on the GPU. Runs under the Triton interpreter with each launch replaced by a
counter, so the outputs are garbage and only the host's work is real; tiny inputs keep
torch's own CPU work (the FC, the loss, the gradient accumulation) small.

    python scripts/host_cost.py --arch resnet50 googlenet [--rounds 4] [--steps 5]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import Counter
from pathlib import Path

os.environ["TRITON_INTERPRET"] = "1"  # before triton is imported: launches become interpreter calls
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
from triton.runtime import interpreter

import nets

LAUNCHES: Counter = Counter()


def _count_launch(self, *args, grid, warmup, **kwargs):
    """Stands in for `InterpretedFunction.run`: counts the launch, runs nothing."""
    LAUNCHES[self.fn.__name__] += 1


def input_size(arch: str) -> int:
    """The smallest square input each net takes down to a valid classifier input."""
    return 64 if arch.startswith("resnet") else 224


def measure(arch: str, rounds: int = 4, steps: int = 5) -> tuple[float, Counter]:
    """(host ms per forward+backward, launches per forward+backward by kernel) of `arch` on
    the triton backend, batch 1, channels_last, float32, launches stubbed."""
    run = interpreter.InterpretedFunction.run
    interpreter.InterpretedFunction.run = _count_launch
    try:
        torch.manual_seed(0)
        model = nets.build(arch, "triton").to(memory_format=torch.channels_last).train()
        size = input_size(arch)
        x = torch.randn(1, 3, size, size).to(memory_format=torch.channels_last)

        def step():
            out = model(x)
            out = out[0] if isinstance(out, tuple) else out
            out.sum().backward()
            model.zero_grad(set_to_none=True)

        step()
        LAUNCHES.clear()
        best = float("inf")
        for _ in range(rounds):
            start = time.thread_time()
            for _ in range(steps):
                step()
            best = min(best, (time.thread_time() - start) / steps)
        per_step = Counter({k: v // (rounds * steps) for k, v in LAUNCHES.items()})
        return best * 1e3, per_step
    finally:
        interpreter.InterpretedFunction.run = run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", nargs="+", default=["resnet50"], choices=nets.ARCHS)
    parser.add_argument("--rounds", type=int, default=4, help="rounds of --steps; the best round counts")
    parser.add_argument("--steps", type=int, default=5, help="forward+backward steps per round")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.steps < 1:
        parser.error(f"--rounds and --steps must be >= 1, got {args.rounds} and {args.steps}")
    torch.set_num_threads(1)
    for arch in args.arch:
        ms, launches = measure(arch, args.rounds, args.steps)
        total = sum(launches.values())
        print(f"{arch}: {ms:.1f} ms host per forward+backward, {total} launches "
              f"({ms * 1e3 / max(total, 1):.0f} us each)", flush=True)
        for kernel, n in launches.most_common():
            print(f"  {n:5d}  {kernel}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
