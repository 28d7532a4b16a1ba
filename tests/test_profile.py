"""`python -m benchmarks.profile` end to end on CPU: the run store, rows, correctness and
kernel columns, interruption (Ctrl-C and SIGTERM), failures as rows, argument checks.

Most tests profile a tiny net (injected in place of `nets.build`) to stay fast; one runs
the paper AlexNet at a small size on the torch backend, one the Triton backend on the
interpreter.
"""

from __future__ import annotations

import functools
import json
import math
import os
import signal
import time

import pandas as pd
import pytest
import torch
from torch import nn

import nets
from benchmarks import accuracy, measure, profile
from benchmarks.timing import MIN_SAMPLES
from benchmarks.timing import measure as real_measure
from nets.layers import layers_for
from reports.__main__ import main as reports_main
from reports.schema import (
    CAPTURE,
    COLUMNS,
    KERNEL_COLUMNS,
    NETWORK,
    RUNS,
    beyond_tolerance,
    list_runs,
    load_kernels,
    load_results,
    load_summary,
    run_dir,
)

SMALL = ["--arch", "alexnet", "--batch-size", "1", "--image-size", "67", "--rep-ms", "2"]
TINY = ["--arch", "alexnet", "--batch-size", "2", "--image-size", "8", "--rep-ms", "1"]


class TinyNet(nn.Module):
    """conv+ReLU, LRN, max-pool, linear: the layer kinds of AlexNet at a few hundred FLOPs."""

    def __init__(self, backend="torch", num_classes=1000):
        super().__init__()
        layers = layers_for(backend)
        self.features = nn.Sequential(layers.Conv2d(3, 4, 3, padding=1, activation="relu"),
                                      layers.LocalResponseNorm(3, alpha=1e-4, beta=0.75, k=2.0), nn.MaxPool2d(2))
        self.classifier = nn.Linear(4 * 4 * 4, num_classes)

    def forward(self, x):
        if x.shape[-1] != 8:
            raise RuntimeError(f"TinyNet takes 8x8 images, got {tuple(x.shape)}")
        return self.classifier(torch.flatten(self.features(x), 1))


@pytest.fixture
def tiny(monkeypatch):
    """The tiny net for every arch, and a small ceiling matmul (these tests do not check ceilings)."""
    monkeypatch.setattr(nets, "build", lambda arch, backend="torch", **kw: TinyNet(backend))
    monkeypatch.setattr(profile, "measure_ceilings", functools.partial(profile.measure_ceilings, size=256))


def _run(out, *extra) -> int:
    return profile.main([*TINY, "--out", str(out), *extra])


def _interrupt_at(monkeypatch, n, action):
    calls = []

    def fake(*args, **kwargs):
        calls.append(1)
        if len(calls) == n:
            action()
        return real_measure(*args, **kwargs)

    monkeypatch.setattr(measure, "measure", fake)


def _raise_ctrl_c():
    raise KeyboardInterrupt


# --------------------------------------------------------------------------- a real net
def test_profile_end_to_end(tmp_path):
    assert profile.main([*SMALL, "--out", str(tmp_path)]) == 0
    (run_id,) = list_runs(tmp_path)
    folder = tmp_path / RUNS / run_id
    raw = (folder / "results.csv").read_bytes()
    assert b"\r" not in raw, "LF line endings"
    assert list(pd.read_csv(folder / "results.csv").columns) == COLUMNS
    frame = load_results(tmp_path)
    assert set(frame.status) == {"ok"} and set(frame.run_id) == {run_id}
    assert set(frame["mode"]) == {"train", "infer"} and set(frame.backend) == {"torch"}
    assert set(frame.image_size) == {67}
    layers = frame[frame.layer != NETWORK]
    train = layers[layers["mode"] == "train"]
    assert set(train[train["pass"] == "fwd"].layer) >= {"features.conv1", "features.norm1", "classifier.fc8"}
    conv2 = train[(train.layer == "features.conv2") & (train["pass"] == "bwd")].iloc[0]
    assert conv2.gflop == pytest.approx(2 * 2 * 256 * 7 * 7 * 48 * 25 / 1e9)  # bwd = 2x fwd (groups=2)
    assert conv2.ms > 0 and conv2.param_bytes == 307456 * 4 and conv2.saved_bytes > 0
    # honest labels: the CPU library, never cuDNN; units beside the ceiling
    assert not layers.kernel.str.contains("cuDNN").any()
    assert layers[layers.layer == "features.conv1"].kernel.str.contains("ATen CPU").all()
    assert set(layers.ceiling_unit.dropna()) <= {"TFLOP/s", "GB/s"} and (layers.ceiling_value > 0).all()
    # correctness in every layer row (dropout in training has nothing to compare with)
    compared = layers[~((layers["mode"] == "train") & layers.layer.str.contains("drop"))]
    assert compared.max_rel_err.notna().all() and (compared.reference == "float64 ATen CPU").all()
    assert not beyond_tolerance(frame).any()
    bwd = compared[compared["pass"] == "bwd"]
    assert bwd.grad_max_rel_err.notna().all() and (bwd.grad_rel_tol > bwd.rel_tol).any()
    assert 0 < conv2.grad_max_rel_err < conv2.grad_rel_tol < 1e-2
    # kernels: every measured layer row has its attribution, shares summing to one
    kernels = load_kernels(tmp_path)
    assert list(kernels.columns) == KERNEL_COLUMNS and set(kernels.source) == {"cpu ops"}
    measured = {tuple(k) for k in layers[["mode", "layer", "pass"]].itertuples(index=False)}
    assert {tuple(k) for k in kernels[["mode", "layer", "pass"]].itertuples(index=False)} == measured
    # each share is stored to 6 significant digits (< 1: off by at most 5e-7), so k shares
    # sum to 1 within k * 5e-7
    groups = kernels.groupby(["mode", "layer", "pass"]).share
    assert ((groups.sum() - 1).abs() <= groups.count() * 5e-7 + 1e-12).all()
    conv1 = kernels[(kernels.layer == "features.conv1") & (kernels["pass"] == "fwd") & (kernels["mode"] == "infer")]
    assert conv1.kernel.str.contains("conv").any()
    # whole net: several samples, so the noise band is measured
    net = frame[frame.layer == NETWORK].set_index(["mode", "pass"])
    assert set(net.index) == {("train", "fwd+bwd"), ("train", "train_step"), ("infer", "fwd")}
    assert (net.samples >= MIN_SAMPLES).all() and (net.ms_p20 <= net.ms_p80).all()
    step = net.loc[("train", "train_step")]
    assert step.images_per_s == pytest.approx(1 / (step.ms * 1e-3), rel=1e-3)
    summary = load_summary(tmp_path)
    assert summary["ceilings"]["matmul_tflops"]["float32"] > 0 and summary["ceilings"]["copy_gbps"] > 0
    assert summary["env"]["torch"] == torch.__version__ and not summary["interrupted"] and summary["finished"]
    assert summary["env"]["command"].startswith("python -m benchmarks.profile --arch alexnet")
    entries = summary["backends"]
    assert {e["mode"] for e in entries} == {"train", "infer"}
    assert len({tuple(sorted(e)) for e in entries}) == 1, "train and infer entries have the same keys"
    assert all(e["status"] == "ok" and e["images_per_s"] > 0 for e in entries)
    page = (folder / "report.html").read_text()
    assert "Kernels per layer" in page and "ATen CPU" in page and "there are no device kernels on a CPU" in page


# --------------------------------------------------------------------------- the store
def test_runs_never_erase_each_other(tmp_path, monkeypatch, tiny, capsys):
    _interrupt_at(monkeypatch, 4, _raise_ctrl_c)
    assert _run(tmp_path, "--mode", "infer") == 130
    (killed,) = list_runs(tmp_path)
    kept = (tmp_path / RUNS / killed / "results.csv").read_bytes()
    assert len(load_results(tmp_path)) == 3
    monkeypatch.setattr(measure, "measure", real_measure)
    time.sleep(0.002)  # run ids carry milliseconds
    assert _run(tmp_path, "--mode", "infer") == 0
    with pytest.raises(SystemExit):  # a bad argument writes nothing
        _run(tmp_path, "--rep-ms", "0")
    first, second = list_runs(tmp_path)
    assert first == killed and second > killed
    assert (tmp_path / RUNS / killed / "results.csv").read_bytes() == kept, "the rerun left the killed run's rows"
    assert run_dir(tmp_path) == tmp_path / RUNS / second
    assert set(load_results(tmp_path).run_id) == {second}
    # the report picks the latest run by default, another by id
    assert reports_main([str(tmp_path)]) == 0
    assert "interrupted" not in (tmp_path / RUNS / second / "report.html").read_text()
    assert reports_main([str(tmp_path), "--run", killed[:21]]) == 0
    assert "interrupted" in (tmp_path / RUNS / killed / "report.html").read_text()
    capsys.readouterr()
    assert reports_main([str(tmp_path), "--list"]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert [line.split()[:2] for line in listed] == [[killed, "interrupted"], [second, "finished"]]


def test_sigterm_is_handled_like_ctrl_c(tmp_path, monkeypatch, tiny):
    _interrupt_at(monkeypatch, 4, lambda: os.kill(os.getpid(), signal.SIGTERM))
    before = signal.getsignal(signal.SIGTERM)
    assert _run(tmp_path, "--mode", "infer") == 143
    assert signal.getsignal(signal.SIGTERM) == before, "the handler is restored"
    summary = load_summary(tmp_path)
    assert summary["interrupted"] is True and summary["stopped_by"] == "SIGTERM" and not summary["finished"]
    assert len(load_results(tmp_path)) == 3
    page = (run_dir(tmp_path) / "report.html").read_text()
    assert "interrupted (SIGTERM)" in page


# --------------------------------------------------------------------------- failures
CPU_OOM = ("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate memory: "
           "you tried to allocate 240844800000 bytes. Error code 12 (Cannot allocate memory)")


def test_failures_become_rows_and_the_run_goes_on(tmp_path, monkeypatch, tiny):
    def fake(fn, *args, **kwargs):
        if "fwd_bwd" in getattr(fn, "__qualname__", ""):
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_measure(fn, *args, **kwargs)

    monkeypatch.setattr(measure, "measure", fake)
    monkeypatch.setattr(measure, "backward_closure", lambda *a: (_ for _ in ()).throw(ValueError("boom\nsecond")))
    real_capture = measure.capture
    monkeypatch.setattr(measure, "capture", lambda model, x, named, *, train: (
        (_ for _ in ()).throw(RuntimeError(CPU_OOM)) if not train else real_capture(model, x, named, train=train)))
    assert _run(tmp_path) == 0
    frame = load_results(tmp_path)
    oom = frame[frame.status == "oom"].set_index(["mode", "layer", "pass"])
    assert set(oom.index) == {("train", NETWORK, "fwd+bwd"), ("infer", CAPTURE, "fwd")}
    cuda_oom = oom.loc[("train", NETWORK, "fwd+bwd")].error
    assert cuda_oom == "OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB"
    assert "can't allocate memory" in oom.loc[("infer", CAPTURE, "fwd")].error
    failed = frame[frame.status == "failed"]
    assert len(failed) > 0 and set(failed["pass"]) == {"bwd"} and (failed.error == "ValueError: boom").all()
    assert not frame.error.fillna("").str.contains("\n").any(), "one-line errors"
    ok_net = frame[(frame.layer == NETWORK) & (frame.status == "ok")]
    assert set(zip(ok_net["mode"], ok_net["pass"])) == {("train", "train_step"), ("infer", "fwd")}
    page = (run_dir(tmp_path) / "report.html").read_text()
    assert "OOM" in page and "boom" in page


def test_a_batch_that_does_not_fit_is_an_oom_row(tmp_path, monkeypatch, tiny):
    """--batch-size 100000: the CPU allocator refuses the input batch; each backend and mode
    gets an OOM row and the report is written."""
    def synthetic_batch(batch_size, **kw):
        raise RuntimeError(CPU_OOM)

    monkeypatch.setattr(measure.data, "synthetic_batch", synthetic_batch)
    assert profile.main([*TINY[:2], "--batch-size", "100000", "--image-size", "8", "--rep-ms", "1",
                         "--backend", "torch,triton", "--out", str(tmp_path)]) == 0
    frame = load_results(tmp_path)
    assert set(frame.status) == {"oom"} and len(frame) == 4
    assert set(zip(frame.backend, frame["mode"], frame["pass"])) == {
        ("torch", "train", "train_step"), ("triton", "train", "train_step"), ("torch", "infer", "fwd"),
        ("triton", "infer", "fwd")}
    assert all(e["status"] == "oom" for e in load_summary(tmp_path)["backends"])
    assert "OOM" in (run_dir(tmp_path) / "report.html").read_text()


class TinyNoLRN(TinyNet):
    """TinyNet without its LRN (torch's CPU LRN, an avg_pool3d, has no bf16 kernel)."""

    def __init__(self, backend="torch", num_classes=1000):
        super().__init__(backend, num_classes)
        self.features[1] = nn.Identity()


def test_a_bf16_run_measures_its_layers(tmp_path, monkeypatch, tiny):
    """--dtype bf16 (the GPU default): the FLOP count and the layer description run the net on
    an input of its own dtype (a float32 one made every bf16 arch one failed row per backend)."""
    monkeypatch.setattr(nets, "build", lambda arch, backend="torch", **kw: TinyNoLRN(backend))
    assert _run(tmp_path, "--dtype", "bf16") == 0
    frame = load_results(tmp_path)
    assert set(frame.status) == {"ok"}, frame[frame.status != "ok"].error.tolist()
    assert set(frame.dtype) == {"bfloat16"}
    conv = frame[frame.layer == "features.0"].set_index(["mode", "pass"])
    assert sorted(conv.index) == [("infer", "fwd"), ("train", "bwd"), ("train", "fwd")]
    # 2 images x 4 x 8 x 8 outputs x 3 x 3 x 3 multiply-adds, 2 FLOPs each
    assert conv.loc[("train", "fwd"), "gflop"] == pytest.approx(2 * 2 * 4 * 8 * 8 * 3 * 3 * 3 / 1e9, rel=1e-5)


@pytest.mark.parametrize("exc, status", [
    (RuntimeError(CPU_OOM), "oom"),
    (torch.cuda.OutOfMemoryError("CUDA out of memory. Tried"), "oom"),
    (MemoryError(), "oom"),
    (RuntimeError("expected scalar type Float"), "failed"),
    (ValueError("out of range"), "failed"),
])
def test_classify(exc, status):
    got, error = measure.classify(exc, torch.device("cpu"))
    assert got == status and error.startswith(type(exc).__name__) and "\n" not in error


# --------------------------------------------------------------------------- correctness
def test_accuracy_check_flags_a_wrong_layer():
    torch.manual_seed(0)
    conv = nn.Conv2d(8, 16, 3)
    ref = accuracy.reference_model(conv, torch.device("cpu"))
    x = torch.randn(2, 8, 6, 6)
    flops = 2 * 2 * 16 * 4 * 4 * 8 * 9
    kw = dict(train=True, flops=flops, dtype=torch.float32, device=torch.device("cpu"), grads=True)
    good = accuracy.check(conv, conv, ref, (x,), {}, **kw)
    assert good.max_rel_err < good.rel_tol and good.grad_max_rel_err < good.grad_rel_tol
    assert good.rel_tol == pytest.approx(accuracy.relative_bound(torch.float32, 8 * 9))
    wrong = accuracy.check(lambda t: conv(t) * (1 + 1e-3), conv, ref, (x,), {}, **kw)
    assert wrong.max_rel_err == pytest.approx(1e-3, rel=0.05) and wrong.max_rel_err > wrong.rel_tol
    assert wrong.grad_max_rel_err > wrong.grad_rel_tol  # the scaled output scales every gradient
    half = accuracy.check(conv.to(torch.bfloat16), conv, ref, (x.bfloat16(),), {}, **{**kw, "dtype": torch.bfloat16})
    assert half.rel_tol > 100 * good.rel_tol and half.max_rel_err < half.rel_tol


def test_cpu_timing_has_several_samples():
    t = real_measure(lambda: time.sleep(0.01), "cpu", cpu_min_run_s=1e-3)
    assert t.samples >= MIN_SAMPLES and t.p20 <= t.ms <= t.p80 and t.ms >= 10


# --------------------------------------------------------------------------- triton
def test_triton_backend_on_the_interpreter(tmp_path, tiny):
    assert _run(tmp_path, "--backend", "torch,triton", "--mode", "train") == 0
    frame = load_results(tmp_path)
    assert set(frame.status) == {"ok"}
    tri = frame[(frame.backend == "triton") & (frame.layer != NETWORK)]
    assert tri.device.str.contains("triton interpreter").all()
    conv = tri[tri.layer == "features.0"].set_index("pass")
    assert conv.loc["fwd"].kernel == "conv2d (Triton interpreter)"
    assert conv.loc["fwd"].max_rel_err < conv.loc["fwd"].rel_tol
    assert conv.loc["bwd"].grad_max_rel_err < conv.loc["bwd"].grad_rel_tol
    assert not beyond_tolerance(frame).any()
    kernels = load_kernels(tmp_path)
    names = kernels[(kernels.backend == "triton") & (kernels.layer == "features.0")].groupby("pass").kernel.apply(set)
    assert "triton _conv_fwd_kernel" in names["fwd"]
    assert any(k.startswith("triton _conv") and "fwd" not in k for k in names["bwd"])
    lrn = kernels[(kernels.backend == "triton") & (kernels.layer == "features.1") & (kernels["pass"] == "fwd")]
    # the conv before it hands the LRN a channels_last map: the group kernel
    assert lrn.sort_values("share").kernel.iloc[-1] == "triton _lrn_groups_fwd_kernel"
    page = (run_dir(tmp_path) / "report.html").read_text()
    assert "Triton&#x27;s interpreter ran the kernels as Python" in page


# --------------------------------------------------------------------------- arguments
@pytest.mark.parametrize("argv, words", [
    (["--arch", "vgg"], "invalid arch 'vgg' (choose from alexnet, googlenet"),
    (["--backend", "torch,tensorrt"], "invalid backend 'tensorrt' (choose from torch, compile, triton)"),
    (["--batch-size", "0"], "must be a positive integer"),
    (["--dtype", "fp64"], "invalid choice: 'fp64'"),
    (["--mode", "eval"], "invalid mode 'eval'"),
    (["--arch", "alexnet,alexnet"], "--arch: arch alexnet given more than once in 'alexnet,alexnet'"),
    (["--mode", "infer,train,infer"], "--mode: mode infer given more than once"),
    (["--backend", "torch,torch"], "--backend: backend torch given more than once"),
    (["--rep-ms", "nan"], "--rep-ms: must be a positive, finite number of milliseconds, got 'nan'"),
    (["--rep-ms", "0"], "got '0'"),
    (["--rep-ms", "-5"], "got '-5'"),
    (["--rep-ms", "inf"], "got 'inf'"),
    (["--image-size", "7"], "--image-size 7 does not fit alexnet in train mode at batch 2 (smallest: 63)"),
    (["--out", "{file}"], "is a file, not a folder"),
    (["--out", "{file}/sub"], "is a file, so no folder can be made under it"),
])
def test_bad_arguments_are_one_line_errors(argv, words, tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    argv = [a.replace("{file}", str(tmp_path / "file")) for a in argv]
    with pytest.raises(SystemExit) as exc:
        profile.parse_args([*argv] if "--out" in argv else [*argv, "--out", str(tmp_path / "out")])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert words in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"], "nothing written"


def test_an_impossible_out_is_a_one_line_error(tmp_path, monkeypatch, capsys):
    def refuse(self, *a, **kw):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(profile.RunStore, "__init__", refuse)
    assert profile.main([*SMALL, "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "cannot create the run folder (Permission denied)" in err and len(err.strip().splitlines()) == 1


def test_help_has_examples(capsys):
    with pytest.raises(SystemExit):
        profile.parse_args(["--help"])
    out = capsys.readouterr().out
    assert "examples:" in out and "--arch all" in out and "runs/<run id>" in out


def test_cpu_defaults():
    args = profile.parse_args([])
    if not torch.cuda.is_available():
        assert (args.backend, args.batch_size, args.dtype) == (["torch"], 2, "fp32")
    assert profile.parse_args(["--arch", "all", "--image-size", "224"]).arch == list(profile.nets.ARCHS)
    assert math.isclose(args.rep_ms, 100.0)


def test_summary_is_json(tmp_path, tiny):
    assert _run(tmp_path, "--mode", "infer", "--skip-layers") == 0
    summary = json.loads((run_dir(tmp_path) / "summary.json").read_text())
    assert summary["config"]["out"] == str(tmp_path) and summary["run_id"] == run_dir(tmp_path).name


# --------------------------------------------------------------------------- pure helpers
def test_run_ids_sort_as_the_runs_started():
    import datetime

    from benchmarks.store import new_run_id

    t0 = datetime.datetime(2026, 11, 27, 9, 59, 59, 999000, tzinfo=datetime.timezone.utc)
    ids = [new_run_id(t0 + datetime.timedelta(microseconds=us)) for us in (0, 1, 500, 1000, 1_000_000, 3600_000_000)]
    assert ids == sorted(ids) and ids[0].startswith("20261127-095959.999000-") and len(set(ids)) == 6
    # runs started back to back in one process (often within one clock tick) sort in order
    ids = [new_run_id() for _ in range(200)]
    assert ids == sorted(ids) and len(set(ids)) == 200


def test_derive_names_its_ceiling_with_value_and_unit():
    from benchmarks.metrics import derive

    ceilings = {"matmul_tflops": {"float32": 2.0}, "copy_gbps": 50.0}
    m = derive(1.0, flops=1e9, ceilings=ceilings, dtype="float32")
    assert (m["tflops"], m["pct_peak"], m["ceiling"], m["ceiling_value"], m["ceiling_unit"]) == (
        1.0, 50.0, "measured float32 matmul", 2.0, "TFLOP/s")
    m = derive(2.0, nbytes=2e8, ceilings=ceilings)
    assert (m["gbps"], m["pct_peak"], m["ceiling_value"], m["ceiling_unit"]) == (100.0, 200.0, 50.0, "GB/s")


def test_max_rel_error_sees_nan_and_inf():
    from benchmarks.metrics import max_rel_error

    ref = torch.tensor([1.0, -4.0, 2.0], dtype=torch.float64)
    assert max_rel_error(torch.tensor([1.0, -4.0, 2.5]), ref) == 0.125
    assert math.isnan(max_rel_error(torch.tensor([1.0, float("nan"), 2.0]), ref))
    assert max_rel_error(torch.tensor([float("inf"), -4.0, 2.0]), ref) == math.inf
    nan_ref = torch.tensor([float("nan"), -4.0, 2.0], dtype=torch.float64)
    assert max_rel_error(torch.tensor([float("nan"), -4.0, 3.0]), nan_ref) == 0.25


def test_summarize_percentiles():
    from benchmarks.timing import summarize

    t = summarize([5.0, 1.0, 4.0, 2.0, 3.0])
    assert (t.ms, t.p20, t.p80, t.samples) == (3.0, 1.8, 4.2, 5)
    with pytest.raises(ValueError, match="no samples"):
        summarize([])


def test_attribution_shares():
    from benchmarks.attribution import shares

    rows = shares({"a": [30.0, 30.0], "b": [20.0, 20.0], "idle": [0.0]}, runs=2)
    assert rows == [{"kernel": "a", "calls": 1.0, "us": 30.0, "share": 0.6},
                    {"kernel": "b", "calls": 1.0, "us": 20.0, "share": 0.4}]


def test_relative_bound_is_the_tests_tolerance():
    from benchmarks.tolerance import relative_bound
    from tests.helpers import tolerance

    for dtype, k in ((torch.float32, 1), (torch.bfloat16, 576), (torch.float16, 4096)):
        atol, rtol = tolerance(dtype, k)
        assert relative_bound(dtype, k) == atol + rtol
    assert relative_bound(torch.float32, 576, tf32=True) > relative_bound(torch.float32, 576)


def test_the_first_call_is_timed_until_the_device_is_done(tmp_path, monkeypatch, tiny):
    """summary.json's first_call_s comes from timing.first_call_s (which synchronizes a GPU),
    not from the host's return alone."""
    timed = []
    monkeypatch.setattr(measure, "first_call_s", lambda fn, device: timed.append(device) or 12.5)
    assert _run(tmp_path, "--mode", "infer", "--skip-layers") == 0
    (entry,) = load_summary(tmp_path)["backends"]
    assert entry["first_call_s"] == 12.5 and timed == [torch.device("cpu")]
