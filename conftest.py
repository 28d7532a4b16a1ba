"""Loaded by pytest before any test module, for tests/ and benchmarks/ alike.

Triton decides between compiling and interpreting when a kernel is *decorated*, so the
interpreter switch must be set before `kernels` (and through it triton's `jit`) is imported.
On a machine without a CUDA device the kernels can only run under the interpreter.
"""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
