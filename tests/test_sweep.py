"""The GPU sweep's pieces on the CPU: the layer list read off the nets, the items and their
configs, launch recording for compile planning, one item checked under every config (the
interpreter, fp16, no timing), the table built from the winners and the summary."""

from __future__ import annotations

import contextlib
import csv
import gzip
import importlib.util
import io
import json
import math
from pathlib import Path

import pandas as pd
import pytest
import torch
import triton

import kernels
from benchmarks import gpu_shapes, shapes, sweep
from kernels import configs, tuned

_SUMMARY = Path(__file__).resolve().parents[1] / "scripts" / "gpu_summary.py"
_spec = importlib.util.spec_from_file_location("gpu_summary", _SUMMARY)
gpu_summary = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gpu_summary)


@pytest.fixture(scope="module")
def layers():
    return gpu_shapes.all_layers()


def test_layers_come_from_the_nets_and_cover_the_named_shapes(layers):
    kinds = {layer.kind for layer in layers}
    # every LRN runs fused with its max-pool, ResNet's add+ReLU as its BatchNorm's epilogue
    assert kinds == {"conv", "inception", "max_pool", "lrn_pool", "batchnorm"}
    keys = [gpu_shapes._key(layer.kind, layer.shape) for layer in layers]
    assert len(keys) == len(set(keys))
    named = {name: layer.shape for layer in layers for name in layer.names}
    # every hand-written shape of benchmarks/shapes.py that names a layer of these nets is one
    # (an LRN: the LRN of its LRN + max-pool pair, at the LRN's own input)
    for s in shapes.CONV + shapes.LRN:
        if s.name.split(".")[0] in gpu_shapes.ARCHS:
            assert s.name in named, s.name
            got = named[s.name].lrn() if isinstance(named[s.name], gpu_shapes.LRNPoolShape) else named[s.name]
            assert gpu_shapes._key("x", got) == gpu_shapes._key("x", s), s.name
    assert len([lay for lay in layers if lay.kind == "inception"]) == 9
    by_kind = lambda kind: [lay for lay in layers if lay.kind == kind]
    # ResNet-50: 53 BatchNorms (the stem's, 3 per block in 16 blocks, 4 projection shortcuts);
    # each block's last one takes the residual add; all but the shortcuts' carry the ReLU
    bns = by_kind("batchnorm")
    assert sum(lay.count for lay in bns) == 53
    assert sum(lay.count for lay in bns if lay.shape.residual) == 16
    assert sum(lay.count for lay in bns if not lay.shape.relu) == 4
    (stem,) = [lay for lay in bns if lay.shape.pool is not None]
    assert stem.names == ["resnet50.bn1"] and stem.shape.C == 64 and stem.shape.H == 112
    assert gpu_shapes._key("p", stem.shape.pool) == ("p", 64, 112, 3, 2, 1, False)
    # the LRN + max-pool pairs, both orders, and the max-pools in no pair nor Inception block
    pairs = {(lay.shape.name, lay.shape.name_pool, lay.shape.order) for lay in by_kind("lrn_pool")}
    assert pairs == {("alexnet.features.norm1", "alexnet.features.pool1", "lrn_pool"),
                     ("alexnet.features.norm2", "alexnet.features.pool2", "lrn_pool"),
                     ("googlenet.norm1", "googlenet.maxpool1", "pool_lrn"),
                     ("googlenet.norm2", "googlenet.maxpool2", "lrn_pool")}
    pools = sorted(name for lay in by_kind("max_pool") for name in lay.names)
    assert pools == ["alexnet.features.pool5", "googlenet.maxpool3", "googlenet.maxpool4"]


def test_items_cover_every_layer_once(layers):
    items = sweep.all_items(layers)
    index = {(i.kernel, i.pass_, i.split_k, i.shape_key) for i in items}
    assert len(index) == len(items)
    names = {i.layer for i in items}
    for layer in layers:
        assert any(n == layer.name or n.startswith(layer.name + ".") for n in names), layer.name
    # every autotuned kernel runs in some item but the plain LRN forward and add+ReLU, which
    # no net runs any more (its LRNs are fused with their pools, its add+ReLU into BatchNorm),
    # the [P, C]-tile LRN backward (the stem's pooled map is channels_last: group kernels),
    # and the 1x1 GEMM path's kernels, whose items benchmarks/gpu_paths.py builds until
    # all_items appends them (see its docstring; tests/test_sweep_paths.py covers them), and
    # the TMA KxK path's (its items too are benchmarks/gpu_paths.py's)
    assert set(configs.TUNABLE) - {i.kernel for i in items} == {"_lrn_fwd_kernel", "_lrn_bwd_kernel",
                                                                 "_lrn_groups_fwd_kernel", "_add_relu_fwd_kernel",
                                                                 "_relu_grad_kernel", "_conv1x1_fwd_kernel",
                                                                 "_conv1x1_dgrad_kernel", "_conv1x1_wgrad_kernel",
                                                                 "_conv_tma_fwd_kernel", "_conv_tma_dgrad_kernel",
                                                                 "_conv_tma_wgrad_kernel"}
    assert {i.kernel for i in items} <= set(configs.TUNABLE)
    # the new kinds, forward and backward, at each of their layers
    for layer in layers:
        if layer.kind in ("max_pool", "lrn_pool", "batchnorm"):
            passes = {i.pass_ for i in items if i.layer == layer.name}
            assert {"forward", "backward"} <= passes, (layer.name, passes)
    conv_shapes = {lay.name: lay.shape for lay in layers if lay.kind == "conv"}
    for item in items:
        assert sweep.configs_for(item), item.id
        if item.kernel == "_conv_wgrad_kernel" and item.layer in conv_shapes:
            splits = sweep.wgrad_splits(conv_shapes[item.layer])
            assert item.split_k == splits[1 if item.follows else 0], item.id


def test_configs_for_drops_tiles_over_shared_memory():
    item = sweep.conv_items(shapes.ConvShape("t", 64, 8, 64, 3, padding=1), passes=("forward",))[0]
    kept = sweep.configs_for(item, shared_limit=100 * 1024)
    assert kept and all(configs.gemm_shared_bytes(c, 2) <= 100 * 1024 for c in kept)
    assert len(kept) < len(configs._GPU["conv_gemm"])


def test_compile_plan_counts_specializations_not_sizes(monkeypatch):
    monkeypatch.setattr(sweep, "BATCH", 16)
    a = sweep.conv_items(shapes.ConvShape("a", 64, 32, 64, 3, padding=1), passes=("forward",))
    b = sweep.conv_items(shapes.ConvShape("b", 128, 16, 128, 3, padding=1), passes=("forward",))
    stem = sweep.conv_items(shapes.ConvShape("s", 3, 32, 64, 7, stride=2, padding=3), passes=("forward",))
    n_configs = len(sweep.configs_for(a[0]))
    _, same = sweep.compile_plan(a + b, torch.device("cpu"))
    assert same == n_configs  # sizes differ, specializations (== 1, % 16) do not
    _, more = sweep.compile_plan(a + stem, torch.device("cpu"))
    assert more == 2 * n_configs  # C=3 runs the flattened-K loop: another constexpr


def test_sweep_item_checks_every_config(monkeypatch, tmp_path):
    monkeypatch.setattr(sweep, "BATCH", 2)
    item = sweep.conv_items(shapes.ConvShape("tiny", 5, 7, 6, 3, padding=1), passes=("forward",))[0]
    rows = sweep.Rows(tmp_path / "sweep.csv", sweep.SWEEP_FIELDS)
    entry = sweep.sweep_item(item, "cpu", rows, time_it=False)
    rows.close()
    lines = list(csv.DictReader((tmp_path / "sweep.csv").open()))
    assert [r["status"] for r in lines] == ["ok"] * len(sweep.configs_for(item))
    assert entry["kernel"] == "_conv_fwd_kernel" and entry["key"]["CG"] == 5 and entry["key"]["BATCH"] == 2

    wrong = sweep.Item(item.layer, item.kind, item.pass_, item.kernel, item.make, item.triton,
                       lambda i: lambda: kernels.conv2d(i["x"], i["w"], padding=1) + 1.0, item.reduction)
    rows = sweep.Rows(tmp_path / "wrong.csv", sweep.SWEEP_FIELDS)
    assert sweep.sweep_item(wrong, "cpu", rows, configs=sweep.configs_for(item)[:2], time_it=False) is None
    rows.close()
    assert [r["status"] for r in csv.DictReader((tmp_path / "wrong.csv").open())] == ["wrong"] * 2


def test_check_leaves_out_only_the_ambiguous_elements():
    """A flipped ReLU decision (a whole gradient apart) fails the check unless its element
    is marked ambiguous; an error elsewhere still fails."""
    ref = torch.linspace(1, 2, 10)
    out = ref.clone()
    out[3] = 0.0
    ambiguous = torch.zeros(10, dtype=torch.bool)
    assert not sweep.check(out, ref, 1)[0]
    ambiguous[3] = True
    assert sweep.check(out, ref, 1, ambiguous)[0]
    out[5] += 0.5
    assert not sweep.check(out, ref, 1, ambiguous)[0]


def test_best_entries_keep_the_fastest_split_and_make_a_usable_table(tmp_path):
    key = {k: 1 for k in configs.TUNABLE["_conv_wgrad_kernel"].keys}
    base = {"kernel": "_conv_wgrad_kernel", "family": "conv_wgrad", "dtype": "bfloat16", "layer": "l", "pass": "wgrad",
            "config": {"kwargs": {"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_K": 64}, "num_warps": 4, "num_stages": 3},
            "runner_up_ms": None, "cudnn_ms": 1.0}
    key.update(BATCH=4, P=16, Q=16)
    one = {**base, "key": {**key, "SPLIT_ROWS": 1024}, "split_k": 1, "ms": 2.0, "runner_up_ms": 2.2}
    two = {**base, "key": {**key, "SPLIT_ROWS": 512}, "split_k": 2, "ms": 1.5}
    best = sweep.best_entries([one, two])
    assert best == [{**two, "runner_up_ms": 2.0}]  # the runner-up is split 1's best config
    assert sweep.best_entries([one, {**two, "ms": 2.5}])[0]["runner_up_ms"] == 2.2  # split 1's second config
    path = tuned.write_table(tmp_path / "t.json", "test card", "3.6.0", best)
    assert all(configs.entry_problems(e) == [] for e in tuned.load_table(path).entries)


def test_summary_reads_a_work_folder(tmp_path, capsys):
    (tmp_path / "sweep").mkdir()
    rows = sweep.Rows(tmp_path / "sweep" / "sweep.csv", sweep.SWEEP_FIELDS)
    rows.add(item="l:forward", status="ok", ms=0.5, cudnn_ms=1.0, config='{"BLOCK": 1}', num_warps=4, num_stages=1)
    rows.add(item="l:forward", status="wrong", ms=None, cudnn_ms=1.0, config='{"BLOCK": 2}', num_warps=8,
             num_stages=1, err_over_bound=3.5)
    rows.close()
    (tmp_path / "steps.txt").write_text("sweep rc=0 10s limit=140s\n")
    (tmp_path / "compile").mkdir()
    (tmp_path / "compile" / "compile-plan.json").write_text(json.dumps({"launches": [{}, {}, {}]}))
    for worker, seconds in ((0, [1.0, 14.0]), (1, [2.0])):
        rows = sweep.Rows(tmp_path / "compile" / f"compile-{worker}.csv", sweep.COMPILE_FIELDS)
        for s in seconds:
            rows.add(launch=0, worker=worker, item=f"i{s}", config="c", status="ok", s=s)
        rows.close()
    (tmp_path / "correct-progress.csv").write_text("nodeid,outcome,duration_s\nt.py::a,passed,1.5\n"
                                                   "t.py::b,failed,2.5\nt.py::c,error in setup,0.1\n")
    (tmp_path / "correct-failures.txt").write_text("=== FAILED t.py::b (call, 2.50 s)\nAssertionError\n\n"
                                                   "=== FAILED t.py::c (setup, 0.10 s)\nRuntimeError\n\n")
    (tmp_path / "nets").mkdir()
    (tmp_path / "nets" / "nets.csv").write_text("arch,backend,images_per_s,first_step_s,table_hits,table_misses,"
                                                "status,error\nalexnet,triton,100.0,1.0,70,14,ok,\n")
    (tmp_path / "nets" / "nets-misses.csv").write_text("arch,backend,kernel,dtype,key,launches\n"
                                                       "alexnet,triton,_k,bfloat16,{},7\n"
                                                       "alexnet,triton,_k,bfloat16,{},7\n")
    gpu_summary.main([str(tmp_path), "--out", str(tmp_path / "summary.txt")])
    text = (tmp_path / "summary.txt").read_text()
    assert "WRONG l:forward" in text and "geomean speedup vs cuDNN over 1 items: 2.000" in text
    assert "sweep rc=0" in text
    assert "compile: 3 of 3 planned launches {'ok': 3}, 17 worker-seconds, slowest 14.0 s (i14.0)" in text
    assert "per worker (launches, seconds): 0: 2, 15, 1: 1, 2" in text
    assert "reported as they finished: 3 {'passed': 1, 'failed': 1, 'error in setup': 1}" in text
    assert "  FAILED t.py::b (call, 2.50 s)" in text and "  FAILED t.py::c (setup, 0.10 s)" in text
    assert "alexnet triton: _k 2, 14" in text


def _tiny_items():
    conv = sweep.conv_items(shapes.ConvShape("conv", 20, 9, 6, 3, stride=2, padding=1))
    block = sweep.inception_items(gpu_shapes.InceptionShape("block", 19, 5, 4, 3, 5, 2, 3, 4))
    pool = gpu_shapes.PoolShape("pool", 6, 7, 3, 2, 1)
    lrn_pool = [gpu_shapes.LRNPoolShape("norm", "pool", order, 7, 7, 5, 0.5, 0.75, 2.0, 3, 2, 0, True)
                for order in ("lrn_pool", "pool_lrn")]
    bns = [gpu_shapes.BNShape("bn", 5, 4), gpu_shapes.BNShape("bn_relu_add", 5, 4, relu=True, residual=True),
           gpu_shapes.BNShape("stem", 5, 7, relu=True, pool=pool)]
    return (conv + block + sweep.lrn_items(shapes.LRNShape("lrn", 7, 5))
            + sweep.add_relu_items(shapes.EltwiseShape("add", 5, 3)) + sweep.max_pool_items(pool)
            + [i for s in lrn_pool for i in sweep.lrn_pool_items(s)] + [i for s in bns for i in sweep.bn_items(s)])


@pytest.mark.parametrize("n", range(len(_tiny_items())))
def test_every_item_kind_agrees_with_its_reference(n, monkeypatch, tmp_path):
    """Each pass of each kind (conv forward / data-grad / weight-grad, the Inception GEMMs and
    their 1x1 backward, LRN, add+ReLU, max-pool, both LRN + max-pool orders, BatchNorm plain,
    with ReLU and residual, and the stem's BatchNorm + ReLU + max-pool, forward and backward)
    under two configs."""
    monkeypatch.setattr(sweep, "BATCH", 2)
    item = _tiny_items()[n]
    rows = sweep.Rows(tmp_path / "rows.csv", sweep.SWEEP_FIELDS)
    entry = sweep.sweep_item(item, "cpu", rows, configs=sweep.configs_for(item)[:2], time_it=False)
    rows.close()
    statuses = [r["status"] for r in csv.DictReader((tmp_path / "rows.csv").open())]
    assert statuses == ["ok"] * len(statuses) and statuses, (item.id, statuses)
    assert entry["kernel"] == item.kernel and set(entry["key"]) == set(configs.TUNABLE[item.kernel].keys)


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")  # compile launches read empty inputs
def test_compile_worker_and_sweep_steps_run_their_items(monkeypatch, tmp_path):
    """The steps' own loops on the CPU: a compile worker launches the whole plan alone; the
    sweep checks every item, times it (a CPU wall-clock timer stands in for do_bench: not a
    GPU number, and only in tmp_path), lets the split follow-up time the winner alone, and
    writes a table every kernel can use."""
    monkeypatch.setattr(sweep, "BATCH", 2)
    monkeypatch.setattr(sweep, "do_bench", lambda fn: (fn(), 1.0)[1])
    every = sweep.configs_for
    monkeypatch.setattr(sweep, "configs_for", lambda item: every(item)[:2])  # two per kernel: quick
    conv = shapes.ConvShape("conv", 20, 9, 6, 3, stride=2, padding=1)
    items = sweep.conv_items(conv, passes=("forward", "wgrad"), splits=[1, 2]) + sweep.add_relu_items(
        shapes.EltwiseShape("add", 5, 3))
    cpu = torch.device("cpu")
    launches, _ = sweep.write_compile_plan(tmp_path, items, cpu)
    assert sweep.compile_worker(tmp_path, 1, items=items, device=cpu) == launches
    launched = list(csv.DictReader((tmp_path / "compile-1.csv").open()))
    assert len(launched) == launches and all(r["status"] == "ok" for r in launched)

    assert sweep.step_sweep(tmp_path, tmp_path / "tuned", items=items, device=cpu) == 0
    rows = list(csv.DictReader((tmp_path / "sweep.csv").open()))
    follow = [r for r in rows if r["item"] == "conv:wgrad/split2"]
    assert len(follow) == 1 and all(r["status"] == "ok" for r in rows)
    table = tuned.load_table(tmp_path / "tuned" / tuned.table_path("cpu", None).name)
    kernels_in_table = sorted(e["kernel"] for e in table.entries)
    assert kernels_in_table == ["_add_relu_fwd_kernel", "_conv_fwd_kernel", "_conv_wgrad_kernel",
                                "_relu_grad_kernel"]
    assert all(configs.entry_problems(e) == [] for e in table.entries)


def _small_net(monkeypatch):
    """A conv (forward, weight-grad at split counts 1 and 2) and an add+ReLU at batch 2, two
    configs per kernel."""
    monkeypatch.setattr(sweep, "BATCH", 2)
    every = sweep.configs_for
    monkeypatch.setattr(sweep, "configs_for", lambda item: every(item)[:2])
    conv = shapes.ConvShape("conv", 20, 9, 6, 3, stride=2, padding=1)
    return sweep.conv_items(conv, passes=("forward", "wgrad"), splits=[1, 2]) + sweep.add_relu_items(
        shapes.EltwiseShape("add", 5, 3))


def _entry(item, config, device="cpu") -> dict:
    """A bf16 table entry for the item's launch (a made-up time: only the lookup is tested)."""
    return {"kernel": item.kernel, "family": item.family, "layer": item.layer, "pass": item.pass_,
            "dtype": "bfloat16", "key": sweep.launch_key(item, torch.device(device)),
            "config": tuned.config_to_json(config), "split_k": item.split_k, "ms": 1.0, "runner_up_ms": None,
            "cudnn_ms": 1.0}


def test_table_coverage_serves_swept_items_and_plans_the_rest(monkeypatch):
    """With a table holding the conv forward and the weight-grad at split 1: those two are
    served under the table's config (one in no config list), split 2 of the swept geometry is
    neither served nor lacking, the add+ReLU passes are lacking; the compile launches are
    every config of the lacking items, the table's config of the served ones, then every
    config of the items past the sweep's."""
    items = _small_net(monkeypatch)
    forward, wgrad1 = items[:2]
    odd = triton.Config({"BLOCK_M": 32, "BLOCK_N": 32, "BLOCK_K": 32, "GROUP_M": 1}, num_warps=2, num_stages=2)
    wgrad_config = sweep.configs_for(wgrad1)[1]
    table = tuned.Table("cpu", "3.6", [_entry(forward, odd), _entry(wgrad1, wgrad_config)])
    cpu = torch.device("cpu")
    served, lacking = sweep.table_coverage(items, table, cpu)
    assert served == [(0, odd), (1, wgrad_config)]
    assert lacking == [3, 4]
    pairs = sweep.needed_launches(items, table, cpu, n_sweep=4)
    every = lambda n: [(n, c) for c in sweep.configs_for(items[n])]
    assert pairs == every(3) + served + every(4)
    assert sweep.needed_launches(items, None, cpu) == [p for n in range(5) for p in every(n)]
    # an item known to spill under every config: only its first config, as the nets launch it
    assert sweep.needed_launches(items, table, cpu, n_sweep=4, skip={"add:forward"}) == every(3)[:1] + served + every(4)


def test_known_spills_reads_earlier_rows(tmp_path):
    path = tmp_path / "sweep.csv.gz"
    with gzip.open(path, "wt", newline="") as f:
        f.write("item,status\na:forward,spills\na:forward,spills\nb:forward,spills\nb:forward,ok\nc:dgrad,error\n")
    assert sweep.known_spills(path) == {"a:forward"}


def test_compile_plan_puts_the_longest_compiles_first(monkeypatch):
    monkeypatch.setattr(sweep, "BATCH", 2)
    lrn_pool = gpu_shapes.LRNPoolShape("norm", "pool", "lrn_pool", 7, 7, 5, 0.5, 0.75, 2.0, 3, 2, 0, True)
    items = sweep.add_relu_items(shapes.EltwiseShape("add", 5, 3)) + sweep.lrn_pool_items(lrn_pool)[:1]
    todo, distinct = sweep.compile_plan(items, torch.device("cpu"))
    families = [items[n].family for n, _ in todo]
    assert len(todo) == distinct and families[:len(sweep.configs_for(items[2]))] == ["lrn"] * len(
        sweep.configs_for(items[2]))
    lrn_tiles = [c.kwargs["BLOCK_P"] for n, c in todo if items[n].family == "lrn"]
    assert lrn_tiles == sorted(lrn_tiles, reverse=True)


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")  # compile launches read empty inputs
@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
def test_compile_workers_claim_each_launch_once(monkeypatch, tmp_path):
    """Workers share the plan dynamically: a launch another worker claimed is not run again,
    and a worker that starts when every launch is claimed runs none."""
    items = _small_net(monkeypatch)
    cpu = torch.device("cpu")
    launches, _ = sweep.write_compile_plan(tmp_path, items, cpu)
    assert launches >= 4
    (tmp_path / "claims" / "0").touch()  # another worker has it
    (tmp_path / "claims" / "2").touch()
    assert sweep.compile_worker(tmp_path, 0, items=items, device=cpu) == launches - 2
    assert sweep.compile_worker(tmp_path, 1, items=items, device=cpu) == 0
    rows = list(csv.DictReader((tmp_path / "compile-0.csv").open()))
    assert [int(r["launch"]) for r in rows] == [k for k in range(launches) if k not in (0, 2)]
    assert all(r["status"] == "ok" and r["worker"] == "0" for r in rows)
    assert list(csv.DictReader((tmp_path / "compile-1.csv").open())) == []
    with pytest.raises(RuntimeError, match="another item list"):  # a plan made from other items
        (tmp_path / "claims" / "1").unlink()
        sweep.compile_worker(tmp_path, 2, items=items[::-1], device=cpu)


def test_sweep_completes_a_base_table(monkeypatch, tmp_path, capsys):
    """With a base table, the sweep checks and times only the items it lacks and that are not
    known to spill everywhere, and writes the base entries with the new winners; `full`
    sweeps every item into a fresh table."""
    items = _small_net(monkeypatch)
    monkeypatch.setattr(sweep, "do_bench", lambda fn: (fn(), 1.0)[1])  # a CPU stand-in, not a GPU time
    base = tuned.Table("cpu", "3.6", [_entry(items[0], sweep.configs_for(items[0])[0]),
                                      _entry(items[1], sweep.configs_for(items[1])[0])], source="base.json")
    cpu = torch.device("cpu")
    assert sweep.step_sweep(tmp_path, tmp_path / "tuned", items=items, device=cpu, base=base,
                            skip={"add:backward", "conv:forward"}) == 0
    assert ("sweep: 4 of 5 items skipped: 3 the table base.json has, 1 every config of which spilled before "
            "(add:backward); 1 to sweep: add:forward") in capsys.readouterr().out
    rows = list(csv.DictReader((tmp_path / "sweep.csv").open()))
    assert {r["item"] for r in rows} == {"add:forward"}
    path = tmp_path / "tuned" / tuned.table_path("cpu", None).name
    table = tuned.load_table(path)
    assert table.entries[:2] == base.entries
    assert [e["kernel"] for e in table.entries[2:]] == ["_add_relu_fwd_kernel"]
    assert json.loads(path.read_text())["items_done"] == 5

    full = tmp_path / "full"
    full.mkdir()
    assert sweep.step_sweep(full, full / "tuned", items=items, device=cpu, base=base, full=True) == 0
    assert {r["item"] for r in csv.DictReader((full / "sweep.csv").open())} == {i.id for i in items}
    assert all(e["dtype"] == "float32" for e in tuned.load_table(full / "tuned" / path.name).entries)


def test_bench_rows_on_the_cpu(monkeypatch, tmp_path):
    """The bench step's rows: the copy, each memory-bound item beside its ATen op as % of the
    copy's bandwidth, each Inception block four ways (a CPU timer stands in for do_bench: not
    a GPU number, and only in tmp_path)."""
    monkeypatch.setattr(sweep, "BATCH", 2)
    monkeypatch.setenv("CONVBENCH_TUNED", "off")
    times = iter(range(1, 1000))
    monkeypatch.setattr(sweep, "do_bench", lambda fn: (fn(), float(next(times)))[1])
    every = sweep.configs_for
    monkeypatch.setattr(sweep, "configs_for", lambda item: every(item)[:2])
    pool = gpu_shapes.PoolShape("pool", 6, 7, 3, 2, 1)
    items = sweep.max_pool_items(pool) + sweep.bn_items(gpu_shapes.BNShape("bn", 5, 4, relu=True))
    block = gpu_shapes.InceptionShape("block", 19, 5, 4, 3, 5, 2, 3, 4)
    assert sweep.step_bench(tmp_path, items=items, blocks=[block], device=torch.device("cpu"), copy_numel=1000) == 0
    rows = list(csv.DictReader((tmp_path / "bench.csv").open()))
    copy = rows[0]
    assert copy["what"] == "copy" and float(copy["ms"]) == 1.0 and float(copy["nbytes"]) == 2 * 1000 * 4
    copy_tbps = 8000 / 1e-3 / 1e12
    memory = [r for r in rows if r["what"] == "memory"]
    assert [(r["item"], r["variant"]) for r in memory] == [(i.id, v) for i in items for v in ("triton", "aten")]
    for r, item in zip(memory, [i for i in items for _ in range(2)]):
        assert r["status"] == "ok", r
        tbps = item.nbytes / (float(r["ms"]) * 1e-3) / 1e12
        assert float(r["tb_per_s"]) == pytest.approx(tbps)
        assert float(r["pct_of_copy"]) == pytest.approx(100 * tbps / copy_tbps)
    assert {r["table"] for r in memory if r["variant"] == "triton"} == {"none"}  # tables off
    inception = {r["variant"]: r for r in rows if r["what"] == "inception"}
    assert set(inception) == {"fused_triton", "concat_cudnn", "separate_triton", "separate_cudnn"}
    assert all(r["status"] == "ok" and r["item"] == "block" for r in inception.values())
    assert [int(inception[v]["launches"]) for v in ("fused_triton", "separate_triton")] == [1, 3]
    branch_rows = list(csv.DictReader((tmp_path / "bench-configs.csv").open()))
    assert {r["item"] for r in branch_rows} == {"block.branch1:forward", "block.branch2.0:forward",
                                                "block.branch3.0:forward"}
    assert all(r["status"] == "ok" for r in branch_rows)
    # each branch's best config time plus the branches' cuDNN times, summed
    best = {}
    for r in branch_rows:
        best[r["item"]] = min(best.get(r["item"], math.inf), float(r["ms"]))
    assert float(inception["separate_triton"]["ms"]) == sum(best.values())
    assert float(inception["separate_cudnn"]["ms"]) == sum({float(r["cudnn_ms"]) for r in branch_rows})
    text = io.StringIO()
    with contextlib.redirect_stdout(text):
        gpu_summary.summarize_bench(pd.read_csv(tmp_path / "bench.csv"))
    text = text.getvalue()
    fused = float(inception["fused_triton"]["ms"])
    assert f"copy bandwidth {copy_tbps:.3f} TB/s" in text and "pool:backward" in text
    assert f" {round(float(inception['separate_triton']['ms']) / fused, 4):g} " in text  # separate / fused


def test_nets_step_counts_table_hits_and_misses(monkeypatch, tmp_path):
    """Per (net, backend), the launches the tuned table served and missed, and each missed
    key; the training step is a stand-in here (two add+ReLU launches the table has, one it
    lacks): img/s needs a GPU, the counting does not."""
    x = torch.randn(3, 5, 7)
    entry = {"kernel": "_add_relu_fwd_kernel", "family": "mem_bound", "dtype": "float32", "key": {"numel": x.numel()},
             "config": {"kwargs": {"BLOCK": 64}, "num_warps": 4, "num_stages": 1}, "split_k": None, "ms": 1.0,
             "runner_up_ms": None, "cudnn_ms": 1.0}
    monkeypatch.setenv("CONVBENCH_TUNED", str(tuned.write_table(tmp_path / "t.json", "cpu", "3.6.0", [entry])))

    def train(arch, backend, device):
        if backend == "triton":
            kernels.add_relu(x, x)
            kernels.add_relu(x, x)
            kernels.add_relu(x[:1], x[:1])
        return 100.0, 1.0

    monkeypatch.setattr(sweep, "_device", lambda: torch.device("cpu"))
    monkeypatch.setattr(sweep, "train_images_per_s", train)
    assert sweep.step_nets(tmp_path, ["alexnet"], ["torch", "triton"]) == 0
    rows = list(csv.DictReader((tmp_path / "nets.csv").open()))
    assert [(r["backend"], r["table_hits"], r["table_misses"]) for r in rows] == [("torch", "0", "0"),
                                                                                  ("triton", "2", "1")]
    (missed,) = csv.DictReader((tmp_path / "nets-misses.csv").open())
    assert (missed["backend"], missed["kernel"], missed["launches"]) == ("triton", "_add_relu_fwd_kernel", "1")
    assert json.loads(missed["key"]) == {"numel": x[:1].numel()}


def test_paths_step_writes_dispatch_records_beside_the_base_table(monkeypatch, tmp_path):
    """`sweep paths`: a 1x1 layer's 1x1-path items swept against a base table holding its
    generic winners; the written table keeps the base's entries, adds the 1x1 winners, and
    records which path won each pass (made-up CPU times: the 1x1 path is timed faster here)."""
    from benchmarks import gpu_paths

    monkeypatch.setattr(sweep, "BATCH", 2)
    every = sweep.configs_for
    monkeypatch.setattr(sweep, "configs_for", lambda item: every(item)[:1])
    layer = shapes.ConvShape("l1x1", 16, 5, 32, 1)
    generic = sweep.conv_items(layer, passes=("forward", "dgrad"))
    path = [i for i in gpu_paths.conv1x1_items(layer, ("forward", "dgrad"))]
    assert {i.kernel for i in path} == {"_conv1x1_fwd_kernel", "_conv1x1_dgrad_kernel"}
    cpu = torch.device("cpu")
    base_entries = [dict(_entry(i, every(i)[0]), ms=2.0, dtype="float32") for i in generic]
    base = tuned.Table("cpu", "3.9", base_entries, source="base.json")
    monkeypatch.setattr(sweep, "do_bench", lambda fn: (fn(), 1.0)[1])  # every 1x1 timing: 1.0 < 2.0
    assert sweep.step_sweep(tmp_path, tmp_path / "tuned", items=path, device=cpu, base=base, dispatch=True) == 0
    table = tuned.load_table(tmp_path / "tuned" / tuned.table_path("cpu", None).name)
    assert sorted(e["kernel"] for e in table.entries) == sorted(
        ["_conv_fwd_kernel", "_conv_dgrad_kernel", "_conv1x1_fwd_kernel", "_conv1x1_dgrad_kernel"])
    sites = {r["site"]: r for r in table.dispatch}
    assert set(sites) == {"conv_forward", "conv_dgrad"}
    assert all(r["path"] == "gemm1x1" and r["ms"] == {"generic": 2.0, "gemm1x1": 1.0} for r in sites.values())
    assert sites["conv_forward"]["key"] == {"PIXELS": 2 * 5 * 5, "C": 16, "K": 32}
