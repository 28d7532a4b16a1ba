"""The report's and compare's table cells, read back from the HTML and matched to the CSV and
to numbers worked out by hand.

The report's run goes through the profiler's own row path (`measure.Run.timed_row` into a
`RunStore`) with torch's CPU Timer replaced by known samples, so the medians, rates, % of
ceiling and images/s in the page come from timing.summarize, metrics.derive and the writer as
in a real run. Every (layer, backend, pass) has its own time, so a cell in the wrong column,
a doubled time, a mean for a median, a rate off by 1000 or a % off by 10 reads back as another
number. The compare runs are written row by row with known bands. Expected values are numbers
with their arithmetic in a comment, never the formula under test.
"""

from __future__ import annotations

import argparse
import html
import types
from html.parser import HTMLParser

import pytest
import torch
import torch.utils.benchmark as tbench

from benchmarks import measure
from benchmarks.store import RunStore
from reports import compare as compare_mod
from reports.__main__ import main as reports_main
from reports.schema import NETWORK, REPORT_HTML, RUNS, ResultWriter, load_results, write_summary


# --------------------------------------------------------------------------- reading tables back
class _Tables(HTMLParser):
    """Every <table> of a page: the heading before it, its header cells, and its body rows as
    (text, css classes) per cell (a <br> reads as a newline)."""

    def __init__(self):
        super().__init__()
        self.tables, self.heading, self._text, self._cell, self._classes = [], "", None, None, ""

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag in ("h2", "h3"):
            self._text = []
        elif tag == "table":
            self.tables.append({"title": self.heading, "header": [], "rows": []})
        elif tag == "tr" and self.tables:
            self._row = []
        elif tag in ("th", "td"):
            self._cell, self._classes = [], set((attrs.get("class") or "").split())
        elif tag == "br" and self._cell is not None:
            self._cell.append("\n")

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)
        elif self._text is not None:
            self._text.append(data)

    def handle_endtag(self, tag):
        if tag in ("h2", "h3") and self._text is not None:
            self.heading, self._text = "".join(self._text).strip(), None
        elif tag == "th":
            self.tables[-1]["header"].append("".join(self._cell))
            self._cell = None
        elif tag == "td":
            self._row.append(("".join(self._cell), self._classes))
            self._cell = None
        elif tag == "tr" and self._row:
            self.tables[-1]["rows"].append(self._row)
            self._row = []


def tables(page: str) -> dict[str, dict]:
    parser = _Tables()
    parser.feed(page)
    return {t["title"]: t for t in parser.tables}


def records(table: dict) -> list[dict]:
    """Body rows as {header: text}, and {header + ' class': classes}; a header named twice
    (compare's 'bound') keeps its first cell under the plain name, later ones numbered."""
    names, seen = [], {}
    for h in table["header"]:
        seen[h] = seen.get(h, 0) + 1
        names.append(h if seen[h] == 1 else f"{h} {seen[h]}")
    assert all(len(r) == len(names) for r in table["rows"]), "every body row has one cell per header"
    return [{**{n: t for n, (t, _) in zip(names, row)}, **{n + " class": c for n, (_, c) in zip(names, row)}}
            for row in table["rows"]]


def num(text: str) -> float:
    """A number as the page prints it ('2,000', '1.25x', '0.5')."""
    return float(text.replace(",", "").removesuffix("x"))


# --------------------------------------------------------------------------- the report's run
BATCH = 64
CEILINGS = {"matmul_tflops": {"float32": 800.0}, "copy_gbps": 2000.0}
# layer -> (op, FLOPs, bytes): a FLOP-counted layer (held to the matmul peak) and a byte-counted one.
LAYERS = {"features.conv1": ("conv11x11/4+bias+relu", 2e9, 1e8), "features.norm1": ("lrn(size=5)", None, 1e8)}
BACKENDS = ("torch", "triton")
# Median ms per (layer, backend, pass): all different, so no cell can stand in for another.
MS = {("features.conv1", "torch", "fwd"): 0.5, ("features.conv1", "torch", "bwd"): 1.25,
      ("features.conv1", "triton", "fwd"): 0.25, ("features.conv1", "triton", "bwd"): 1.6,
      ("features.norm1", "torch", "fwd"): 0.2, ("features.norm1", "torch", "bwd"): 0.4,
      ("features.norm1", "triton", "fwd"): 0.1, ("features.norm1", "triton", "bwd"): 0.3}
# Hand-worked % of the measured ceiling of each forward row:
PCT_PEAK = {("features.conv1", "torch"): 0.5,    # 2e9 FLOP / 0.5e-3 s = 4 TFLOP/s; 4 / 800 = 0.5 %
            ("features.conv1", "triton"): 1.0,   # 2e9 / 0.25e-3 = 8 TFLOP/s; 8 / 800 = 1 %
            ("features.norm1", "torch"): 25.0,   # 1e8 B / 0.2e-3 s = 500 GB/s; 500 / 2000 = 25 %
            ("features.norm1", "triton"): 50.0}  # 1e8 / 0.1e-3 = 1000 GB/s; 1000 / 2000 = 50 %
TFLOPS = {("features.conv1", "torch", "fwd"): 4.0, ("features.conv1", "triton", "fwd"): 8.0}
# Errors and their bounds: triton's conv1 output and norm1 gradient are beyond theirs.
OUT_ERR = {("features.conv1", "torch"): (1e-3, 8e-3), ("features.conv1", "triton"): (2e-2, 8e-3),
           ("features.norm1", "torch"): (3e-3, 8e-3), ("features.norm1", "triton"): (4e-3, 8e-3)}
GRAD_ERR = {("features.conv1", "torch"): (2e-3, 1.6e-2), ("features.conv1", "triton"): (5e-3, 1.6e-2),
            ("features.norm1", "torch"): (6e-3, 1.6e-2), ("features.norm1", "triton"): (5e-2, 1.6e-2)}
# Whole network, ms: (train fwd+bwd, train step, infer fwd).
NET_MS = {"torch": (4.0, 32.0, 8.0), "triton": (4.5, 25.6, 10.0)}
PEAK_BYTES = {"torch": 3 * 2**30, "triton": 2 * 2**30}


def _samples(ms: float) -> list[float]:
    """Five per-call times whose median is `ms` and whose mean (1.58 ms) is not: sorted
    0.9, 0.95, 1, 1.05, 4 (x ms), so p20 = 0.94 ms and p80 = 1.64 ms (linear interpolation)."""
    return [ms * 4.0, ms * 0.9, ms, ms * 1.05, ms * 0.95]


class _FakeTimer:
    """torch.utils.benchmark.Timer over known samples: the timed closure returns its median."""

    def __init__(self, stmt, globals, num_threads):
        self.fn = globals["fn"]

    def blocked_autorange(self, min_run_time):
        return types.SimpleNamespace(times=[t * 1e-3 for t in _samples(self.fn())])  # seconds per call


@pytest.fixture(scope="module")
def report_run(tmp_path_factory):
    """A profiler run of alexnet (train and infer, torch and triton) through the real row path,
    and its report (built once: the tests below only read it)."""
    tmp_path = tmp_path_factory.mktemp("report")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(tbench, "Timer", _FakeTimer)
        return _profile_and_report(tmp_path)


def _profile_and_report(tmp_path):
    args = argparse.Namespace(dtype="fp32", batch_size=BATCH, image_size=224, rep_ms=10, trace=False,
                              attribution=False)
    bar = types.SimpleNamespace(set_postfix_str=lambda s: None, update=lambda n: None)
    with RunStore(tmp_path, run_id="20261127-100000.000-aaaaaa") as store:
        run = measure.Run(args=args, device=torch.device("cpu"), store=store, ceilings=CEILINGS, bar=bar)
        for backend in BACKENDS:
            for layer, (op, flops, nbytes) in LAYERS.items():
                for p in ("fwd", "bwd"):
                    err, tol = (OUT_ERR if p == "fwd" else GRAD_ERR)[(layer, backend)]
                    errors = dict(max_rel_err=err, rel_tol=tol) if p == "fwd" else \
                        dict(grad_max_rel_err=err, grad_rel_tol=tol)
                    run.timed_row("alexnet", backend, "train", layer, p, lambda t=MS[(layer, backend, p)]: t,
                                  flops=flops, nbytes=nbytes, extra=dict(op=op, reference="float64", **errors))
            fwd_bwd, step, infer = NET_MS[backend]
            for mode, p, t, extra in (("train", "fwd+bwd", fwd_bwd, {}),
                                      ("train", "train_step", step, dict(peak_bytes=PEAK_BYTES[backend])),
                                      ("infer", "fwd", infer, {})):
                run.timed_row("alexnet", backend, mode, NETWORK, p, lambda t=t: t, flops=1e9, images=BATCH,
                              extra=dict(op="network", **extra))
        store.save_summary({"run_id": store.run_id, "finished": True, "ceilings": CEILINGS,
                            "env": {"cpu": "test cpu", "date": "2026-11-27"}})
    assert reports_main([str(tmp_path)]) == 0
    page = (store.dir / REPORT_HTML).read_text()
    return load_results(tmp_path), tables(page), page


def test_csv_rows_hold_the_median_band_and_hand_worked_rates(report_run):
    frame, _, _ = report_run
    for (layer, backend, p), ms in MS.items():
        (row,) = frame[(frame.layer == layer) & (frame.backend == backend) & (frame["pass"] == p)].itertuples()
        assert (row.ms, row.ms_p20, row.ms_p80, row.samples) == pytest.approx((ms, 0.94 * ms, 1.64 * ms, 5),
                                                                              rel=1e-5)
        if p == "fwd":
            assert row.pct_peak == pytest.approx(PCT_PEAK[(layer, backend)], rel=1e-5)
        if (layer, backend, p) in TFLOPS:
            assert row.tflops == pytest.approx(TFLOPS[(layer, backend, p)], rel=1e-5)
    step = frame[(frame.layer == NETWORK) & (frame["pass"] == "train_step")].set_index("backend")
    assert step.images_per_s.to_dict() == pytest.approx({"torch": 2000.0, "triton": 2500.0})  # 64 / 32 ms, / 25.6


def test_headline_cells(report_run):
    _, page_tables, _ = report_run
    table = page_tables["Throughput"]
    assert table["header"] == ["arch", "mode", "batch", "backend", "images/s", "vs torch", "ms", "peak GiB"]
    got = {(r["mode"], r["backend"]): r for r in records(table)}
    assert set(got) == {("train", "torch"), ("train", "triton"), ("infer", "torch"), ("infer", "triton")}
    # train: 64 images / 32 ms = 2,000/s and / 25.6 ms = 2,500/s: 1.25x torch's throughput.
    # infer: 64 / 8 ms = 8,000/s and 64 / 10 ms = 6,400/s: 0.8x.
    expect = {("train", "torch"): (2000, 1.0, 32.0, 3), ("train", "triton"): (2500, 1.25, 25.6, 2),
              ("infer", "torch"): (8000, 1.0, 8.0, None), ("infer", "triton"): (6400, 0.8, 10.0, None)}
    for key, (images, speed, ms, gib) in expect.items():
        r = got[key]
        assert num(r["images/s"]) == pytest.approx(images), (key, r)
        assert num(r["vs torch"]) == pytest.approx(speed), (key, r)
        assert num(r["ms"]) == pytest.approx(ms), (key, r)
        assert (num(r["peak GiB"]) if r["peak GiB"] else None) == gib
        assert r["batch"] == "64"
        assert ("win" in r["vs torch class"]) == (speed > 1), key


def _layer_records(page_tables):
    table = page_tables["alexnet train: per layer"]
    return table["header"], {r["layer"]: r for r in records(table)}


def test_per_layer_cells_sit_under_their_headers(report_run):
    _, page_tables, _ = report_run
    header, rows = _layer_records(page_tables)
    assert header[:2] == ["layer", "op"] and header[-1] == "fastest"
    assert sorted(header[2:-1]) == sorted([f"{b} {p} ms" for b in BACKENDS for p in ("fwd", "bwd")]
                                          + [f"{b} fwd % peak" for b in BACKENDS]
                                          + [f"{b} max rel err" for b in BACKENDS])
    for (layer, backend, p), ms in MS.items():
        assert num(rows[layer][f"{backend} {p} ms"]) == pytest.approx(ms), (layer, backend, p)
    for (layer, backend), pct in PCT_PEAK.items():
        assert num(rows[layer][f"{backend} fwd % peak"]) == pytest.approx(pct), (layer, backend)
        assert "bad" not in rows[layer][f"{backend} fwd % peak class"]
    assert rows["features.conv1"]["op"] == "conv11x11/4+bias+relu"


def test_per_layer_fastest_and_summary_rows(report_run):
    _, page_tables, _ = report_run
    _, rows = _layer_records(page_tables)
    # conv1: torch 0.5 + 1.25 = 1.75 ms, triton 0.25 + 1.6 = 1.85: torch. norm1: 0.6 vs 0.4: triton.
    assert rows["features.conv1"]["fastest"] == "torch" and rows["features.norm1"]["fastest"] == "triton"
    conv1 = rows["features.conv1"]
    assert "win" in conv1["torch fwd ms class"] and "win" in conv1["torch bwd ms class"]
    assert "win" not in rows["features.conv1"]["triton fwd ms class"]
    assert "win" in rows["features.norm1"]["triton bwd ms class"]
    total = rows["sum of layers"]
    # torch fwd 0.5 + 0.2, bwd 1.25 + 0.4; triton fwd 0.25 + 0.1, bwd 1.6 + 0.3
    expect = {"torch fwd ms": 0.7, "torch bwd ms": 1.65, "triton fwd ms": 0.35, "triton bwd ms": 1.9}
    for col, v in expect.items():
        assert num(total[col]) == pytest.approx(v), col
    net = rows["whole network (fwd+bwd)"]
    gap = rows["launch + gap cost (network - sum)"]
    assert num(net["torch fwd ms"]) == 4.0 and num(net["triton fwd ms"]) == 4.5
    assert num(gap["torch fwd ms"]) == pytest.approx(1.65)   # 4.0 - (0.7 + 1.65)
    assert num(gap["triton fwd ms"]) == pytest.approx(2.25)  # 4.5 - (0.35 + 1.9)
    # each layer on its fastest backend, both passes there: conv1 torch 1.75 + norm1 triton 0.4 (not the
    # fastest forward and the fastest backward of different backends: 0.35 + 1.55 = 1.9)
    assert rows["oracle (fastest backend per layer)"]["fastest"] == "2.15 ms; wins: torch 1, triton 1"


def test_error_cells_and_beyond_tolerance_marks(report_run):
    _, page_tables, page = report_run
    _, rows = _layer_records(page_tables)
    for layer in LAYERS:
        for b in BACKENDS:
            out_err, out_tol = OUT_ERR[(layer, b)]
            grad_err, grad_tol = GRAD_ERR[(layer, b)]
            cell = rows[layer][f"{b} max rel err"]
            assert [float(v) for v in cell.split(" / ")] == pytest.approx([out_err, grad_err]), (layer, b)
            beyond = out_err > out_tol or grad_err > grad_tol
            assert ("bad" in rows[layer][f"{b} max rel err class"]) == beyond, (layer, b, cell)
    beyond = records(page_tables["Beyond tolerance"])
    assert {(r["backend"], r["layer"], r["pass"]) for r in beyond} == {("triton", "features.conv1", "fwd"),
                                                                         ("triton", "features.norm1", "bwd")}
    conv1 = next(r for r in beyond if r["layer"] == "features.conv1")
    assert (num(conv1["output err"]), num(conv1["bound"])) == pytest.approx((2e-2, 8e-3))
    norm1 = next(r for r in beyond if r["layer"] == "features.norm1")
    assert (num(norm1["gradient err"]), num(norm1["bound 2"])) == pytest.approx((5e-2, 1.6e-2))
    assert "2 rows are beyond their error tolerance" in page


# --------------------------------------------------------------------------- compare
RUN_A, RUN_B = "20261127-100000.000-aaaaaa", "20261127-110000.000-bbbbbb"
# layer -> ((A ms, p20, p80), (B ms, p20, p80), hand-worked B / A and verdict)
COMPARED = {
    "features.conv1": ((1.0, 0.95, 1.05), (0.8, 0.78, 0.82), 0.8, "faster"),          # bands apart, B lower
    "features.norm1": ((0.5, 0.45, 0.55), (0.52, 0.5, 0.6), 1.04, "within noise"),     # bands overlap
    "features.conv2": ((0.4, 0.39, 0.41), (0.5, 0.48, 0.52), 1.25, "slower"),          # bands apart, B higher
    "features.conv3": ((0.3, 0.29, 0.31), (0.33, 0.31, 0.35), 1.1, "within noise"),    # B's p20 is A's p80
    "features.conv5": ((0.5, 0.45, 0.55), (0.4, 0.35, 0.45), 0.8, "within noise"),     # A's p20 is B's p80
}
# Whole network: A 64 images in 20 ms = 3,200/s, B in 16 ms = 4,000/s: 1.25x; bands apart: faster.
NET_A, NET_B = (20.0, 19.6, 20.4, 3200.0), (16.0, 15.8, 16.2, 4000.0)


ENV = {"a": {"gpu": "NVIDIA H100 80GB HBM3", "date": "2026-11-27T10:00"},
       "b": {"cpu": "AMD EPYC 9654", "date": "2026-11-27T11:00"}}


def _compare_run(out, run_id, which, scale=1.0):
    """A run of the compare tests: A's or B's rows of COMPARED and NET_A / NET_B (times x scale)."""
    with RunStore(out, run_id=run_id) as store:
        common = dict(run_id=run_id, arch="alexnet", backend="triton", dtype="float32", batch_size=BATCH,
                      image_size=224, mode="infer", device="cuda")
        for layer, (a, b, _, _) in COMPARED.items():
            ms, p20, p80 = (scale * v for v in (a if which == "a" else b))
            store.results.write(**common, layer=layer, op="conv", **{"pass": "fwd"}, ms=ms, ms_p20=p20, ms_p80=p80)
        ms, p20, p80, images = NET_A if which == "a" else NET_B
        store.results.write(**common, layer=NETWORK, op="network", **{"pass": "fwd"}, ms=scale * ms,
                            ms_p20=scale * p20, ms_p80=scale * p80, images_per_s=images / scale)
        if which == "b":  # only B has it: not compared; a failed row is not compared either
            store.results.write(**common, layer="features.conv4", op="conv", **{"pass": "fwd"}, ms=9.0,
                                ms_p20=8.0, ms_p80=10.0)
        store.results.write(**common, layer="features.fc6", op="linear", **{"pass": "fwd"}, status="failed",
                            error="RuntimeError: synthetic")
        write_summary(store.dir, {"run_id": run_id, "env": ENV[which], "config": {}})
    return out / RUNS / run_id


class _BodyText(HTMLParser):
    """Text that sits directly in <body>, outside any element."""

    def __init__(self):
        super().__init__()
        self.depth, self.stray = None, []

    def handle_starttag(self, tag, attrs):
        if tag == "body":
            self.depth = 0
        elif self.depth is not None and tag not in ("br", "img", "meta"):
            self.depth += 1

    def handle_endtag(self, tag):
        if tag == "body":
            self.depth = None
        elif self.depth:
            self.depth -= 1

    def handle_data(self, data):
        if self.depth == 0 and data.strip():
            self.stray.append(data)


def _check_compare_page(page: str, dir_a, dir_b):
    assert f"A: <code>{dir_a}</code> (NVIDIA H100 80GB HBM3, 2026-11-27T10:00)<br>" in page
    assert f"B: <code>{dir_b}</code> (AMD EPYC 9654, 2026-11-27T11:00)</p>" in page
    # every environment field that differs, including those only one run has
    for field, va, vb in (("env.cpu", None, "'AMD EPYC 9654'"), ("env.gpu", "'NVIDIA H100 80GB HBM3'", None)):
        assert html.escape(f"A and B differ in {field}: {va} vs {vb}") in page, field
    t = tables(page)
    assert t["Per layer (B ms / A ms)"]["header"] == ["arch", "backend", "mode", "layer", "pass", "A ms", "B ms",
                                                       "ratio", "verdict"]
    layers = {r["layer"]: r for r in records(t["Per layer (B ms / A ms)"])}
    assert set(layers) == set(COMPARED)
    for layer, (a, b, ratio, verdict) in COMPARED.items():
        r = layers[layer]
        assert (r["arch"], r["backend"], r["mode"], r["pass"]) == ("alexnet", "triton", "infer", "fwd")
        assert (num(r["A ms"]), num(r["B ms"]), num(r["ratio"])) == pytest.approx((a[0], b[0], ratio)), layer
        assert r["verdict"] == verdict, layer
        assert r["verdict class"] - {"l"} == ({"win"} if verdict == "faster" else {"bad"} if verdict == "slower"
                                              else set()), layer
        # names left-aligned, numbers right-aligned
        assert all("l" in r[f"{h} class"] for h in ("arch", "backend", "mode", "layer", "pass"))
        assert all(r[f"{h} class"] == set() for h in ("A ms", "B ms", "ratio"))
    assert t["Whole network"]["header"] == ["arch", "backend", "mode", "pass", "dtype", "batch", "A images/s",
                                            "B images/s", "B speedup", "verdict"]
    (net,) = records(t["Whole network"])
    assert (net["arch"], net["backend"], net["mode"], net["pass"], net["dtype"]) == (
        "alexnet", "triton", "infer", "fwd", "float32")
    assert (num(net["A images/s"]), num(net["B images/s"]), num(net["B speedup"])) == pytest.approx(
        (3200.0, 4000.0, 1.25))
    assert net["verdict"] == "faster" and net["batch"] == "64"
    assert all("l" in net[f"{h} class"] for h in ("arch", "backend", "mode", "pass", "dtype"))
    assert all(net[f"{h} class"] == set() for h in ("batch", "A images/s", "B images/s", "B speedup"))
    assert ('<p class="note">Rows are matched on arch, mode, layer, pass, backend, dtype, batch_size, image_size. '
            "within noise: the runs' 20th-80th percentile bands overlap. Whole-network speedups are images/s "
            "ratios.</p>") in page
    body = _BodyText()
    body.feed(page)
    assert body.stray == []


def test_compare_cells_two_folders(tmp_path):
    dir_a = _compare_run(tmp_path / "a", RUN_A, "a")
    dir_b = _compare_run(tmp_path / "b", RUN_B, "b")
    out = tmp_path / "cmp" / "nested"  # made with its parents
    assert compare_mod.main([str(dir_a), str(dir_b), "--out", str(out)]) == 0
    _check_compare_page((out / "compare.html").read_text(), dir_a, dir_b)


def test_compare_cells_one_folder_a_is_the_earlier_run(tmp_path):
    dir_a = _compare_run(tmp_path, RUN_A, "a")
    dir_b = _compare_run(tmp_path, RUN_B, "b")
    assert compare_mod.main([str(tmp_path), str(tmp_path)]) == 0
    _check_compare_page((dir_b / "compare.html").read_text(), dir_a, dir_b)


def test_compare_cells_of_runs_named_by_id(tmp_path):
    """--run-a / --run-b pick those runs, not the folders' latest (here ten times slower)."""
    dir_a = _compare_run(tmp_path / "a", RUN_A, "a")
    dir_b = _compare_run(tmp_path / "b", RUN_B, "b")
    _compare_run(tmp_path / "a", "20261127-120000.000-cccccc", "a", scale=10.0)
    _compare_run(tmp_path / "b", "20261127-130000.000-dddddd", "b", scale=10.0)
    assert compare_mod.main([str(tmp_path / "a"), str(tmp_path / "b"), "--run-a", RUN_A, "--run-b", RUN_B]) == 0
    _check_compare_page((dir_b / "compare.html").read_text(), dir_a, dir_b)


def test_compare_help_documents_every_argument(capsys):
    with pytest.raises(SystemExit) as exit_:
        compare_mod.main(["--help"])
    assert exit_.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert text.startswith("usage: python -m reports.compare [-h] [--run-a RUN_A] [--run-b RUN_B] [--out OUT] a b")
    for phrase in ("python -m reports.compare A B [--run-a ID] [--run-b ID] [--out DIR]: how run B differs from run A, "
                   "like with like only.",
                   "a results folder (or run folder) of the baseline run A",
                   "b results folder (or run folder) of run B",
                   "--run-a RUN_A run id in A (default: the latest; the one before B's if A is B)",
                   "--run-b RUN_B run id in B (default: the latest)",
                   "--out OUT where compare.html goes (default: B's run folder)"):
        assert phrase in text, phrase
    assert "A and B are results folders" not in text  # the summary line only, not the whole docstring


def test_compare_with_nothing_in_common_names_both_runs(tmp_path, capsys):
    dir_a = _compare_run(tmp_path / "a", RUN_A, "a")
    with ResultWriter(dir_a) as w:  # A's failed rows are not what A measured: not named
        w.write(run_id=RUN_A, arch="resnet50", backend="torch", dtype="float16", batch_size=1, image_size=224,
                mode="train", layer=NETWORK, **{"pass": "fwd"}, status="oom")
    with RunStore(tmp_path / "b", run_id=RUN_B) as store:
        for batch, image in ((32, 224), (16, 227)):
            store.results.write(run_id=RUN_B, arch="googlenet", backend="torch", dtype="bfloat16", batch_size=batch,
                                image_size=image, mode="train", layer=NETWORK, **{"pass": "fwd"}, ms=1.0)
    assert compare_mod.main([str(dir_a), str(store.dir)]) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err == ("python -m reports.compare: error: nothing to compare: no measured row of A "
                   "(alexnet/infer/triton float32 batch 64 image 224) matches one of B "
                   "(googlenet/train/torch bfloat16 batch 32 image 224; googlenet/train/torch bfloat16 batch 16 "
                   "image 227) on arch, mode, layer, pass, backend, dtype, batch_size, image_size")
    with RunStore(tmp_path / "c", run_id=RUN_B) as store:
        store.results.write(run_id=RUN_B, arch="alexnet", backend="triton", dtype="float32", batch_size=BATCH,
                            image_size=224, mode="infer", layer=NETWORK, **{"pass": "fwd"}, status="failed")
    assert compare_mod.main([str(dir_a), str(store.dir)]) == 1
    assert "matches one of B (no rows) on" in capsys.readouterr().err


def test_compare_bad_arguments_are_one_line(capsys):
    with pytest.raises(SystemExit) as exit_:
        compare_mod.main(["a", "b", "--bogus"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err == ("python -m reports.compare: error: unrecognized arguments: --bogus "
                                       "(see --help)\n")


def test_compare_runs_without_a_summary_or_a_date(tmp_path):
    """A run killed before writing summary.json still compares; a missing date is left blank."""
    dir_a = _compare_run(tmp_path / "a", RUN_A, "a")
    dir_b = _compare_run(tmp_path / "b", RUN_B, "b")
    (dir_a / "summary.json").unlink()
    write_summary(dir_b, {"env": {"gpu": "NVIDIA H100 80GB HBM3"}})
    assert compare_mod.main([str(dir_a), str(dir_b)]) == 0
    page = (dir_b / "compare.html").read_text()
    assert f"B: <code>{dir_b}</code> (NVIDIA H100 80GB HBM3, )</p>" in page
    assert len(records(tables(page)["Per layer (B ms / A ms)"])) == len(COMPARED)
    (dir_b / "summary.json").unlink()
    assert compare_mod.main([str(dir_a), str(dir_b)]) == 0
