"""reports: HTML + PNG from synthetic result files (including partial, failed and OOM rows)."""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
from pathlib import Path

import matplotlib.image as mpimg
import pandas as pd
import pytest

from reports import compare as compare_mod
from reports.__main__ import main as reports_main
from reports.html import build_report
from reports.schema import (
    NETWORK,
    RUNS,
    KernelWriter,
    ResultFileError,
    ResultWriter,
    beyond_tolerance,
    list_runs,
    load_results,
    run_dir,
    write_summary,
)

LAYERS = [("features.conv1", "conv11x11/4+bias+relu", 0.42, 0.004), ("features.norm1", "lrn(size=5)", None, 0.02),
          ("features.conv2", "conv5x5/1 g2+bias+relu", 0.9, 0.006), ("classifier.fc6", "linear", 0.15, 0.15)]


def write_run(out: Path, *, scale=1.0, interrupted=False, oom_backend="compile", failed_layer="features.norm1",
              spread=0.02, batch=128, dtype="bfloat16", arch="alexnet", device="cuda", wrong_layer=None,
              pct_peak=10.0, env=None, config=None):
    """A two-mode run with three backends: one backend OOMs its training step, one layer fails.
    `wrong_layer`: the triton backend's error there is beyond its bound."""
    with ResultWriter(out) as w:
        for mode in ("train", "infer"):
            for b, speed in (("torch", 1.0), ("compile", 1.3), ("triton", 1.6)):
                common = dict(run_id="r1", arch=arch, backend=b, dtype=dtype, batch_size=batch, image_size=224,
                              mode=mode, device=device + (" (triton interpreter)" if b == "triton" and device == "cpu"
                                                          else ""))
                for layer, op, gflop, gbytes in LAYERS:
                    for p in (("fwd", "bwd") if mode == "train" else ("fwd",)):
                        if b == "triton" and layer == failed_layer and p == "bwd":
                            w.write(**common, layer=layer, op=op, kernel="k", **{"pass": p}, status="failed",
                                    error="RuntimeError: synthetic failure")
                            continue
                        ms = scale * (0.1 + (gflop or 0.05)) / speed * (2 if p == "bwd" else 1)
                        err = 0.05 if (b == "triton" and layer == wrong_layer) else 1e-3
                        grads = dict(grad_max_rel_err=2e-3, grad_rel_tol=1.6e-2) if p == "bwd" else {}
                        w.write(**common, layer=layer, op=op, kernel="k", **{"pass": p}, ms=ms,
                                ms_p20=ms * (1 - spread), ms_p80=ms * (1 + spread), gflop=gflop,
                                tflops=gflop / ms if gflop else None, gbytes=gbytes, gbps=gbytes / ms * 1e3,
                                pct_peak=pct_peak * speed, act_bytes=2**22,
                                saved_bytes=2**21 if mode == "train" else None, param_bytes=2**20,
                                max_rel_err=err, rel_tol=8e-3, reference="float32 IEEE cuDNN/ATen (TF32 off)",
                                **grads)
                net_passes = ("fwd+bwd", "train_step") if mode == "train" else ("fwd",)
                for p in net_passes:
                    if b == oom_backend and p == "train_step":
                        w.write(**common, layer=NETWORK, op="network", **{"pass": p}, status="oom",
                                error="CUDA out of memory")
                        continue
                    ms = scale * 20.0 / speed
                    w.write(**common, layer=NETWORK, op="network", **{"pass": p}, ms=ms, ms_p20=ms * 0.98,
                            ms_p80=ms * 1.02, images_per_s=batch / (ms * 1e-3), gflop=100.0,
                            peak_bytes=3 * 2**30 if p == "train_step" else None)
    write_summary(out, {"run_id": "r1", "interrupted": interrupted, "finished": not interrupted,
                        "env": env or {"gpu": "NVIDIA H100 80GB HBM3", "torch": "2.11.0", "triton": "3.6.0",
                                       "date": "2026-11-27T00:00:00+00:00", "command": "python -m benchmarks.profile"},
                        "config": config or {"batch_size": batch, "rep_ms": 100.0, "out": str(out)},
                        "ceilings": {"matmul_tflops": {"bfloat16": 800.0}, "copy_gbps": 3000.0,
                                     "datasheet": {"matmul_tflops": {"bfloat16": 989.0}, "copy_tbps": 3.35}}})


def write_benchmark_json(path: Path):
    benchmarks = []
    for provider, speed in (("torch", 1.0), ("compile", 1.1), ("triton", 1.4)):
        for shape in ("alexnet.features.conv1", "resnet50.layer1.0.conv2"):
            benchmarks.append({"group": f"conv2d {shape} fwd", "name": f"test_conv2d[{shape}-{provider}-fwd]",
                               "extra_info": {"provider": provider, "pass": "fwd", "median_ms": 1 / speed,
                                              "tflops": 100 * speed, "pct_peak": 12.5 * speed,
                                              "ceiling": "measured bfloat16 matmul", "ceiling_value": 800.0,
                                              "ceiling_unit": "TFLOP/s", "dtype": "bfloat16", "batch": 128,
                                              "device": "cuda", "speedup_vs_torch": speed,
                                              "max_rel_error": 3e-3}})
    path.write_text(json.dumps({"benchmarks": benchmarks, "datetime": "2026-11-27T10:00:00.000000+00:00",
                                "machine_info": {"node": "gpu-node-7"}}))


def _images(page: str) -> list[str]:
    return re.findall(r'<img src="([^"]+)"', page)


def _shows_data(png: Path) -> bool:
    pixels = mpimg.imread(png)
    return pixels.ndim == 3 and float(pixels[..., :3].std()) > 0.02


def test_report_from_synthetic_results(tmp_path):
    write_run(tmp_path)
    bench = tmp_path / "bench.json"
    write_benchmark_json(bench)
    page = build_report(tmp_path, benchmark_json=bench).read_text()
    images = _images(page)
    assert {"throughput.png", "latency-alexnet-train.png", "roofline-alexnet-train.png", "memory-alexnet.png",
            "kernel-speedups.png"} <= set(images)
    for name in images:
        assert "/" not in name, "links stay inside the report folder"
        assert (tmp_path / name).exists(), f"{name} is referenced but missing"
        assert _shows_data(tmp_path / name), f"{name} is blank"
    assert "<script" not in page.lower()
    assert "NVIDIA H100 80GB HBM3" in page and "datasheet" in page
    assert "OOM" in page and "FAILED" in page and "synthetic failure" in page
    assert "oracle (fastest backend per layer)" in page and "launch + gap cost" in page
    # the kernel benchmarks come from another run: each row names its dtype, batch, device and ceiling
    kernel_rows = page.split("<h2>Kernel benchmarks</h2>")[1]
    assert ('<td class="l">conv2d alexnet.features.conv1 fwd</td><td class="l">triton</td><td class="l">bfloat16'
            '</td><td class="l">128</td><td class="l">cuda</td><td class="">0.714</td><td class="">140</td>'
            '<td class=""></td><td class="">17.5</td><td class="">measured bfloat16 matmul 800 TFLOP/s</td>'
            in kernel_rows)
    assert "bench.json: pytest-benchmark run of 2026-11-27T10:00:00.000000+00:00 on gpu-node-7" in kernel_rows
    # headline: triton 1.6x torch in the infer table
    assert re.search(r"<td class=\"l\">triton</td><td class=\"\">[0-9,.]+</td><td class=\"win\">1.6x", page)


def test_partial_run_reports_what_it_has(tmp_path):
    with ResultWriter(tmp_path) as w:
        w.write(run_id="p", arch="resnet50", backend="torch", dtype="bfloat16", batch_size=128, mode="train",
                layer="conv1", op="conv7x7/2", **{"pass": "fwd"}, ms=1.0, ms_p20=0.9, ms_p80=1.1, device="cuda")
    write_summary(tmp_path, {"run_id": "p", "interrupted": True, "env": {}, "ceilings": {}})
    page = build_report(tmp_path).read_text()
    assert "interrupted" in page and "No whole-network rows" in page and "conv1" in page
    for name in _images(page):
        assert (tmp_path / name).exists()


def test_writer_rejects_bad_rows(tmp_path):
    with ResultWriter(tmp_path) as w:
        with pytest.raises(ValueError, match="unknown result columns"):
            w.write(**{"pass": "fwd"}, nonsense=1)
        with pytest.raises(ValueError, match="status must be one of"):
            w.write(**{"pass": "fwd"}, status="great")
        with pytest.raises(ValueError, match="pass must be one of"):
            w.write(**{"pass": "sideways"})
    assert load_results(tmp_path).empty


def test_compare_marks_noise(tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    write_run(a)
    write_run(b, scale=1.005)  # 0.5% slower: inside the 2% bands
    write_run(c, scale=0.5)    # twice as fast
    same = compare_mod.compare_frames(load_results(a), load_results(b))
    assert set(same.verdict) == {"within noise"}
    faster = compare_mod.compare_frames(load_results(a), load_results(c))
    assert set(faster.verdict) == {"faster"} and faster.ratio.round(3).eq(0.5).all()
    assert compare_mod.main([str(a), str(c), "--out", str(tmp_path / "cmp")]) == 0
    page = (tmp_path / "cmp" / "compare.html").read_text()
    assert "faster" in page and "B speedup" in page


def test_cli_rebuilds_report(tmp_path, capsys):
    write_run(tmp_path)
    assert reports_main([str(tmp_path)]) == 0
    assert (tmp_path / "report.html").exists()
    assert reports_main([str(tmp_path / "nowhere")]) == 1
    err = capsys.readouterr().err
    assert "nowhere: no such folder" in err and len(err.strip().splitlines()) == 1


def _runs(tmp_path, *ids, **kw) -> Path:
    """A results folder holding runs `ids` (oldest first)."""
    for i, run_id in enumerate(ids):
        write_run(tmp_path / RUNS / run_id, scale=1.0 / (i + 1), **kw)
    return tmp_path


def test_store_layout_latest_and_by_id(tmp_path):
    out = _runs(tmp_path, "20261127-100000.000-aaaaaa", "20261127-110000.000-bbbbbb")
    assert list_runs(out) == ["20261127-100000.000-aaaaaa", "20261127-110000.000-bbbbbb"]
    assert run_dir(out).name.endswith("bbbbbb")
    assert run_dir(out, "20261127-10").name.endswith("aaaaaa"), "a unique prefix names a run"
    with pytest.raises(ResultFileError, match="has no run '2025'"):
        run_dir(out, "2025")
    with pytest.raises(ResultFileError, match="ambiguous"):
        run_dir(out, "20261127")
    with pytest.raises(ResultFileError, match="holds no runs"):
        run_dir(tmp_path / RUNS / "20261127-100000.000-aaaaaa" / "..")  # the runs folder itself
    assert reports_main([str(out), "--run", "20261127-10"]) == 0
    assert (out / RUNS / "20261127-100000.000-aaaaaa" / "report.html").exists()
    assert not (out / RUNS / "20261127-110000.000-bbbbbb" / "report.html").exists()


def test_written_csv_has_lf_line_ends(tmp_path):
    write_run(tmp_path)
    raw = (tmp_path / "results.csv").read_bytes()
    assert b"\r" not in raw and raw.endswith(b"\n")


@pytest.mark.parametrize("damage, words", [
    (lambda d: (d / "results.csv").write_text(""), "is empty (not even a header)"),
    (lambda d: (d / "results.csv").write_text("a,b\n1,2\n"), "lacks columns"),
    (lambda d: (d / "summary.json").write_text('{"run_id": "r1", "env": {'), "summary.json is not valid JSON"),
    (lambda d: (d / "summary.json").write_text("[1, 2]"), "not a run summary object"),
    (lambda d: (d / "results.csv").write_bytes(b"\xff\xfe\x00garbage"), "results.csv"),
])
def test_unreadable_inputs_are_one_line_errors(tmp_path, capsys, damage, words):
    write_run(tmp_path)
    damage(tmp_path)
    assert reports_main([str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert words in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_a_csv_cut_mid_line_is_reported_as_truncated(tmp_path):
    write_run(tmp_path)
    raw = (tmp_path / "results.csv").read_bytes()
    whole = load_results(tmp_path)
    (tmp_path / "results.csv").write_bytes(raw[: raw.rfind(b"\n", 0, len(raw) - 1) + 25])  # 24 bytes of a row
    frame = load_results(tmp_path)
    assert frame.attrs["truncated"] and len(frame) == len(whole) - 1
    assert frame.equals(whole.iloc[:-1])
    page = build_report(tmp_path).read_text()
    assert "results.csv ends mid-line" in page
    assert not load_results(_runs(tmp_path / "other", "r")).attrs["truncated"]


def test_report_marks_errors_beyond_tolerance_and_ceilings_above_100(tmp_path):
    write_run(tmp_path, wrong_layer="features.conv2", pct_peak=70.0)  # triton: 1.6 x 70 = 112%
    frame = load_results(tmp_path)
    bad = frame[beyond_tolerance(frame)]
    assert set(zip(bad.backend, bad.layer)) == {("triton", "features.conv2")} and len(bad) == 3
    page = build_report(tmp_path).read_text()
    assert "Beyond tolerance" in page and "3 rows are beyond their error tolerance" in page
    conv2 = re.search(r"<tr><td class=\"l\">features.conv2</td>.*?</tr>", page).group(0)
    assert '<td class="bad">0.05 / 0.002</td>' in conv2  # triton, train: output / gradient error
    assert '<td class="bad">112</td>' in conv2
    assert "ceiling measurement is too low" in page
    assert "interpreter" not in page


def test_a_nan_error_beside_a_bound_is_beyond_it():
    frame = pd.DataFrame({"max_rel_err": [1e-3, math.nan, math.nan, 1e-3], "rel_tol": [8e-3, 8e-3, math.nan, 8e-3],
                          "grad_max_rel_err": [math.nan, math.nan, math.nan, 0.1],
                          "grad_rel_tol": [math.nan, math.nan, math.nan, 0.05]})
    assert list(beyond_tolerance(frame)) == [False, True, False, True]


def test_report_says_when_triton_rows_come_from_the_interpreter(tmp_path):
    write_run(tmp_path, device="cpu")
    page = build_report(tmp_path).read_text()
    assert "Triton&#x27;s interpreter ran the kernels as Python" in page


def test_report_shows_kernels_per_layer(tmp_path):
    write_run(tmp_path)
    with KernelWriter(tmp_path) as w:
        key = dict(run_id="r1", arch="alexnet", mode="train", layer="features.conv1", **{"pass": "fwd"})
        w.write(**key, backend="torch", kernel="sm90_xmma_fprop_implicit_gemm_bf16_tilesize128x128x64", calls=1,
                us=30.0, share=0.75, source="device kernels")
        w.write(**key, backend="torch", kernel="bias_relu_kernel", calls=1, us=10.0, share=0.25,
                source="device kernels")
        w.write(**key, backend="triton", kernel="_conv_fwd_kernel", calls=1, us=25.0, share=1.0,
                source="device kernels")
    page = build_report(tmp_path).read_text()
    assert "Kernels per layer" in page and "tilesize128x128x64 75%" in page and "_conv_fwd_kernel 100%" in page
    assert "no device kernels on a CPU" not in page


# --------------------------------------------------------------------------- compare
def test_compare_refuses_unlike_runs(tmp_path, capsys):
    write_run(tmp_path / "a")
    for name, kw in (("batch", {"batch": 64}), ("dtype", {"dtype": "float16"}), ("arch", {"arch": "googlenet"})):
        write_run(tmp_path / name, **kw)
        assert compare_mod.main([str(tmp_path / "a"), str(tmp_path / name)]) == 1, name
        err = capsys.readouterr().err
        assert "nothing to compare" in err and "Traceback" not in err
        assert [line for line in err.splitlines() if not line.startswith("warning:")] == [err.splitlines()[-1]]
        assert not (tmp_path / name / "compare.html").exists()


def test_compare_unreadable_input_is_a_one_line_error(tmp_path, capsys):
    write_run(tmp_path / "a")
    write_run(tmp_path / "b")
    (tmp_path / "b" / "summary.json").write_text("{not json")
    assert compare_mod.main([str(tmp_path / "a"), str(tmp_path / "b")]) == 1
    err = capsys.readouterr().err
    assert "summary.json is not valid JSON" in err and len(err.strip().splitlines()) == 1
    (tmp_path / "a" / "results.csv").write_text("")
    assert compare_mod.main([str(tmp_path / "a"), str(tmp_path / "nowhere")]) == 1
    assert "no such folder" in capsys.readouterr().err


def test_compare_warns_about_every_field_that_differs(tmp_path, capsys):
    write_run(tmp_path / "a")
    write_run(tmp_path / "b", env={"gpu": "NVIDIA H200", "torch": "2.11.0", "triton": "3.7.0"},
              config={"batch_size": 128, "rep_ms": 40.0, "out": "elsewhere"})
    assert compare_mod.main([str(tmp_path / "a"), str(tmp_path / "b")]) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning: A and B")]
    fields = {w.split(" differ in ")[1].split(":")[0] for w in warnings}
    assert fields == {"env.gpu", "env.triton", "config.rep_ms"}  # not date, command or out
    page = (tmp_path / "b" / "compare.html").read_text()
    assert "env.gpu: &#x27;NVIDIA H100 80GB HBM3&#x27; vs &#x27;NVIDIA H200&#x27;" in page


def test_compare_whole_network_speedup_comes_from_images_per_s(tmp_path):
    write_run(tmp_path / "a")
    write_run(tmp_path / "b")
    a, b = load_results(tmp_path / "a"), load_results(tmp_path / "b")
    net = b.layer == NETWORK
    b.loc[net, "images_per_s"] *= 2  # throughput doubled at the same median ms
    cmp = compare_mod.compare_frames(a, b)
    assert (cmp[cmp.layer == NETWORK].speedup == 2).all()
    assert (cmp[cmp.layer != NETWORK].speedup == 1).all()
    assert set(compare_mod.KEYS) >= {"arch", "mode", "layer", "pass", "backend", "dtype", "batch_size"}


def test_compare_in_one_folder_takes_its_last_two_runs(tmp_path, capsys):
    out = _runs(tmp_path, "20261127-100000.000-aaaaaa", "20261127-110000.000-bbbbbb", "20261127-120000.000-cccccc")
    assert compare_mod.main([str(out), str(out)]) == 0
    page = (out / RUNS / "20261127-120000.000-cccccc" / "compare.html").read_text()
    assert "bbbbbb" in page and "aaaaaa" not in page
    assert compare_mod.main([str(out), str(out), "--run-a", "20261127-10", "--run-b", "20261127-11"]) == 0
    assert compare_mod.main([str(out), str(out), "--run-a", "20261127-12"]) == 1
    assert "same run" in capsys.readouterr().err
    single = _runs(tmp_path / "single", "20261127-100000.000-aaaaaa")
    assert compare_mod.main([str(single), str(single)]) == 1
    assert "no run before" in capsys.readouterr().err


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
HARNESS = """<!doctype html><html><body><iframe id="f" src="report.html" width="1300" height="900"></iframe>
<script>
document.getElementById("f").onload = function () {
  var d = document.getElementById("f").contentDocument;
  var imgs = Array.prototype.map.call(d.images, function (i) {
    return {src: i.getAttribute("src"), w: i.naturalWidth};
  });
  var out = document.createElement("pre"); out.id = "result";
  out.textContent = JSON.stringify({tables: d.querySelectorAll("table").length, rows: d.querySelectorAll("tr").length,
                                    images: imgs});
  document.body.appendChild(out);
};
</script></body></html>"""


@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium not installed (Debian package 'chromium')")
def test_report_renders_in_headless_chromium(tmp_path):
    write_run(tmp_path)
    build_report(tmp_path)
    # The report has no script; a throwaway harness page beside it reads the rendered DOM.
    (tmp_path / "harness.html").write_text(HARNESS)
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'profile'}", "--allow-file-access-from-files",
           "--virtual-time-budget=5000", "--dump-dom", (tmp_path / "harness.html").as_uri()]
    dom = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True).stdout
    found = re.search(r'<pre id="result">(.*?)</pre>', dom)
    assert found, f"harness produced no result; DOM head: {dom[:500]}"
    result = json.loads(found.group(1).replace("&quot;", '"'))
    assert result["tables"] >= 4 and result["rows"] > 20
    broken = [i["src"] for i in result["images"] if i["w"] == 0]
    assert result["images"] and not broken, f"broken images: {broken}"



def test_compare_lists_rows_that_failed_in_either_run(tmp_path, capsys):
    """A layer measured in A that fails or OOMs in B (a regression) is a row of the page and a
    warning, not a row that drops out of the comparison."""
    write_run(tmp_path / "a", failed_layer="none", oom_backend="none")
    write_run(tmp_path / "b")  # triton's features.norm1 bwd failed, compile's training step OOMs
    assert compare_mod.main([str(tmp_path / "a"), str(tmp_path / "b")]) == 0
    assert "warning: 2 rows failed in A or B (status not ok) and are not compared" in capsys.readouterr().err
    page = (tmp_path / "b" / "compare.html").read_text()
    section = page.split("<h2>Not compared (failed, OOM or skipped in A or B)</h2>")[1].split("</table>")[0]
    cells = [re.findall(r"<td[^>]*>(.*?)</td>", r) for r in re.findall(r"<tr>(.*?)</tr>", section) if "<td" in r]
    assert sorted(cells) == [
        ["alexnet", "compile", "train", NETWORK, "train_step", "ok", "oom", "CUDA out of memory"],
        ["alexnet", "triton", "train", "features.norm1", "bwd", "ok", "failed", "RuntimeError: synthetic failure"],
    ]


def test_compare_says_when_a_run_stopped_early_and_what_it_lacks(tmp_path, capsys):
    """B interrupted before its infer rows: the comparison of what both measured stands, and the
    page and stderr say that B stopped and how many of A's rows have no counterpart."""
    write_run(tmp_path / "a", failed_layer="none", oom_backend="none")
    write_run(tmp_path / "b", failed_layer="none", oom_backend="none", interrupted=True)
    b = load_results(tmp_path / "b")
    b[b["mode"] == "train"].to_csv(tmp_path / "b" / "results.csv", index=False)
    n_infer = int((load_results(tmp_path / "a")["mode"] == "infer").sum())
    assert compare_mod.main([str(tmp_path / "a"), str(tmp_path / "b")]) == 0
    err = capsys.readouterr().err
    assert f"warning: A (r1) {n_infer} of its rows have no counterpart in the other run" in err
    assert "warning: B (r1) was interrupted; 0 of its rows have no counterpart" in err
    page = (tmp_path / "b" / "compare.html").read_text()
    assert f'<p class="banner">A (r1) {n_infer} of its rows have no counterpart' in page
    assert '<p class="banner">B (r1) was interrupted' in page


def _summary_row(page: str, table: str, label: str) -> list[str]:
    section = page.split(f"<h3>{table}: per layer</h3>")[1].split("</table>")[0]
    (row,) = [r for r in re.findall(r"<tr[^>]*>(.*?)</tr>", section) if f">{label}</td>" in r]
    return re.findall(r"<td[^>]*>(.*?)</td>", row)


def test_a_sum_over_layers_with_one_not_measured_is_a_lower_bound(tmp_path):
    """triton's norm1 backward failed: its backward sum lacks a layer, so it is shown as a lower
    bound and its network gap (network - sum) is left blank, not a comparable total and a gap
    inflated by the missing layer. A backend with network rows only (compile without its layers)
    has no sum and no gap, not 0 and the whole network as 'launch + gap cost'."""
    write_run(tmp_path)
    frame = load_results(tmp_path)
    layers_only = ~((frame.backend == "compile") & (frame.layer != NETWORK))
    frame[layers_only].to_csv(tmp_path / "results.csv", index=False)
    page = build_report(tmp_path).read_text()
    header = ["torch fwd", "torch bwd", "compile fwd", "compile bwd", "triton fwd", "triton bwd"]
    sums = dict(zip(header, _summary_row(page, "alexnet train", "sum of layers")[2:8], strict=True))
    # triton backward: conv1 0.65 + conv2 1.25 + fc6 0.3125 (norm1 failed)
    assert sums == {"torch fwd": "1.92", "torch bwd": "3.84", "compile fwd": "", "compile bwd": "",
                    "triton fwd": "1.2", "triton bwd": "&ge; 2.21 (1 not measured)"}
    gap = _summary_row(page, "alexnet train", "launch + gap cost (network - sum)")[2:8]
    assert gap == ["14.2", "", "", "", "", ""]  # torch: 20 - (1.92 + 3.84)
    infer_gap = _summary_row(page, "alexnet infer", "launch + gap cost (network - sum)")
    assert infer_gap[2:5] == ["18.1", "", "11.3"]  # torch 20 - 1.92, triton 12.5 - 1.2 (every layer measured)
    oracle = _summary_row(page, "alexnet train", "oracle (fastest backend per layer)")[-1]
    assert oracle == "3.77 ms; wins: triton 3, torch 1"  # triton 0.975 + 1.875 + 0.469, torch's norm1 0.45
    # fc6's backward failed everywhere: no backend wins it, so the oracle is a lower bound too
    frame.loc[(frame.layer == "classifier.fc6") & (frame["pass"] == "bwd"), "status"] = "failed"
    frame[layers_only].to_csv(tmp_path / "results.csv", index=False)
    oracle = _summary_row(build_report(tmp_path).read_text(), "alexnet train", "oracle (fastest backend per layer)")
    assert oracle[-1] == "&ge; 3.3 (1 not measured) ms; wins: triton 2, torch 1"
