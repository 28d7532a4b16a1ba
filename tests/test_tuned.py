"""The tuned-table lookup inside the autotuner, the table files, and re-run safety of the
kernels that write in place, all on the CPU (interpreter): a synthetic table lives in
tmp_path; no table is fabricated in the repository."""

from __future__ import annotations

import json
import time

import pytest
import torch
import torch.nn.functional as F
import triton

import kernels
import kernels.conv as conv
import kernels.residual as residual
from kernels import configs, tuned

from .helpers import assert_close

TWO_BLOCKS = [triton.Config({"BLOCK": 64}, num_warps=4), triton.Config({"BLOCK": 128}, num_warps=4)]


def _cpu_bench(calls: list):
    """A do_bench for the interpreter: runs the config twice (as a GPU bench re-runs it) and
    returns wall seconds; `calls` counts benchmark invocations."""
    def bench(kernel_call, quantiles=None):
        calls.append(1)
        start = time.perf_counter()
        kernel_call()
        kernel_call()
        t = time.perf_counter() - start
        return [t, t, t] if quantiles else t
    return bench


def _add_relu_entry(numel: int, block: int, dtype="float32") -> dict:
    return {"kernel": "_add_relu_fwd_kernel", "family": "mem_bound", "layer": "synthetic", "pass": "forward",
            "dtype": dtype, "key": {"numel": numel},
            "config": {"kwargs": {"BLOCK": block}, "num_warps": 4, "num_stages": 1},
            "split_k": None, "ms": 1.0, "runner_up_ms": 2.0, "cudnn_ms": 1.5}


def _use_table(monkeypatch, tmp_path, entries) -> tuned.Table:
    path = tuned.write_table(tmp_path / "cpu-test-triton3.6.json", "cpu test", "3.6.0", entries)
    monkeypatch.setenv("CONVBENCH_TUNED", str(path))
    return tuned.load_table(path)


def test_table_hit_launches_its_config_without_benchmarking(monkeypatch, tmp_path, device):
    calls = []
    tuner = residual._add_relu_fwd_kernel.with_configs(TWO_BLOCKS, do_bench=_cpu_bench(calls))
    monkeypatch.setattr(residual, "_add_relu_fwd_kernel", tuner)
    x, r = torch.randn(3, 5, 7, device=device), torch.randn(3, 5, 7, device=device)
    _use_table(monkeypatch, tmp_path, [_add_relu_entry(x.numel(), 32)])
    y = kernels.add_relu(x, r)
    assert calls == []
    assert tuner.best_config.kwargs == {"BLOCK": 32}  # the table's, in neither config list
    assert_close(y, F.relu(x.double() + r.double()))


def test_table_miss_autotunes(monkeypatch, tmp_path, device):
    calls = []
    tuner = residual._add_relu_fwd_kernel.with_configs(TWO_BLOCKS, do_bench=_cpu_bench(calls))
    monkeypatch.setattr(residual, "_add_relu_fwd_kernel", tuner)
    x, r = torch.randn(3, 5, 7, device=device), torch.randn(3, 5, 7, device=device)
    _use_table(monkeypatch, tmp_path, [_add_relu_entry(x.numel() + 1, 32), _add_relu_entry(x.numel(), 32, "float16")])
    y = kernels.add_relu(x, r)
    assert len(calls) == 2  # one benchmark per config: other numel and other dtype both miss
    assert tuner.best_config in TWO_BLOCKS
    assert_close(y, F.relu(x.double() + r.double()))


def test_table_hits_and_misses_are_counted(monkeypatch, tmp_path, device):
    """Each launch a table serves counts a hit for its kernel, each one it cannot serve a miss
    under its dtype and key; forced launches and launches with the tables off count neither."""
    calls = []
    tuner = residual._add_relu_fwd_kernel.with_configs(TWO_BLOCKS, do_bench=_cpu_bench(calls))
    monkeypatch.setattr(residual, "_add_relu_fwd_kernel", tuner)
    x, r = torch.randn(3, 5, 7, device=device), torch.randn(3, 5, 7, device=device)
    _use_table(monkeypatch, tmp_path, [_add_relu_entry(x.numel(), 32)])
    configs.reset_table_counts()
    kernels.add_relu(x, r)
    kernels.add_relu(x, r)
    kernels.add_relu(x[:2], r[:2])
    with configs.forced_config("_add_relu_fwd_kernel", TWO_BLOCKS[0]):
        kernels.add_relu(x, r)
    monkeypatch.setenv("CONVBENCH_TUNED", "off")
    kernels.add_relu(x[:1], r[:1])
    assert configs.TABLE_HITS == {"_add_relu_fwd_kernel": 2}
    missed = ("_add_relu_fwd_kernel", "float32", (("numel", x[:2].numel()),))
    assert dict(configs.TABLE_MISSES) == {missed: 1}
    configs.reset_table_counts()
    assert not configs.TABLE_HITS and not configs.TABLE_MISSES


@pytest.mark.parametrize("restore", [True, False])
def test_inplace_add_relu_first_call_correct_under_autotuning(monkeypatch, restore, device):
    """Tuning re-runs the kernel on the same buffers; in place, each re-run would add the
    residual again unless x is restored. Without restore_value the answer is wrong (the check
    can fail), with the decorator's restore_value it is right."""
    calls = []
    extra = {} if restore else {"restore_value": []}
    tuner = residual._add_relu_fwd_kernel.with_configs(TWO_BLOCKS, do_bench=_cpu_bench(calls), **extra)
    monkeypatch.setattr(residual, "_add_relu_fwd_kernel", tuner)
    monkeypatch.setenv("CONVBENCH_TUNED", "off")
    x = torch.rand(2, 3, 5, 5, device=device) + 0.5  # positive: every re-run's extra residual shows
    r = torch.rand(2, 3, 5, 5, device=device) + 0.5
    expected = F.relu(x.double() + r.double())
    y = kernels.add_relu(x, r, inplace=True)
    assert len(calls) == 2 and y.data_ptr() == x.data_ptr()
    if restore:
        assert_close(y, expected)
    else:
        assert (y.double() - expected).abs().max() > 0.4


def test_every_other_tunable_is_rerun_safe():
    """The audit, kept honest: kernels that may write over an input carry restore_value;
    none accumulates (split-K partials are stored, not added), so no reset_to_zero."""
    safe_by_design = {"_conv_fwd_kernel", "_conv_dgrad_kernel", "_conv_wgrad_kernel", "_pointwise_fwd_kernel",
                      "_lrn_fwd_kernel", "_lrn_bwd_kernel", "_lrn_groups_fwd_kernel", "_lrn_groups_bwd_kernel",
                      "_relu_grad_kernel",
                      # outputs freshly allocated by their launchers, every element stored
                      # (not added): the pool gather sums in registers; the LRN + pool
                      # backward writes its dx scratch before reading it, as the LRN backward;
                      # the pool + LRN forward re-stores the pooled map it reads back
                      "_max_pool_fwd_kernel", "_max_pool_bwd_kernel", "_lrn_pool_fwd_kernel",
                      "_lrn_pool_bwd_kernel", "_pool_lrn_fwd_kernel", "_bn_fwd_kernel", "_bn_bwd_dx_kernel",
                      "_bn_relu_pool_fwd_kernel",
                      # the 1x1 GEMMs overwrite their fresh (or caller's) outputs; weight-grad
                      # partials are stored per split, then summed
                      "_conv1x1_fwd_kernel", "_conv1x1_dgrad_kernel", "_conv1x1_wgrad_kernel",
                      # the TMA KxK convs overwrite their fresh (or caller's) outputs; weight-grad
                      # partials are stored per split, then summed
                      "_conv_tma_fwd_kernel", "_conv_tma_dgrad_kernel", "_conv_tma_wgrad_kernel"}
    assert set(configs.TUNABLE) == safe_by_design | {"_add_relu_fwd_kernel"}
    assert configs.TUNABLE["_add_relu_fwd_kernel"].restore_value == ["x_ptr"]
    assert all(not configs.TUNABLE[name].restore_value and not configs.TUNABLE[name].reset_to_zero
               for name in safe_by_design)


def test_forced_config_overrides_table_and_restores(monkeypatch, tmp_path, device):
    x, r = torch.randn(40, device=device), torch.randn(40, device=device)
    _use_table(monkeypatch, tmp_path, [_add_relu_entry(x.numel(), 32)])
    tuner = configs.TUNABLE["_add_relu_fwd_kernel"]
    with configs.forced_config("_add_relu_fwd_kernel", triton.Config({"BLOCK": 16}, num_warps=2)):
        y = kernels.add_relu(x, r)
        assert tuner.best_config.kwargs == {"BLOCK": 16}
    assert_close(y, F.relu(x.double() + r.double()))
    kernels.add_relu(x, r)
    assert tuner.best_config.kwargs == {"BLOCK": 32}
    with pytest.raises(ValueError, match="kernel must be one of"), \
            configs.forced_config("_nope", triton.Config({"BLOCK": 16})):
        pass


def test_wgrad_split_count_comes_from_the_table(monkeypatch, tmp_path, device):
    x = torch.randn(2, 4, 6, 6, device=device)
    w = torch.randn(5, 4, 3, 3, device=device)
    geo = conv.conv_geometry(x, w, 1, 1)
    rows = geo.N * geo.P * geo.Q
    key = {"BATCH": 2, "H": 6, "W": 6, "CG": 4, "P": 6, "Q": 6, "KG": 5, "R": 3, "S": 3, "stride_h": 1,
           "stride_w": 1, "dil_h": 1, "dil_w": 1,
           "FLAT_K": True, "DOT_PRECISION": "ieee", "SPLIT_ROWS": triton.cdiv(rows, 3)}
    entry = {"kernel": "_conv_wgrad_kernel", "family": "conv_wgrad", "dtype": "float32", "key": key,
             "config": {"kwargs": {"BLOCK_M": 16, "BLOCK_N": 16, "BLOCK_K": 16}, "num_warps": 4, "num_stages": 1},
             "split_k": 3, "ms": 1.0, "runner_up_ms": None, "cudnn_ms": 1.2}
    assert configs.entry_problems(entry) == []
    monkeypatch.setenv("CONVBENCH_TUNED", "off")
    heuristic = conv._wgrad_splits(geo, x.device, None)
    _use_table(monkeypatch, tmp_path, [entry])
    assert heuristic != 3
    assert conv._wgrad_splits(geo, x.device, None) == 3
    assert conv._wgrad_splits(geo, x.device, None, torch.float32) == 3
    assert conv._wgrad_splits(geo, x.device, None, torch.bfloat16) == heuristic
    assert conv._wgrad_splits(geo, x.device, 2) == 2  # an explicit split still wins


def test_entry_problems_name_what_no_kernel_can_use():
    good = _add_relu_entry(100, 64)
    assert configs.entry_problems(good) == []
    cases = [
        ({"kernel": "_conv_nope"}, "unknown kernel"),
        ({"family": "conv_gemm"}, "family"),
        ({"key": {"numel": 100, "BATCH": 1}}, "autotune key"),
        ({"config": {"kwargs": {"BLOCK_M": 64}, "num_warps": 4, "num_stages": 1}}, "tuned constexprs"),
        ({"config": {"kwargs": {"BLOCK": 64}, "num_warps": 3, "num_stages": 1}}, "num_warps"),
        ({"split_k": 4}, "split_k must be null"),
        ({"dtype": "int8"}, "dtype"),
        ({"ms": None}, "measured"),
    ]
    for change, words in cases:
        problems = configs.entry_problems({**good, **change})
        assert any(words in p for p in problems), (change, problems)
    wgrad = {"kernel": "_conv_wgrad_kernel", "family": "conv_wgrad", "dtype": "bfloat16",
             "key": {k: 1 for k in configs.TUNABLE["_conv_wgrad_kernel"].keys} | {"SPLIT_ROWS": 5},
             "config": {"kwargs": {"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_K": 64}, "num_warps": 4, "num_stages": 3},
             "split_k": 2, "ms": 1.0, "runner_up_ms": None, "cudnn_ms": None}
    assert any("SPLIT_ROWS" in p for p in configs.entry_problems(wgrad))
    tma = {**wgrad, "kernel": "_conv_tma_wgrad_kernel", "family": "conv_tma_wgrad",
           "key": {k: 1 for k in configs.TUNABLE["_conv_tma_wgrad_kernel"].keys} | {"SPLITS": 5},
           "config": {"kwargs": {"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_H": 8, "BLOCK_W": 8}, "num_warps": 4,
                      "num_stages": 3}}
    assert configs.entry_problems({**tma, "split_k": 5}) == []  # the TMA KxK weight-grad's key is the count
    assert any("SPLITS" in p for p in configs.entry_problems(tma))


def test_table_files_round_trip_and_reject_bad_files(tmp_path):
    entries = [_add_relu_entry(100, 64), _add_relu_entry(200, 128)]
    path = tuned.write_table(tuned.table_path("NVIDIA H100 80GB HBM3", "3.6.0", tmp_path),
                             "NVIDIA H100 80GB HBM3", "3.6.0", entries, torch="2.11.0")
    assert path.name == "nvidia-h100-80gb-hbm3-triton3.6.json"
    table = tuned.load_table(path)
    assert table.config("_add_relu_fwd_kernel", {"numel": 200}, "float32").kwargs == {"BLOCK": 128}
    assert table.config("_add_relu_fwd_kernel", {"numel": 300}, "float32") is None
    with pytest.raises(ValueError, match="repeats"):
        tuned.Table("c", "3.6", entries + entries[:1])
    with pytest.raises(ValueError, match="lacks"):
        tuned.Table("c", "3.6", [{"kernel": "_add_relu_fwd_kernel"}])
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"card": "x", "entries": []}))
    with pytest.raises(ValueError, match="triton"):
        tuned.load_table(bad)


def test_committed_tables_hold_only_usable_entries():
    """Every table under kernels/tuned/: named for its card and triton version, and every
    entry usable by a kernel (none committed until a GPU run measures one)."""
    paths = sorted(tuned.TABLE_DIR.glob("*.json"))
    if not paths:
        pytest.skip("no tuned table is committed yet (one lands only from a measured GPU run)")
    for path in paths:
        table = tuned.load_table(path)
        assert path == tuned.table_path(table.card, table.triton), path
        for entry in table.entries:
            assert configs.entry_problems(entry) == [], (path.name, entry)


def test_a_table_config_the_launch_cannot_stage_is_a_miss(monkeypatch):
    """The table's key leaves out DY_RELU, whose data-grad stages the ReLU mask's source
    beside grad_out: a config tuned without it that no longer fits the shared memory is
    counted a miss and autotuned past, never launched to fail."""
    big = triton.Config({"BLOCK_M": 256, "BLOCK_N": 128, "BLOCK_K": 64, "GROUP_M": 8}, num_warps=8, num_stages=3)
    assert configs.gemm_shared_bytes(big, 2) <= 232448 < configs.gemm_shared_bytes(big, 2, extra_a=True)

    class OneConfig:
        def config(self, kernel, key, dtype):
            return big

    monkeypatch.setattr(configs, "_shared_limit", lambda device: 232448)  # an H100's, off the GPU
    monkeypatch.setattr(configs.tuned, "table_for", lambda device: OneConfig())
    monkeypatch.setattr(configs, "TABLE_HITS", configs.Counter())
    monkeypatch.setattr(configs, "TABLE_MISSES", configs.Counter())
    tuner = configs.TUNABLE["_conv_dgrad_kernel"]
    args = (torch.empty(1, dtype=torch.float16),) + (0,) * (len(tuner.arg_names) - 1)
    monkeypatch.setattr(tuner, "last_key", {})
    assert tuner._choice(args, {"DY_RELU": False}) is big  # the variant it was tuned on fits
    assert tuner._choice(args, {"DY_RELU": True}) is None  # a miss: triton's autotuning takes over
    assert sum(configs.TABLE_HITS.values()) == 1 and sum(configs.TABLE_MISSES.values()) == 1
