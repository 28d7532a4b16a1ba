"""Device ceilings: measured at the start of a run (a large matmul per dtype, a large
device copy) and reported beside the datasheet values. Every % of peak names its ceiling.

float32 on a GPU has two matmul ceilings: TF32 tensor cores and IEEE fp32. A float32
conv runs TF32 exactly when `torch.backends.cudnn.allow_tf32` is True (torch's rule, which
our kernels follow; True by default), so both are measured ("tf32", "float32_ieee") and
"float32", the ceiling every float32 % of peak is taken against, is the one the convs run
at (`fp32_conv_uses_tf32` says which): a TF32 conv judged against the IEEE ceiling would
read several times its real share."""

from __future__ import annotations

import platform

import torch

from .timing import measure

# Dense (no sparsity) tensor-core TFLOP/s (tf32: TF32 tensor cores; float32_ieee: the FP32
# cores) and HBM TB/s from NVIDIA's datasheets (SXM parts).
DATASHEET = {
    "H100": {"matmul_tflops": {"bfloat16": 989.0, "float16": 989.0, "tf32": 494.0, "float32_ieee": 67.0},
             "copy_tbps": 3.35},
    "H200": {"matmul_tflops": {"bfloat16": 989.0, "float16": 989.0, "tf32": 494.0, "float32_ieee": 67.0},
             "copy_tbps": 4.8},
    "A100": {"matmul_tflops": {"bfloat16": 312.0, "float16": 312.0, "tf32": 156.0, "float32_ieee": 19.5},
             "copy_tbps": 2.04},
}
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def datasheet(device_name: str, *, fp32_tf32: bool = True) -> dict | None:
    """The card's datasheet values; its "float32" matmul is the TF32 or the IEEE one as
    `fp32_tf32` says (the one float32 convs run at)."""
    for key, values in DATASHEET.items():
        if key in device_name:
            matmul = dict(values["matmul_tflops"])
            matmul["float32"] = matmul["tf32" if fp32_tf32 else "float32_ieee"]
            return {**values, "matmul_tflops": matmul}
    return None


def device_name(device) -> str:
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def measure_ceilings(device, dtypes=("bfloat16", "float16", "float32"), *, size: int | None = None) -> dict:
    """{'matmul_tflops': {dtype: measured}, 'copy_gbps': measured, 'datasheet': {...} | None,
    'device': name}. On a GPU, float32 is measured twice, "tf32" and "float32_ieee", and
    "float32" is the one float32 convs run at (`fp32_conv_uses_tf32`: the value of
    torch.backends.cudnn.allow_tf32 now)."""
    device = torch.device(device)
    on_gpu = device.type == "cuda"
    n = size or (8192 if on_gpu else 2048)
    out = {"device": device_name(device), "matmul_tflops": {}, "matmul_size": n}
    conv_tf32 = on_gpu and torch.backends.cudnn.allow_tf32
    for name in dtypes:
        dtype = getattr(torch, name)
        if not on_gpu and dtype != torch.float32:
            continue  # CPU half matmuls are emulated: not a ceiling
        if on_gpu and dtype == torch.float32:
            setting = torch.backends.cuda.matmul.allow_tf32
            try:
                for key, tf32 in (("tf32", True), ("float32_ieee", False)):
                    torch.backends.cuda.matmul.allow_tf32 = tf32
                    out["matmul_tflops"][key] = _matmul_tflops(device, dtype, n)
            finally:
                torch.backends.cuda.matmul.allow_tf32 = setting
            out["matmul_tflops"][name] = out["matmul_tflops"]["tf32" if conv_tf32 else "float32_ieee"]
            out["fp32_conv_uses_tf32"] = conv_tf32
        else:
            out["matmul_tflops"][name] = _matmul_tflops(device, dtype, n)
    out["copy_gbps"] = _copy_gbps(device, (1 << 28) if on_gpu else (1 << 24))  # 1 GiB / 64 MiB of fp32
    out["datasheet"] = datasheet(out["device"], fp32_tf32=conv_tf32)
    return out


def _matmul_tflops(device: torch.device, dtype: torch.dtype, n: int) -> float:
    """TFLOP/s of one n x n x n matmul."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    t = measure(lambda: a @ b, device)
    return 2 * n**3 / (t.ms * 1e-3) / 1e12


def _copy_gbps(device: torch.device, numel: int) -> float:
    """GB/s of a device copy of `numel` fp32 values (bytes read plus bytes written)."""
    src = torch.empty(numel, device=device, dtype=torch.float32).fill_(1.0)
    dst = torch.empty_like(src)
    t = measure(lambda: dst.copy_(src), device)
    return 2 * src.numel() * src.element_size() / (t.ms * 1e-3) / 1e9
