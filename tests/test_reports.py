"""reports: HTML + PNG from synthetic result files (including partial, failed and OOM rows)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import matplotlib.image as mpimg
import pytest

from reports import compare as compare_mod
from reports.__main__ import main as reports_main
from reports.html import build_report
from reports.schema import NETWORK, ResultWriter, load_results, write_summary

LAYERS = [("features.conv1", "conv11x11/4+bias+relu", 0.42, 0.004), ("features.norm1", "lrn(size=5)", None, 0.02),
          ("features.conv2", "conv5x5/1 g2+bias+relu", 0.9, 0.006), ("classifier.fc6", "linear", 0.15, 0.15)]


def write_run(out: Path, *, scale=1.0, interrupted=False, oom_backend="compile", failed_layer="features.norm1",
              spread=0.02):
    """A two-mode run with three backends: one backend OOMs its training step, one layer fails."""
    with ResultWriter(out) as w:
        for mode in ("train", "infer"):
            for b, speed in (("torch", 1.0), ("compile", 1.3), ("triton", 1.6)):
                common = dict(run_id="r1", arch="alexnet", backend=b, dtype="bfloat16", batch_size=128, mode=mode,
                              device="cuda")
                for layer, op, gflop, gbytes in LAYERS:
                    for p in (("fwd", "bwd") if mode == "train" else ("fwd",)):
                        if b == "triton" and layer == failed_layer and p == "bwd":
                            w.write(**common, layer=layer, op=op, kernel="k", **{"pass": p}, status="failed",
                                    error="RuntimeError: synthetic failure")
                            continue
                        ms = scale * (0.1 + (gflop or 0.05)) / speed * (2 if p == "bwd" else 1)
                        w.write(**common, layer=layer, op=op, kernel="k", **{"pass": p}, ms=ms,
                                ms_p20=ms * (1 - spread), ms_p80=ms * (1 + spread), gflop=gflop,
                                tflops=gflop / ms if gflop else None, gbytes=gbytes, gbps=gbytes / ms * 1e3,
                                pct_peak=10.0 * speed, act_bytes=2**22, saved_bytes=2**21 if mode == "train" else None,
                                param_bytes=2**20)
                net_passes = ("fwd+bwd", "train_step") if mode == "train" else ("fwd",)
                for p in net_passes:
                    if b == oom_backend and p == "train_step":
                        w.write(**common, layer=NETWORK, op="network", **{"pass": p}, status="oom",
                                error="CUDA out of memory")
                        continue
                    ms = scale * 20.0 / speed
                    w.write(**common, layer=NETWORK, op="network", **{"pass": p}, ms=ms, ms_p20=ms * 0.98,
                            ms_p80=ms * 1.02, images_per_s=128 / (ms * 1e-3), gflop=100.0,
                            peak_bytes=3 * 2**30 if p == "train_step" else None)
    write_summary(out, {"run_id": "r1", "interrupted": interrupted,
                        "env": {"gpu": "NVIDIA H100 80GB HBM3", "torch": "2.11.0", "triton": "3.6.0",
                                "date": "2026-11-27T00:00:00+00:00", "command": "python -m benchmarks.profile"},
                        "ceilings": {"matmul_tflops": {"bfloat16": 800.0}, "copy_gbps": 3000.0,
                                     "datasheet": {"matmul_tflops": {"bfloat16": 989.0}, "copy_tbps": 3.35}}})


def write_benchmark_json(path: Path):
    benchmarks = []
    for provider, speed in (("torch", 1.0), ("compile", 1.1), ("triton", 1.4)):
        for shape in ("alexnet.features.conv1", "resnet50.layer1.0.conv2"):
            benchmarks.append({"group": f"conv2d {shape} fwd", "name": f"test_conv2d[{shape}-{provider}-fwd]",
                               "extra_info": {"provider": provider, "pass": "fwd", "median_ms": 1 / speed,
                                              "tflops": 100 * speed, "pct_peak": 12.5 * speed,
                                              "speedup_vs_torch": speed, "max_rel_error": 3e-3}})
    path.write_text(json.dumps({"benchmarks": benchmarks}))


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
    with pytest.raises(SystemExit):
        reports_main([str(tmp_path / "nowhere")])
    assert "has no results.csv" in capsys.readouterr().err


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
