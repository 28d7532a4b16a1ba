"""`build_report(DIR)`: a run's report.html and its PNGs, in the run's own folder, from its
results.csv, kernels.csv and summary.json (and optionally a pytest-benchmark JSON). DIR is a
results folder (its latest run, or `run_id`) or a run's folder. One folder, relative links,
no JavaScript."""

from __future__ import annotations

import html
import json
import math
from pathlib import Path

import pandas as pd

from . import charts, scaling
from .schema import NETWORK, REPORT_HTML, beyond_tolerance, load_kernels, load_results, load_summary, run_dir

CSS = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1200px; color: #222; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ccc; margin-top: 1.6em; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 2px 8px; text-align: right; }
th { background: #f3f3f3; } td.l, th.l { text-align: left; }
td.bad { background: #fde2e2; color: #a00; font-weight: 600; } td.win { background: #e3f4e3; }
tr.sum td { font-weight: 600; background: #f7f7f7; }
.note { color: #555; font-size: 0.85em; } .banner { background: #fff3cd; padding: 0.6em; border: 1px solid #e0c060; }
img { max-width: 100%; border: 1px solid #ddd; margin: 0.4em 0; }
"""


def _e(v) -> str:
    return html.escape(str(v))


def _fmt(v, digits=3) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    if isinstance(v, float):
        return f"{v:,.{digits}g}" if abs(v) < 100 else f"{v:,.0f}"
    return _e(v)


def _table(header: list[str], rows: list[list], *, left=1, classes: list[list[str]] | None = None,
           row_classes: list[str] | None = None) -> str:
    out = ["<table><thead><tr>"]
    out += [f'<th class="{"l" if i < left else ""}">{_e(h)}</th>' for i, h in enumerate(header)]
    out.append("</tr></thead><tbody>")
    for r, row in enumerate(rows):
        rc = f' class="{row_classes[r]}"' if row_classes and row_classes[r] else ""
        out.append(f"<tr{rc}>")
        for i, cell in enumerate(row):
            cls = ["l"] if i < left else []
            if classes and classes[r][i]:
                cls.append(classes[r][i])
            out.append(f'<td class="{" ".join(cls)}">{cell}</td>')
        out.append("</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def _env_section(summary: dict) -> str:
    env = summary.get("env", {})
    keys = ["date", "gpu", "driver", "cuda", "cudnn", "torch", "triton", "python", "cpu", "threads", "platform"]
    rows = [[_e(k), _e(env[k])] for k in keys if env.get(k) is not None]
    out = "<h2>Environment</h2>" + _table(["", "value"], rows, left=2)
    if env.get("command"):
        out += f'<p class="note">command: <code>{_e(env["command"])}</code></p>'
    ceil = summary.get("ceilings") or {}
    if ceil:
        sheet = ceil.get("datasheet") or {}
        rows = [[f"matmul {_e(d)} (TFLOP/s)", _fmt(v), _fmt((sheet.get("matmul_tflops") or {}).get(d))]
                for d, v in (ceil.get("matmul_tflops") or {}).items()]
        rows.append(["device copy, read + write (GB/s)", _fmt(ceil.get("copy_gbps")),
                     _fmt(sheet["copy_tbps"] * 1e3) if sheet.get("copy_tbps") else ""])
        out += "<h3>Ceilings</h3>" + _table(["", "measured at the start of the run", "datasheet"], rows)
        out += ('<p class="note">Every "% of peak" below is against the measured ceiling: matmul for '
                "layers with FLOPs, copy bandwidth for the rest (a byte floor per layer).</p>")
    return out


def _headline(frame: pd.DataFrame) -> str:
    net = frame[(frame.layer == NETWORK) & frame["pass"].isin(["train_step", "fwd"])]
    net = net[~((net["mode"] == "train") & (net["pass"] == "fwd"))]
    if net.empty:
        return "<h2>Throughput</h2><p>No whole-network rows.</p>"
    rows, classes = [], []
    for (arch, mode, batch), group in net.groupby(["arch", "mode", "batch_size"], sort=False):
        base = group[(group.backend == "torch") & (group.status == "ok")].images_per_s
        base = base.iloc[0] if len(base) else None
        for r in group.itertuples():
            ok = r.status == "ok"
            speed = r.images_per_s / base if ok and base else None
            rows.append([_e(arch), _e(mode), _fmt(batch), _e(r.backend),
                         _fmt(r.images_per_s) if ok else _e(r.status.upper()),
                         _fmt(speed) + ("x" if speed else ""), _fmt(r.ms),
                         _fmt(r.peak_bytes / 2**30) if r.peak_bytes == r.peak_bytes else ""])
            classes.append(["", "", "", "", "" if ok else "bad", "win" if speed and speed > 1 else "", "", ""])
    return ("<h2>Throughput</h2>"
            + _table(["arch", "mode", "batch", "backend", "images/s", "vs torch", "ms", "peak GiB"], rows,
                     left=4, classes=classes)
            + '<p class="note">train: one full training step (paper recipe, SGD momentum + weight decay, '
              "synthetic data on the device); infer: forward with BatchNorm folded.</p>")


def _layer_section(frame: pd.DataFrame, arch: str, mode: str) -> str:
    rows_df = frame[(frame.arch == arch) & (frame["mode"] == mode)]
    layers = rows_df[rows_df.layer != NETWORK]
    if layers.empty:
        return ""
    # graph replays (`<backend>+graph`) time whole steps only: the headline shows them
    backends = [b for b in dict.fromkeys(rows_df.backend) if not str(b).endswith("+graph")]
    passes = ["fwd", "bwd"] if mode == "train" else ["fwd"]
    order = list(dict.fromkeys(layers.layer))
    cell = {(r.layer, r.backend, r["pass"]): r for _, r in layers.iterrows()}
    header = ["layer", "op"] + [f"{b} {p} ms" for b in backends for p in passes] + \
        [f"{b} fwd % peak" for b in backends] + [f"{b} max rel err" for b in backends] + ["fastest"]
    body, classes = [], []
    oracle_ms = 0.0  # each layer on its own fastest backend, every pass on that backend
    oracle_unknown = 0  # layers no backend measured in every pass
    wins: dict[str, int] = {}
    sums = {(b, p): 0.0 for b in backends for p in passes}
    # layers whose (backend, pass) time is unknown (failed, or measured on another backend only):
    # that backend's sum is then a lower bound and its network gap unknown
    unknown = {(b, p): 0 for b in backends for p in passes}
    measured_passes = {(k[0], k[2]) for k in cell}
    for layer in order:
        any_row = next(r for k, r in cell.items() if k[0] == layer)
        row, cls = [_e(layer), _e(any_row.op)], ["", ""]
        fastest = {}
        for b in backends:
            for p in passes:
                r = cell.get((layer, b, p))
                if (r is None or r.status != "ok") and (layer, p) in measured_passes:
                    unknown[(b, p)] += 1
                if r is None:
                    row.append("")
                    cls.append("")
                elif r.status != "ok":
                    row.append(f'{_e(r.status.upper())}')
                    cls.append("bad")
                else:
                    row.append(_fmt(r.ms))
                    cls.append("")
                    sums[(b, p)] += r.ms
                    fastest.setdefault(p, []).append((r.ms, b))
        for b in backends:
            r = cell.get((layer, b, "fwd"))
            ok = r is not None and r.status == "ok"
            row.append(_fmt(r.pct_peak, 2) if ok else "")
            cls.append("bad" if ok and over_ceiling(r.pct_peak) else "")
        for b in backends:
            text, bad = _error_cell([cell.get((layer, b, p)) for p in passes])
            row.append(text)
            cls.append("bad" if bad else "")
        total_by_backend: dict[str, float] = {}
        for lst in fastest.values():
            for ms, b in lst:
                total_by_backend[b] = total_by_backend.get(b, 0.0) + ms
        complete = {b: t for b, t in total_by_backend.items()
                    if all((layer, b, p) in cell and cell[(layer, b, p)].status == "ok" for p in passes)}
        winner = min(complete, key=complete.get) if complete else ""
        oracle_unknown += not winner
        if winner:
            wins[winner] = wins.get(winner, 0) + 1
            oracle_ms += complete[winner]
            for i, h in enumerate(header):
                if h.startswith(f"{winner} ") and h.endswith(" ms"):
                    cls[i] = "win"
        row.append(_e(winner))
        cls.append("")
        body.append(row)
        classes.append(cls)
    # Summary rows: sum of layers, the whole network, their difference, the oracle.
    net = {(r.backend, r["pass"]): r for _, r in rows_df[rows_df.layer == NETWORK].iterrows()}
    net_pass = "fwd+bwd" if mode == "train" else "fwd"
    sum_row = ["sum of layers", ""] + [_lower_bound(sums[(b, p)], unknown[(b, p)], len(order))
                                       for b in backends for p in passes] + \
        [""] * (2 * len(backends))
    sum_row.append("")
    net_row = [f"whole network ({net_pass})", ""]
    gap_row = ["launch + gap cost (network - sum)", ""]
    for b in backends:
        r = net.get((b, net_pass))
        ok = r is not None and r.status == "ok"
        net_row += [_fmt(r.ms) if ok else (_e(r.status.upper()) if r is not None else "")] + [""] * (len(passes) - 1)
        complete = not any(unknown[(b, p)] for p in passes)
        gap = r.ms - sum(sums[(b, p)] for p in passes) if ok and complete else None
        gap_row += [_fmt(gap)] + [""] * (len(passes) - 1)
    net_row += [""] * (2 * len(backends) + 1)
    gap_row += [""] * (2 * len(backends) + 1)
    oracle = ["oracle (fastest backend per layer)", ""] + [""] * (len(backends) * len(passes)) + \
        [""] * (2 * len(backends))
    oracle.append(_lower_bound(oracle_ms, oracle_unknown, len(order)) + " ms; wins: "
                  + ", ".join(f"{b} {n}" for b, n in wins.items()))
    body += [sum_row, net_row, gap_row, oracle]
    classes += [[""] * len(header)] * 4
    return (f"<h3>{_e(arch)} {_e(mode)}: per layer</h3>"
            + _table(header, body, left=2, classes=classes,
                     row_classes=[""] * (len(body) - 4) + ["sum"] * 4)
            + '<p class="note">Each layer replayed in isolation on its captured input (forward; backward '
              "alone, from a retained graph). An Inception block is one unit: the Triton backend runs it "
              "as one fused set of kernels. Green: the backend with the lowest total for that layer. "
              "max rel err: max |out - ref| / max |ref| of the output (train: / of the worst gradient) "
              "against the reference on the same input; red when beyond the bound derived from the dtype. "
              "A % of peak above 100 (red) means the measured ceiling is too low: a ceiling measurement "
              "problem, not a fast layer. A sum over layers some of which were not measured (failed, OOM) "
              "is a lower bound (&ge;), and that backend's network gap is left blank.</p>")


def _lower_bound(total: float, unknown: int, layers: int) -> str:
    """A sum over layers: the sum; '' when none was measured; '>= sum (N not measured)' when
    some were not (their time is unknown, so the sum only bounds the total from below)."""
    if unknown == 0:
        return _fmt(total)
    if unknown >= layers:
        return ""
    return f"&ge; {_fmt(total)} ({unknown} not measured)"


def over_ceiling(pct_peak) -> bool:
    """A % of the measured ceiling above 100: the ceiling, not the layer, is wrong."""
    return pct_peak == pct_peak and pct_peak is not None and pct_peak > 100


def _error_cell(rows) -> tuple[str, bool]:
    """'output / gradient' max relative errors of a layer's rows, and whether any is beyond
    its bound (a NaN error beside a bound shows as nan)."""
    rows = [r for r in rows if r is not None and r.status == "ok"]
    if not rows:
        return "", False

    def first(err, tol):
        for r in rows:
            if r[tol] == r[tol]:
                return f"{r[err]:.2g}" if r[err] == r[err] else "nan"
        return None

    text = " / ".join(v for v in (first("max_rel_err", "rel_tol"), first("grad_max_rel_err", "grad_rel_tol")) if v)
    return _e(text), bool(beyond_tolerance(pd.DataFrame(rows)).any())


def _tolerance_section(frame: pd.DataFrame) -> str:
    bad = frame[beyond_tolerance(frame)]
    if bad.empty:
        return ""
    rows = [[_e(r.arch), _e(r.backend), _e(r["mode"]), _e(r.layer), _e(r["pass"]), _fmt(r.max_rel_err),
             _fmt(r.rel_tol), _fmt(r.grad_max_rel_err), _fmt(r.grad_rel_tol), _e(r.reference)]
            for _, r in bad.iterrows()]
    return ("<h2>Beyond tolerance</h2>" + _table(
        ["arch", "backend", "mode", "layer", "pass", "output err", "bound", "gradient err", "bound", "reference"],
        rows, left=5) + '<p class="note">Errors are max |out - ref| / max |ref|; the bound is atol + rtol of '
        "the dtype's derived tolerance at the layer's reduction length.</p>")


def _kernels_section(kernels: pd.DataFrame, top: int = 3) -> str:
    """Per arch, mode, layer, backend and pass: the kernels that took most of its time."""
    if kernels.empty:
        return ""
    rows = []
    # Each layer's backends side by side (e.g. cuDNN's kernel beside ours), layers in run order.
    order = {layer: i for i, layer in enumerate(dict.fromkeys(kernels.layer))}
    kernels = kernels.assign(_order=kernels.layer.map(order)).sort_values(["arch", "mode", "_order", "pass"],
                                                                           kind="stable")
    for key, group in kernels.groupby(["arch", "mode", "layer", "pass", "backend"], sort=False):
        group = group.sort_values("us", ascending=False)
        shown = [f"{_e(_short(r.kernel))} {_fmt(100 * r.share, 2) if r.share == r.share else '?'}%"
                 for r in group.head(top).itertuples()]
        rest = len(group) - top
        rows.append([*(_e(k) for k in key), "<br>".join(shown) + (f"<br>+{rest} more" if rest > 0 else ""),
                     _e(group.source.iloc[0])])
    on_cpu = (kernels.source == "cpu ops").any()
    note = ('<p class="note">Device kernels: every GPU kernel the replay launched, share of their summed '
            "device time (cuDNN names carry the tile shape; Triton kernels appear under their function "
            "name).</p>")
    if on_cpu:
        note += ('<p class="note">cpu ops: there are no device kernels on a CPU. The shares split the CPU '
                 "time of the replay among the ATen ops under it by self time (which ATen CPU path ran, "
                 "e.g. mkldnn vs a native loop) and Python outside any op. Under the Triton interpreter a "
                 "row named <code>triton KERNEL</code> is that kernel run as Python: interpreter time, "
                 "not kernel time.</p>")
    return ("<h2>Kernels per layer</h2>" + _table(["arch", "mode", "layer", "pass", "backend", "kernels (share)",
                                                   "source"], rows, left=7) + note)


def _short(name: str, limit: int = 90) -> str:
    return name if len(name) <= limit else name[: limit - 3] + "..."


def _banners(frame: pd.DataFrame, summary: dict) -> list[str]:
    out = []
    if summary.get("interrupted"):
        out.append(f"This run was interrupted ({summary.get('stopped_by', 'Ctrl-C')}): the tables hold the rows "
                   "measured before it stopped.")
    elif summary and not summary.get("finished", True):
        out.append("This run did not finish (killed, or still running): the tables hold the rows written so far.")
    if not summary:
        out.append("This run has no summary.json (killed before writing it): no environment or ceilings.")
    if frame.attrs.get("truncated"):
        out.append("results.csv ends mid-line (the run was killed while writing a row): that partial row is "
                   "left out.")
    interp = frame[(frame.backend == "triton") & frame.device.astype(str).str.contains("interpreter")]
    if not interp.empty:
        out.append("The triton rows come from a CPU: Triton's interpreter ran the kernels as Python. They show "
                   "the kernels run and how correct they are; their times are not kernel times.")
    if (frame.pct_peak > 100).any():
        out.append("Some rows exceed 100% of the measured ceiling: the ceiling measurement is too low for them "
                   "(on a CPU, the matmul it ran is a poor ceiling), not the layers faster than the device.")
    n_bad = int(beyond_tolerance(frame).sum())
    if n_bad:
        out.append(f"{n_bad} rows are beyond their error tolerance (see 'Beyond tolerance').")
    return [f'<p class="banner">{_e(text)}</p>' for text in out]


def _failures(frame: pd.DataFrame) -> str:
    bad = frame[frame.status != "ok"]
    if bad.empty:
        return ""
    rows = [[_e(r.arch), _e(r.backend), _e(r["mode"]), _e(r.layer), _e(r["pass"]), _e(r.status), _e(r.error)]
            for _, r in bad.iterrows()]
    return "<h2>Failed, OOM and skipped measurements</h2>" + _table(
        ["arch", "backend", "mode", "layer", "pass", "status", "error"], rows, left=7)


def load_benchmark_json(path: str | Path) -> pd.DataFrame:
    """A pytest-benchmark JSON (from our suite) as one row per benchmark."""
    doc = json.loads(Path(path).read_text())
    rows = []
    for b in doc.get("benchmarks", []):
        info = b.get("extra_info", {})
        ceiling = " ".join(f"{v:.3g}" if isinstance(v, float) else str(v)
                           for v in (info.get("ceiling"), info.get("ceiling_value"), info.get("ceiling_unit")) if v)
        rows.append({"group": b.get("group"), "name": b.get("name"), "provider": info.get("provider"),
                     "pass": info.get("pass"), "dtype": info.get("dtype"), "batch": info.get("batch"),
                     "device": info.get("device"), "median_ms": info.get("median_ms"),
                     "tflops": info.get("tflops"), "gbps": info.get("gbps"), "pct_peak": info.get("pct_peak"),
                     "ceiling": ceiling, "speedup_vs_torch": info.get("speedup_vs_torch"),
                     "max_rel_error": info.get("max_rel_error")})
    frame = pd.DataFrame(rows, columns=["group", "name", "provider", "pass", "dtype", "batch", "device", "median_ms",
                                        "tflops", "gbps", "pct_peak", "ceiling", "speedup_vs_torch",
                                        "max_rel_error"])
    frame.attrs["source"] = (f"{Path(path).name}: pytest-benchmark run of {doc.get('datetime', '?')} on "
                             f"{(doc.get('machine_info') or {}).get('node', '?')}")
    return frame


def _kernel_section(bench: pd.DataFrame, out_dir: Path) -> str:
    """The kernel benchmarks of a pytest-benchmark JSON: another run than this report's, with
    its own device, dtype, batch and measured ceilings, so each row names them."""
    if bench.empty:
        return ""
    png = charts.kernel_speedups(bench, out_dir)
    rows = [[_e(r.group), _e(r.provider), _e(r.dtype), _fmt(r.batch), _e(r.device), _fmt(r.median_ms),
             _fmt(r.tflops), _fmt(r.gbps), _fmt(r.pct_peak), _e(r.ceiling), _fmt(r.speedup_vs_torch),
             _fmt(r.max_rel_error)] for r in bench.itertuples()]
    classes = [[""] * 8 + ["bad" if over_ceiling(r.pct_peak) else ""] + [""] * 3 for r in bench.itertuples()]
    out = "<h2>Kernel benchmarks</h2>"
    if png:
        out += f'<img src="{_e(png)}" alt="kernel speedups">'
    return out + _table(["benchmark", "provider", "dtype", "batch", "device", "median ms", "TFLOP/s", "GB/s",
                         "% peak", "ceiling (% peak against)", "vs torch", "fwd max rel err"], rows, left=5,
                        classes=classes) + (
        f'<p class="note">From {_e(bench.attrs.get("source", "a pytest-benchmark JSON"))}: not this run; its '
        "% of peak is against that run's own measured ceiling, named per row. Benchmarks that were skipped "
        "(Triton providers without a CUDA device) or errored before timing are not in the JSON. The error is "
        "the forward output's against float64, on fwd+bwd rows too (the test suite checks the gradients).</p>")


def build_report(out_dir: str | Path, *, run_id: str | None = None, benchmark_json: str | Path | None = None) -> Path:
    """Write the run's report.html (+ PNGs beside it, in the run's folder); returns its path."""
    folder = run_dir(out_dir, run_id)
    frame = load_results(folder)
    summary = load_summary(folder)
    kernels = load_kernels(folder)
    dtype = frame.dtype.iloc[0] if len(frame) else "float32"
    parts = [f"<h1>convbench report</h1><p class='note'>run {_e(summary.get('run_id', folder.name))}</p>"]
    parts += _banners(frame, summary)
    parts.append(_env_section(summary))
    parts.append(_headline(frame))
    png = charts.throughput(frame, folder)
    if png:
        parts.append(f'<img src="{_e(png)}" alt="throughput by backend">')
    for arch in dict.fromkeys(frame.arch):
        parts.append(f"<h2>{_e(arch)}</h2>")
        for mode in dict.fromkeys(frame[frame.arch == arch]["mode"]):
            parts.append(_layer_section(frame, arch, mode))
            for png in (charts.layer_latency(frame, arch, mode, folder),
                        charts.roofline(frame, summary.get("ceilings") or {}, dtype, arch, mode, folder)):
                if png:
                    parts.append(f'<img src="{_e(png)}" alt="{_e(png[:-4])}">')
        png = charts.memory(frame, arch, folder)
        if png:
            parts.append(f'<img src="{_e(png)}" alt="per-layer memory">')
    parts.append(scaling.section_html(folder))
    parts.append(_tolerance_section(frame))
    parts.append(_kernels_section(kernels))
    parts.append(_failures(frame))
    if benchmark_json:
        parts.append(_kernel_section(load_benchmark_json(benchmark_json), folder))
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>convbench report</title>"
            f"<style>{CSS}</style></head><body>{''.join(parts)}</body></html>")
    path = folder / REPORT_HTML
    path.write_text(page)
    return path
