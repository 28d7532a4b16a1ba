"""Benchmarks: the pytest-benchmark suite (test_*.py) and `python -m benchmarks.profile`.

May import nets, kernels and reports. Without a CUDA device, Triton kernels can only run
on the interpreter, which triton picks when a kernel is decorated: the switch is set here,
before `nets` (and through it `kernels`) is imported by any benchmark module.
"""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
