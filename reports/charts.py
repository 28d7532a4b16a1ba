"""matplotlib charts of a result frame, each written to a PNG and returned as its file name.
Reads frames only; never launches a kernel."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from .schema import NETWORK

BACKEND_COLORS = {"torch": "#4c72b0", "compile": "#dd8452", "triton": "#55a868",
                  "torch+graph": "#8fa8d0", "compile+graph": "#edb48f", "triton+graph": "#95cba3"}
MARKERS = {"torch": "o", "compile": "s", "triton": "^"}


def _color(backend: str) -> str:
    return BACKEND_COLORS.get(backend, "#8172b3")


def _save(fig, out_dir: Path, name: str) -> str:
    fig.tight_layout()
    fig.savefig(out_dir / name, dpi=110)
    plt.close(fig)
    return name


def layer_latency(frame: pd.DataFrame, arch: str, mode: str, out_dir: Path) -> str | None:
    """Horizontal bars: per layer, each backend's forward (solid) + backward (hatched) ms."""
    rows = frame[(frame.arch == arch) & (frame["mode"] == mode) & (frame.layer != NETWORK)
                 & (frame.status == "ok") & frame["pass"].isin(["fwd", "bwd"])]
    if rows.empty:
        return None
    layers = list(dict.fromkeys(rows.layer))
    backends = list(dict.fromkeys(rows.backend))
    pivot = rows.pivot_table(index="layer", columns=["backend", "pass"], values="ms", aggfunc="first")
    height = 0.8 / len(backends)
    fig, ax = plt.subplots(figsize=(9, max(3, 0.32 * len(layers) * max(1, len(backends) / 2))))
    y = np.arange(len(layers))
    for i, backend in enumerate(backends):
        fwd = pivot.get((backend, "fwd"), pd.Series(dtype=float)).reindex(layers).fillna(0).to_numpy()
        bwd = pivot.get((backend, "bwd"), pd.Series(dtype=float)).reindex(layers).fillna(0).to_numpy()
        pos = y + i * height
        ax.barh(pos, fwd, height, color=_color(backend), label=f"{backend} fwd")
        if bwd.any():
            ax.barh(pos, bwd, height, left=fwd, color=_color(backend), alpha=0.45, hatch="//",
                    label=f"{backend} bwd")
    ax.set_yticks(y + height * (len(backends) - 1) / 2, layers, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("ms per layer (replayed in isolation)")
    ax.set_title(f"{arch} {mode}: per-layer latency")
    ax.legend(fontsize=7, loc="lower right")
    return _save(fig, out_dir, f"latency-{arch}-{mode}.png")


def roofline(frame: pd.DataFrame, ceilings: dict, dtype: str, arch: str, mode: str, out_dir: Path) -> str | None:
    """Log-log roofline with the measured roofs; one point per layer, pass and backend."""
    rows = frame[(frame.arch == arch) & (frame["mode"] == mode) & (frame.layer != NETWORK)
                 & (frame.status == "ok") & (frame.gflop > 0) & (frame.gbytes > 0)]
    peak = (ceilings.get("matmul_tflops") or {}).get(dtype)
    bw = ceilings.get("copy_gbps")
    if rows.empty or not peak or not bw:
        return None
    intensity = rows.gflop / rows.gbytes  # FLOP per byte
    fig, ax = plt.subplots(figsize=(7.5, 5))
    xs = np.logspace(np.log10(max(intensity.min() / 4, 1e-2)), np.log10(intensity.max() * 4), 200)
    ax.plot(xs, np.minimum(peak, bw * xs / 1e3), color="black", lw=1.5,
            label=f"measured roofs: {peak:.4g} TFLOP/s, {bw:.4g} GB/s")
    for backend, group in rows.groupby("backend"):
        ax.scatter(group.gflop / group.gbytes, group.gflop / (group.ms * 1e-3) / 1e3, s=18,
                   marker=MARKERS.get(backend, "o"), color=_color(backend), label=backend, alpha=0.8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("arithmetic intensity (FLOP / byte, byte floor per layer)")
    ax.set_ylabel("achieved TFLOP/s")
    ax.set_title(f"{arch} {mode}: roofline ({dtype})")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    return _save(fig, out_dir, f"roofline-{arch}-{mode}.png")


def memory(frame: pd.DataFrame, arch: str, out_dir: Path) -> str | None:
    """Per-layer activation, saved-for-backward and parameter bytes (first backend that has
    them), with each backend's measured peak."""
    rows = frame[(frame.arch == arch) & (frame["mode"] == "train") & (frame.layer != NETWORK)
                 & (frame["pass"] == "fwd") & frame.act_bytes.notna()]
    if rows.empty:
        return None
    backend = "triton" if (rows.backend == "triton").any() else rows.backend.iloc[0]
    rows = rows[rows.backend == backend].drop_duplicates("layer")
    mib = 2**20
    fig, ax = plt.subplots(figsize=(9, max(3, 0.3 * len(rows))))
    y = np.arange(len(rows))
    left = np.zeros(len(rows))
    for col, color, label in (("act_bytes", "#4c72b0", "activation"), ("saved_bytes", "#c44e52", "saved for backward"),
                              ("param_bytes", "#8c8c8c", "parameters")):
        vals = rows[col].fillna(0).to_numpy() / mib
        ax.barh(y, vals, left=left, color=color, label=label)
        left += vals
    ax.set_yticks(y, rows.layer, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("MiB per layer")
    peaks = frame[(frame.arch == arch) & (frame.layer == NETWORK) & (frame["pass"] == "train_step")
                  & frame.peak_bytes.notna()]
    title = f"{arch} train: per-layer memory ({backend} backend)"
    if not peaks.empty:
        title += "\npeak: " + ", ".join(f"{r.backend} {r.peak_bytes / 2**30:.2f} GiB" for r in peaks.itertuples())
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    return _save(fig, out_dir, f"memory-{arch}.png")


def throughput(frame: pd.DataFrame, out_dir: Path) -> str | None:
    """images/s per arch and backend (training step, or inference forward), one bar group
    per batch size when a run has several."""
    rows = frame[(frame.layer == NETWORK) & (frame.status == "ok") & frame.images_per_s.notna()
                 & frame["pass"].isin(["train_step", "fwd"])]
    if rows.empty:
        return None
    rows = rows.assign(key=rows.arch + " " + rows["mode"] + " b" + rows.batch_size.astype(int).astype(str))
    keys = list(dict.fromkeys(rows.key))
    backends = list(dict.fromkeys(rows.backend))
    width = 0.8 / len(backends)
    fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(keys) * len(backends)), 4))
    x = np.arange(len(keys))
    for i, backend in enumerate(backends):
        vals = rows[rows.backend == backend].set_index("key").images_per_s.reindex(keys)
        ax.bar(x + i * width, vals.fillna(0), width, color=_color(backend), label=backend)
    ax.set_xticks(x + width * (len(backends) - 1) / 2, keys, fontsize=8, rotation=15)
    ax.set_ylabel("images / s")
    ax.set_title("throughput (train: full training step; infer: forward)")
    ax.legend(fontsize=8)
    return _save(fig, out_dir, "throughput.png")


def kernel_speedups(bench: pd.DataFrame, out_dir: Path) -> str | None:
    """Speedup over the torch provider per kernel benchmark (pytest-benchmark JSON)."""
    rows = bench[bench.provider.ne("torch") & bench.speedup_vs_torch.notna()]
    if rows.empty:
        return None
    labels = list(dict.fromkeys(rows.group))
    providers = list(dict.fromkeys(rows.provider))
    width = 0.8 / len(providers)
    fig, ax = plt.subplots(figsize=(9, max(3, 0.3 * len(labels) * len(providers))))
    y = np.arange(len(labels))
    for i, provider in enumerate(providers):
        vals = rows[rows.provider == provider].set_index("group").speedup_vs_torch.reindex(labels)
        ax.barh(y + i * width, vals.fillna(0), width, color=_color(provider), label=provider)
    ax.axvline(1.0, color="black", lw=1)
    ax.set_yticks(y + width * (len(providers) - 1) / 2, labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("speedup vs torch (median, do_bench)")
    ax.set_title("kernel benchmarks")
    ax.legend(fontsize=7)
    return _save(fig, out_dir, "kernel-speedups.png")
