"""scripts/perf_tables.py on the committed H100 sweep: the ratios it prints are the rows'."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "docs" / "perf-data" / "2026-11-27-h100"


def _module():
    spec = importlib.util.spec_from_file_location("perf_tables", ROOT / "scripts" / "perf_tables.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_tables_from_the_committed_sweep(capsys):
    assert _module().main([str(DATA / "sweep.csv.gz"), "--nets", str(DATA / "nets.csv")]) == 0
    out = capsys.readouterr().out
    # best forward config 0.128896 ms vs cuDNN 0.02104 ms; weight-grad's best split is 6
    assert "| resnet50.layer4.0.conv1 | 0.129/0.021 = 6.13 |" in out
    assert "0.248/0.026 = 9.61 s6 |" in out
    # LRN backward: 175.6 MB planned in 0.307 ms = 0.572 TB/s, 19.1% of 3.0 TB/s
    assert "| alexnet.features.norm1:backward | 175.559 | 0.307 | 0.572 | 19.075 |" in out
    assert "| alexnet | 12218.100 | 7405.300 | 11554.500 |" in out


def test_best_split_is_kept_per_layer():
    import pandas as pd

    mod = _module()
    sweep = pd.DataFrame([
        {"item": "l:wgrad/split2", "layer": "l", "kind": "conv", "pass": "wgrad", "split_k": 2, "status": "ok",
         "ms": 0.3, "cudnn_ms": 0.1},
        {"item": "l:wgrad/split2", "layer": "l", "kind": "conv", "pass": "wgrad", "split_k": 2, "status": "ok",
         "ms": 0.2, "cudnn_ms": 0.1},
        {"item": "l:wgrad/split4", "layer": "l", "kind": "conv", "pass": "wgrad", "split_k": 4, "status": "ok",
         "ms": 0.25, "cudnn_ms": 0.1},
        {"item": "l:wgrad/split4", "layer": "l", "kind": "conv", "pass": "wgrad", "split_k": 4, "status": "wrong",
         "ms": 0.01, "cudnn_ms": 0.1},
    ])
    per_pass = mod.best_per_pass(mod.best_rows(sweep))
    assert len(per_pass) == 1 and per_pass.iloc[0].ms == 0.2 and per_pass.iloc[0].split_k == 2
