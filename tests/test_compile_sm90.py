"""Every Triton kernel lowers to Hopper (sm_90) code that fits the device, checked without
a GPU: the interpreter runs the kernels' logic but never sees the real compiler."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import HAS_CUDA

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(HAS_CUDA, reason="with a GPU the kernels compile for real in the gpu tests")
def test_kernels_compile_for_sm90_without_a_gpu():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_DEFAULT_FP_FUSION"] = "1"  # triton 3.9's default, stated to silence its warning
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "compile_check.py"), "--quick"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=900, check=False)
    report = result.stdout[-4000:] + result.stderr[-2000:]
    assert result.returncode == 0, report
    assert "72/72 variants compiled for sm_90" in result.stdout, report


def test_every_dot_names_its_accumulator_dtype():
    """triton 3.6 (the GPU machines' version) gives tl.dot out_dtype=float32 unless told and
    then refuses an fp64 accumulator (every fp64 conv and 1x1 GEMM failed to compile there);
    triton 3.8+ takes the accumulator's dtype, so CI's compile check cannot see a dot that
    omits it. Each tl.dot in `kernels` passes out_dtype."""
    import ast

    calls = []
    for path in sorted((ROOT / "kernels").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "dot" \
                    and isinstance(node.func.value, ast.Name) and node.func.value.id == "tl":
                calls.append((path.name, node.lineno, {kw.arg for kw in node.keywords}))
    assert len(calls) >= 6, calls  # conv forward (2 K loops), data-grad, weight-grad, 1x1 (2)
    missing = [(name, line) for name, line, kws in calls if "out_dtype" not in kws]
    assert not missing, f"tl.dot without out_dtype at {missing}"


def test_tma_kxk_variants_promise_wgmma_tma_and_no_spills(monkeypatch):
    """scripts/compile_check.py holds the TMA KxK kernels (always TMA-fed, no USE_TMA switch)
    to what a TMA variant promises: its check names a missing wgmma or TMA load and any
    spill; every config of the three kernels is a variant (float64: the tiles it may take)."""
    import types

    monkeypatch.setenv("TRITON_INTERPRET", os.environ.get("TRITON_INTERPRET", "0"))  # importing the script unsets it
    from kernels import configs, conv, conv_tma
    from scripts import compile_check as cc

    assert cc.promises_tma(conv_tma._conv_tma_wgrad_kernel, {}) and not cc.promises_tma(conv._conv_fwd_kernel, {})
    good_code = {"regs": 120, "stack": 0, "UTMALDG": 6, "UTMASTG": 0, "HGMMA": 4, "LDL": 0}
    wgmma = types.SimpleNamespace(asm={"ptx": "wgmma.mma_async cp.async.bulk.tensor"})
    assert cc.promise_problems({}, wgmma, good_code, tma=True) == []
    mma_sync = types.SimpleNamespace(asm={"ptx": "mma.sync cp.async.bulk.tensor"})
    assert any("no wgmma" in p for p in cc.promise_problems({}, mma_sync, {**good_code, "HGMMA": 0}, tma=True))
    assert any("spills" in p for p in cc.promise_problems({}, wgmma, {**good_code, "stack": 8, "LDL": 1}, tma=True))
    assert cc.promise_problems({}, mma_sync, None, tma=False) == []
    labels = [v[0] for v in cc.conv_tma_variants("bf16", quick=False)]
    assert len(labels) == 2 * 2 * len(configs.CONV_TMA) + 2 * len(configs.CONV_TMA_WGRAD)
    fp64 = [v[0] for v in cc.conv_tma_variants("fp64", quick=False)]
    assert len(fp64) == 2 * 2 + 2 and all("fp64" in label for label in fp64)
