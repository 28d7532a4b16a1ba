"""The GPU sweep's pieces on the CPU: the layer list read off the nets, the items and their
configs, launch recording for compile planning, one item checked under every config (the
interpreter, fp16, no timing), the table built from the winners and the summary."""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path

import pytest
import torch

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
    # and the 1x1 GEMM path's kernels, whose items benchmarks/gpu_paths.py builds until
    # all_items appends them (see its docstring; tests/test_sweep_paths.py covers them)
    assert set(configs.TUNABLE) - {i.kernel for i in items} == {"_lrn_fwd_kernel", "_add_relu_fwd_kernel",
                                                                 "_relu_grad_kernel", "_conv1x1_fwd_kernel",
                                                                 "_conv1x1_dgrad_kernel", "_conv1x1_wgrad_kernel"}
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
    gpu_summary.main([str(tmp_path), "--out", str(tmp_path / "summary.txt")])
    text = (tmp_path / "summary.txt").read_text()
    assert "WRONG l:forward" in text and "geomean speedup vs cuDNN over 1 items: 2.000" in text
    assert "sweep rc=0" in text


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
    """The steps' own loops on the CPU: a compile worker launches its share of the plan; the
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
    assert sweep.step_compile(tmp_path, 2, "1/2", items=items, device=cpu) == 0
    launched = list(csv.DictReader((tmp_path / "compile-1.csv").open()))
    assert launched and all(r["status"] == "ok" for r in launched)

    assert sweep.step_sweep(tmp_path, tmp_path / "tuned", items=items, device=cpu) == 0
    rows = list(csv.DictReader((tmp_path / "sweep.csv").open()))
    follow = [r for r in rows if r["item"] == "conv:wgrad/split2"]
    assert len(follow) == 1 and all(r["status"] == "ok" for r in rows)
    table = tuned.load_table(tmp_path / "tuned" / tuned.table_path("cpu", None).name)
    kernels_in_table = sorted(e["kernel"] for e in table.entries)
    assert kernels_in_table == ["_add_relu_fwd_kernel", "_conv_fwd_kernel", "_conv_wgrad_kernel",
                                "_relu_grad_kernel"]
    assert all(configs.entry_problems(e) == [] for e in table.entries)
