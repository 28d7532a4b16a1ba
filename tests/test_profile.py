"""`python -m benchmarks.profile` end to end on CPU: rows, schema, interruption, failures, args."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from benchmarks import profile
from reports.schema import COLUMNS, NETWORK, load_results

SMALL = ["--arch", "alexnet", "--batch-size", "1", "--image-size", "67", "--rep-ms", "2"]


def test_profile_end_to_end(tmp_path):
    assert profile.main([*SMALL, "--out", str(tmp_path)]) == 0
    raw = pd.read_csv(tmp_path / "results.csv")
    assert list(raw.columns) == COLUMNS
    frame = load_results(tmp_path)
    assert set(frame.status) == {"ok"}
    assert set(frame["mode"]) == {"train", "infer"} and set(frame.backend) == {"torch"}
    train = frame[(frame["mode"] == "train") & (frame.layer != NETWORK)]
    # every layer forward, every layer with something to differentiate backward
    assert set(train[train["pass"] == "fwd"].layer) >= {"features.conv1", "features.norm1", "classifier.fc8"}
    conv2 = train[(train.layer == "features.conv2") & (train["pass"] == "bwd")].iloc[0]
    assert conv2.gflop == pytest.approx(2 * 2 * 256 * 7 * 7 * 48 * 25 / 1e9)  # bwd = 2x fwd (groups=2)
    assert conv2.ms > 0 and conv2.param_bytes == 307456 * 4 and conv2.saved_bytes > 0
    net = frame[frame.layer == NETWORK].set_index(["mode", "pass"])
    assert set(net.index) == {("train", "fwd+bwd"), ("train", "train_step"), ("infer", "fwd")}
    step = net.loc[("train", "train_step")]
    assert step.images_per_s == pytest.approx(1 / (step.ms * 1e-3), rel=1e-3)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["ceilings"]["matmul_tflops"]["float32"] > 0 and summary["ceilings"]["copy_gbps"] > 0
    assert summary["env"]["torch"] == torch.__version__ and not summary["interrupted"]
    assert summary["env"]["command"].startswith("python -m benchmarks.profile --arch alexnet")
    assert {e["mode"] for e in summary["backends"]} == {"train", "infer"}
    assert (tmp_path / "report.html").exists()


def test_interrupt_keeps_rows_and_writes_report(tmp_path, monkeypatch):
    real, calls = profile.measure, []

    def measure(*args, **kwargs):
        calls.append(1)
        if len(calls) == 6:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(profile, "measure", measure)
    assert profile.main([*SMALL, "--out", str(tmp_path)]) == 130
    frame = load_results(tmp_path)
    assert len(frame) == 5  # the five rows measured before Ctrl-C
    assert json.loads((tmp_path / "summary.json").read_text())["interrupted"] is True
    assert "interrupted" in (tmp_path / "report.html").read_text()


def test_oom_and_failures_become_rows_and_the_run_goes_on(tmp_path, monkeypatch):
    real = profile.measure

    def measure(fn, *args, **kwargs):
        name = getattr(fn, "__qualname__", "")
        if "fwd_bwd" in name:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")
        return real(fn, *args, **kwargs)

    monkeypatch.setattr(profile, "measure", measure)
    monkeypatch.setattr(profile, "backward_closure", lambda *a: (_ for _ in ()).throw(ValueError("boom")))
    assert profile.main([*SMALL, "--mode", "train", "--out", str(tmp_path)]) == 0
    frame = load_results(tmp_path)
    oom = frame[frame.status == "oom"]
    assert list(oom["pass"]) == ["fwd+bwd"] and oom.iloc[0].error == "CUDA out of memory"
    failed = frame[frame.status == "failed"]
    assert len(failed) > 0 and set(failed["pass"]) == {"bwd"} and failed.error.str.contains("boom").all()
    assert ((frame.layer == NETWORK) & (frame["pass"] == "train_step") & (frame.status == "ok")).any()
    page = (tmp_path / "report.html").read_text()
    assert "OOM" in page and "boom" in page


@pytest.mark.parametrize("argv, words", [
    (["--arch", "vgg"], "invalid arch 'vgg' (choose from alexnet, googlenet"),
    (["--backend", "torch,tensorrt"], "invalid backend 'tensorrt' (choose from torch, compile, triton)"),
    (["--batch-size", "0"], "must be a positive integer"),
    (["--dtype", "fp64"], "invalid choice: 'fp64'"),
    (["--mode", "eval"], "invalid mode 'eval'"),
])
def test_bad_arguments_are_argparse_errors(argv, words, capsys):
    with pytest.raises(SystemExit) as exc:
        profile.parse_args(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert words in err and "Traceback" not in err


def test_help_has_examples(capsys):
    with pytest.raises(SystemExit):
        profile.parse_args(["--help"])
    out = capsys.readouterr().out
    assert "examples:" in out and "--arch all" in out


def test_cpu_defaults():
    args = profile.parse_args([])
    if not torch.cuda.is_available():
        assert (args.backend, args.batch_size, args.dtype) == (["torch"], 2, "fp32")
    assert profile.parse_args(["--arch", "all"]).arch == list(profile.nets.ARCHS)
