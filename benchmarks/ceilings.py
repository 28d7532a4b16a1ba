"""Device ceilings: measured at the start of a run (a large matmul per dtype, a large
device copy) and reported beside the datasheet values. Every % of peak names its ceiling."""

from __future__ import annotations

import platform

import torch

from .timing import measure

# Dense (no sparsity) tensor-core TFLOP/s and HBM TB/s from NVIDIA's datasheets (SXM parts).
DATASHEET = {
    "H100": {"matmul_tflops": {"bfloat16": 989.0, "float16": 989.0, "float32": 494.0}, "copy_tbps": 3.35},
    "H200": {"matmul_tflops": {"bfloat16": 989.0, "float16": 989.0, "float32": 494.0}, "copy_tbps": 4.8},
    "A100": {"matmul_tflops": {"bfloat16": 312.0, "float16": 312.0, "float32": 156.0}, "copy_tbps": 2.04},
}
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def datasheet(device_name: str) -> dict | None:
    for key, values in DATASHEET.items():
        if key in device_name:
            return values
    return None


def device_name(device) -> str:
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def measure_ceilings(device, dtypes=("bfloat16", "float16", "float32"), *, size: int | None = None) -> dict:
    """{'matmul_tflops': {dtype: measured}, 'copy_gbps': measured, 'datasheet': {...} | None,
    'device': name}. fp32 matmul follows torch.backends.cuda.matmul.allow_tf32 at the time."""
    device = torch.device(device)
    on_gpu = device.type == "cuda"
    n = size or (8192 if on_gpu else 2048)
    out = {"device": device_name(device), "matmul_tflops": {}, "matmul_size": n}
    for name in dtypes:
        dtype = getattr(torch, name)
        if not on_gpu and dtype != torch.float32:
            continue  # CPU half matmuls are emulated: not a ceiling
        a = torch.randn(n, n, device=device, dtype=dtype)
        b = torch.randn(n, n, device=device, dtype=dtype)
        t = measure(lambda a=a, b=b: a @ b, device)
        out["matmul_tflops"][name] = 2 * n**3 / (t.ms * 1e-3) / 1e12
        del a, b
    numel = (1 << 28) if on_gpu else (1 << 24)  # 1 GiB / 64 MiB of fp32
    src = torch.empty(numel, device=device, dtype=torch.float32).fill_(1.0)
    dst = torch.empty_like(src)
    t = measure(lambda src=src, dst=dst: dst.copy_(src), device)
    out["copy_gbps"] = 2 * src.numel() * src.element_size() / (t.ms * 1e-3) / 1e9  # read + write
    out["datasheet"] = datasheet(out["device"])
    if on_gpu:
        out["fp32_matmul_uses_tf32"] = torch.backends.cuda.matmul.allow_tf32
    del src, dst
    return out
