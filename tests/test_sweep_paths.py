"""benchmarks/gpu_paths.py on the CPU: the 1x1-path sweep items of the nets' layers, one of
them checked under every config through the sweep's own `sweep_item` (the interpreter,
fp32, no timing), and the dispatch records derived from a table's entries."""

from __future__ import annotations

import pytest
import triton

from benchmarks import gpu_paths, gpu_shapes, shapes, sweep
from kernels import configs, tuned
from tests.helpers import LaunchRecorder


@pytest.fixture(scope="module")
def layers():
    return gpu_shapes.all_layers()


def test_path_items_cover_every_1x1_stride1_conv_once(layers):
    items = gpu_paths.path_items(layers, ["gemm1x1"])
    assert {i.kernel for i in items} == set(gpu_paths.KERNELS.values())
    assert all(i.kernel == gpu_paths.KERNELS[i.pass_] and not i.follows for i in items)
    index = [(i.kernel, i.pass_, i.shape_key) for i in items]
    assert len(index) == len(set(index))
    convs = [lay.shape for lay in layers if lay.kind == "conv" and gpu_paths.is_gemm1x1(lay.shape)]
    # ResNet-50's stride-1 reduce / expand 1x1s and GoogLeNet's conv2; no strided 1x1 (the
    # projection shortcuts and the first reduce of layers 2-4 stay generic)
    assert any(s.name.startswith("resnet50.") for s in convs) and any(s.name == "googlenet.conv2" for s in convs)
    assert not [i for i in items if i.shape_key[7] != 1]  # every item at stride 1
    for s in convs:
        assert {i.pass_ for i in items if i.layer == s.name} == {"forward", "dgrad", "wgrad"}, s.name
    blocks = [lay.shape for lay in layers if lay.kind == "inception"]
    for b in blocks:
        for suffix in ("fused1x1", "pool_proj"):
            assert {i.pass_ for i in items if i.layer == f"{b.name}.{suffix}"} <= {"dgrad", "wgrad"}
    # the generic sweep has an item of the same layer and pass for each path's (its dispatch rival)
    generic = {(i.layer, i.pass_) for i in sweep.all_items(layers)}
    every = gpu_paths.path_items(layers)
    assert {i.path for i in every} == set(gpu_paths.PATH_SPECS)
    assert all((i.layer, i.pass_) in generic for i in every)


def test_wgrad_split_is_what_the_launcher_asks_for():
    s = shapes.ConvShape("resnet50.layer4.0.conv3", 512, 7, 2048, 1)
    split = gpu_paths.wgrad_split(s, 128)
    # 6272 pixels, 16 x 4 tiles of 128: cdiv(264, 64) = 5 splits wanted -> shares of
    # cdiv(6272, 5) = 1255 rows, rounded up to 1280 (a multiple of 256) -> 5 shares
    assert split == 5


def test_a_1x1_item_checked_under_every_config(monkeypatch, tmp_path):
    monkeypatch.setattr(sweep, "BATCH", 2)
    items = gpu_paths.conv1x1_items(shapes.ConvShape("tiny", 24, 5, 40, 1))
    assert [i.pass_ for i in items] == ["forward", "dgrad", "wgrad"]
    for item in items:
        rows = sweep.Rows(tmp_path / f"{item.pass_}.csv", sweep.SWEEP_FIELDS)
        with LaunchRecorder() as rec:
            entry = sweep.sweep_item(item, "cpu", rows, configs=configs.configs(item.family), time_it=False)
        rows.close()
        assert entry is not None and entry["kernel"] == item.kernel, item.id
        assert rec.names()[item.kernel] >= 1 and not {"_conv_fwd_kernel", "_conv_dgrad_kernel",
                                                      "_conv_wgrad_kernel"} & set(rec.names())
        assert set(entry["key"]) >= {"PIXELS", "C", "K"} and entry["key"]["PIXELS"] == 50


def _entry(kernel, pass_, layer, ms, key, dtype="bfloat16"):
    family = configs.TUNABLE[kernel].family
    return {"kernel": kernel, "family": family, "layer": layer, "pass": pass_, "dtype": dtype, "key": key,
            "config": tuned.config_to_json(configs._GPU[family][0]), "split_k": None, "ms": ms,
            "runner_up_ms": None, "cudnn_ms": 0.05}


def test_dispatch_records_from_entries(tmp_path):
    k1 = {"PIXELS": 6272, "C": 2048, "K": 512, "USE_TMA": True, "DOT_PRECISION": "tf32"}
    generic_key = {"BATCH": 128, "H": 7, "W": 7, "CG": 2048, "P": 7, "Q": 7, "KG": 512}
    entries = [
        _entry("_conv_fwd_kernel", "forward", "resnet50.layer4.1.conv1", 0.129, generic_key),
        _entry("_conv1x1_fwd_kernel", "forward", "resnet50.layer4.1.conv1", 0.030, k1),
        _entry("_conv_dgrad_kernel", "dgrad", "resnet50.layer4.1.conv1", 0.040, generic_key),
        _entry("_conv1x1_dgrad_kernel", "dgrad", "resnet50.layer4.1.conv1", 0.050, k1),
        _entry("_conv_fwd_kernel", "forward", "resnet50.layer1.0.conv2", 0.2, generic_key | {"H": 56}),  # 3x3
        _entry("_conv1x1_fwd_kernel", "forward", "resnet50.layer4.1.conv1", 0.031, k1, dtype="float16"),  # alone
    ]
    records = gpu_paths.dispatch_records(entries)
    key = {"PIXELS": 6272, "C": 2048, "K": 512}
    assert records == [
        {"site": "conv_forward", "dtype": "bfloat16", "key": key, "path": "gemm1x1",
         "ms": {"gemm1x1": 0.030, "generic": 0.129}, "layer": "resnet50.layer4.1.conv1"},
        {"site": "conv_dgrad", "dtype": "bfloat16", "key": key, "path": "generic",
         "ms": {"gemm1x1": 0.050, "generic": 0.040}, "layer": "resnet50.layer4.1.conv1"},
    ]
    path = tuned.write_table(tmp_path / "t.json", "NVIDIA H100 80GB HBM3", triton.__version__, [],
                             dispatch=records)
    table = tuned.load_table(path)
    assert table.path("conv_forward", key, "bfloat16") == "gemm1x1"
    assert table.path("conv_dgrad", key, "bfloat16") == "generic"
    assert table.path("conv_wgrad", key, "bfloat16") is None


def test_path_items_take_their_path_without_a_forced_config(monkeypatch):
    """A path item's closure runs inside race.forced_path: with no config forced (the
    interpreter's rule alone would pick the generic kernel) it still launches the path's."""
    monkeypatch.setattr(sweep, "BATCH", 2)
    (item,) = gpu_paths.conv1x1_items(shapes.ConvShape("tiny", 24, 5, 40, 1), ("forward",))
    assert item.path == "gemm1x1" and item.id == "tiny:forward@gemm1x1"
    assert item.dispatch_key == {"PIXELS": 50, "C": 24, "K": 40}
    inputs = item.make("cpu", True)
    with LaunchRecorder() as rec:
        item.triton(inputs)()
    assert set(rec.names()) == {"_conv1x1_fwd_kernel"}


def test_dispatch_records_over_more_paths():
    """Entries that name their path and carry the layer's dispatch key: a record wherever the
    generic kernel and one or more other paths have winners, every path's time in it."""
    key = {"N": 128, "C": 3, "H": 224, "W": 224, "K": 64, "R": 7, "S": 7, "P": 112, "Q": 112, "stride_h": 2,
           "stride_w": 2, "pad_h": 3, "pad_w": 3, "dil_h": 1, "dil_w": 1, "groups": 1}
    rewritten = {"BATCH": 128, "H": 115, "W": 115, "CG": 16, "P": 112, "Q": 112, "KG": 64}
    stem = "resnet50.conv1"
    s2d = _entry("_conv_fwd_kernel", "forward", stem, 0.21, rewritten) | {"path": "s2d", "dispatch_key": key}
    entries = [_entry("_conv_fwd_kernel", "forward", stem, 0.35, {"BATCH": 128, "H": 224, "CG": 3}), s2d,
               _entry("_conv_dgrad_kernel", "dgrad", "googlenet.conv1", 0.3, {"CG": 3})]  # generic alone
    assert gpu_paths.dispatch_records(entries) == [
        {"site": "conv_forward", "dtype": "bfloat16", "key": key, "path": "s2d", "ms": {"generic": 0.35, "s2d": 0.21},
         "layer": stem}]
    # without the generic kernel's winner there is nothing to race against: no record
    assert gpu_paths.dispatch_records([s2d]) == []


def test_stem_items_run_the_s2d_path_under_every_config(monkeypatch, tmp_path):
    """A stem's s2d items (forward, weight-grad): every config checked through sweep_item on
    the space-to-depth path, the entry named for its path, keyed by the rewritten conv."""
    monkeypatch.setattr(sweep, "BATCH", 2)
    stem = shapes.ConvShape("tiny_stem", 3, 9, 8, 3, stride=2, padding=1)
    items = gpu_paths.conv_path_items(stem, "s2d")
    assert [(i.pass_, i.kernel, i.path) for i in items] == [("forward", "_conv_fwd_kernel", "s2d"),
                                                          ("wgrad", "_conv_wgrad_kernel", "s2d")]
    for item in items:
        rows = sweep.Rows(tmp_path / f"{item.pass_}.csv", sweep.SWEEP_FIELDS)
        with LaunchRecorder() as rec:
            entry = sweep.sweep_item(item, "cpu", rows, configs=configs.configs(item.family), time_it=False)
        rows.close()
        assert entry is not None and entry["path"] == "s2d", item.id
        assert rec.names()["_space_to_depth_kernel"] >= 1, item.id
        assert entry["key"]["stride_h"] == 1 and entry["key"]["CG"] % 16 == 0  # the rewritten conv's key
        assert entry["dispatch_key"]["stride_h"] == 2 and entry["dispatch_key"]["C"] == 3
    assert gpu_paths.conv_path_items(shapes.ConvShape("wide", 64, 9, 8, 3, stride=2, padding=1), "s2d") == []


def test_tma_items_are_the_layers_an_h100_patch_serves(layers):
    """The TMA KxK path's items: every conv layer whose output an H100 config's patch serves
    (eligibility judged on the GPU config lists, not the interpreter's), each pass, the
    weight-grad at the path's own split count."""
    items = gpu_paths.path_items(layers, ["tma_kxk"])
    convs = {lay.shape.name for lay in layers if lay.kind == "conv" and gpu_paths._tma_serves(lay.shape)}
    assert {i.layer for i in items} == convs and "resnet50.layer1.0.conv2" in convs
    named = {lay.shape.name for lay in layers}
    assert {"alexnet.features.conv3", "resnet50.layer4.0.conv2"} <= named - convs  # 13x13 and 7x7 stay generic
    for name in convs:
        assert sorted(i.pass_ for i in items if i.layer == name) == ["dgrad", "forward", "wgrad"], name
    for i in items:
        assert i.kernel == gpu_paths.PATH_SPECS["tma_kxk"].kernels[i.pass_] and i.dispatch_key["stride_h"] == 1
        if i.pass_ == "wgrad":
            s = next(lay.shape for lay in layers if lay.shape.name == i.layer)
            assert i.split_k == gpu_paths._tma_split(s, sweep.BATCH) >= 1


def test_dispatch_records_take_the_tma_kxk_path():
    """A TMA KxK winner (its own kernels, not the generic ones the s2d path launches) races
    the generic kernel's in the record of each of its passes."""
    key = {"N": 128, "C": 128, "H": 28, "W": 28, "K": 192, "R": 3, "S": 3, "P": 28, "Q": 28, "stride_h": 1,
           "stride_w": 1, "pad_h": 1, "pad_w": 1, "dil_h": 1, "dil_w": 1, "groups": 1}
    layer = "googlenet.inception3a.3x3"
    entries = []
    for pass_, ms in (("forward", 0.1), ("dgrad", 0.2), ("wgrad", 0.3)):
        entries.append(_entry(gpu_paths.GENERIC[pass_], pass_, layer, ms, {"CG": 128}))
        entries.append(_entry(gpu_paths.PATH_SPECS["tma_kxk"].kernels[pass_], pass_, layer, ms / 2, {"C": 128})
                       | {"path": "tma_kxk", "dispatch_key": key})
    records = gpu_paths.dispatch_records(entries)
    assert [(r["site"], r["path"], r["ms"]) for r in records] == [
        ("conv_forward", "tma_kxk", {"generic": 0.1, "tma_kxk": 0.05}),
        ("conv_dgrad", "tma_kxk", {"generic": 0.2, "tma_kxk": 0.1}),
        ("conv_wgrad", "tma_kxk", {"generic": 0.3, "tma_kxk": 0.15})]
    assert all(r["key"] == key for r in records)


def test_write_table_cut_off_leaves_the_old_table(monkeypatch, tmp_path):
    """The paths step rewrites the sweep's table in place: a write cut off part-way (its
    SIGINT at the limit) leaves the earlier table whole, never a truncated file."""
    path = tuned.write_table(tmp_path / "t.json", "cpu test", "3.6.0", [])
    before = path.read_text()
    real = type(path).write_text

    def cut_off(self, text, *args, **kwargs):
        real(self, text[: len(text) // 2], *args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(type(path), "write_text", cut_off)
    with pytest.raises(KeyboardInterrupt):
        tuned.write_table(path, "cpu test", "3.6.0", [], measured="later")
    monkeypatch.undo()
    assert path.read_text() == before
    assert tuned.load_table(path).entries == []
