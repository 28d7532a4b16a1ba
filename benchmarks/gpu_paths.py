"""Sweep items for the per-shape path race (kernels/race.py) and the tuned table's dispatch
records that come out of them.

The 1x1 GEMM path (kernels/conv1x1.py) serves every 1x1 stride-1, unpadded, one-group conv:
ResNet-50's reduce / expand convs and GoogLeNet's conv2 (forward and both gradients), and
the Inception blocks' fused 1x1 and pool projection, whose backward runs as 1x1 conv
data-grad and weight-grad. `path_items` makes one sweep item per such layer and pass on the
1x1 kernel, built from `sweep.conv_items` with the kernel swapped: the same closure through
the public launcher reaches the 1x1 kernel because forcing one of its configs forces its path
(`race.py`, rule 1), just as the generic items' forced configs keep them on the generic
kernel. `dispatch_records` then turns the two winners of a layer's pass (generic and 1x1)
into the table's record of which path won.

Hooking into benchmarks/sweep.py (two lines):
  all_items:   items += gpu_paths.path_items(layers)   after the loop, so these items come
               after every generic item (a generic weight-grad follow-up split then takes its
               own kernel's winner, never a 1x1 config); `layers` as all_items got them.
  step_sweep:  best = best_entries(entries)
               tuned.write_table(path, ..., best, dispatch=gpu_paths.dispatch_records(best), ...)
`configs_for` needs nothing: every CONV1X1 / CONV1X1_WGRAD config fits an H100's shared
memory in bf16 (213,016 bytes at most, output tile included). tests/test_sweep.py lists the
three 1x1 kernels as not in `all_items` until then.
"""

from __future__ import annotations

import dataclasses
import os
from unittest import mock

import torch

import kernels.conv1x1 as k1x1
from kernels import race

from .shapes import ConvShape

KERNELS = {"forward": "_conv1x1_fwd_kernel", "dgrad": "_conv1x1_dgrad_kernel", "wgrad": "_conv1x1_wgrad_kernel"}
GENERIC = {"forward": "_conv_fwd_kernel", "dgrad": "_conv_dgrad_kernel", "wgrad": "_conv_wgrad_kernel"}
SITES = {"forward": "conv_forward", "dgrad": "conv_dgrad", "wgrad": "conv_wgrad"}


def is_gemm1x1(s: ConvShape) -> bool:
    """The shapes the 1x1 path may serve (kernels.conv1x1.eligible, on a ConvShape)."""
    return (s.R, s.kw, s.stride, s.padding, s.groups) == (1, 1, 1, 0, 1)


def wgrad_split(s: ConvShape, batch: int, sm_count: int = 132) -> int:
    """The split count the 1x1 weight-grad's heuristic asks for on a card of `sm_count` SMs
    (an H100's 132), as the table will record it."""
    pixels = batch * s.H * s.width
    with mock.patch.dict(os.environ, {"CONVBENCH_TUNED": "off"}), \
            mock.patch.object(k1x1, "sm_count", lambda device: sm_count):
        rows = k1x1.wgrad_split_rows(pixels, s.K, s.C, torch.device("cuda"), None)
    return -(-pixels // rows)


def conv1x1_items(s: ConvShape, passes=("forward", "dgrad", "wgrad")) -> list:
    """The 1x1 kernels' items of one layer (none where the 1x1 path cannot serve it)."""
    from . import sweep  # sweep may import this module

    if not is_gemm1x1(s):
        return []
    items = sweep.conv_items(s, passes, splits=[wgrad_split(s, sweep.BATCH)])
    return [dataclasses.replace(item, kernel=KERNELS[item.pass_], follows=False) for item in items]


def path_items(layers) -> list:
    """Every 1x1-path item of the nets' layers (sweep.all_items's `layers`): conv layers, and
    the Inception blocks' fused 1x1 and pool projection (data-grad and weight-grad), named as
    sweep.inception_items names their generic items."""
    items, seen = [], set()
    for layer in layers:
        if layer.kind == "conv":
            new = conv1x1_items(layer.shape)
        elif layer.kind == "inception":
            b = layer.shape
            new = [item for suffix, n in (("fused1x1", b.c1 + b.r3 + b.r5), ("pool_proj", b.pool_proj))
                   for item in conv1x1_items(ConvShape(f"{b.name}.{suffix}", b.C, b.H, n, 1), ("dgrad", "wgrad"))]
        else:
            continue
        for item in new:
            key = (item.kernel, item.pass_, item.shape_key)
            if key not in seen:
                seen.add(key)
                items.append(item)
    return items


def dispatch_records(entries: list[dict]) -> list[dict]:
    """The tuned table's dispatch records (kernels/tuned.py) from its entries (the sweep's
    `best_entries`): wherever a layer's pass has a timed winner on both the generic and the
    1x1 kernel, which path won and both times. The key is the 1x1 kernel's GEMM sizes (what
    `conv.dispatch_key` gives at run time); one record per (site, dtype, key)."""
    by_pass: dict[tuple, dict[str, dict]] = {}
    for e in entries:
        for pass_, kernel in (*KERNELS.items(), *GENERIC.items()):
            if e["kernel"] == kernel and e.get("pass") == pass_ and e.get("ms"):
                path = "gemm1x1" if kernel in KERNELS.values() else "generic"
                by_pass.setdefault((e.get("layer"), pass_, e["dtype"]), {})[path] = e
    records, seen = [], set()
    for (layer, pass_, dtype), found in by_pass.items():
        if set(found) != set(race.PATHS):
            continue
        key = {k: found["gemm1x1"]["key"][k] for k in ("PIXELS", "C", "K")}
        slot = (pass_, dtype, tuple(sorted(key.items())))
        if slot in seen:
            continue
        seen.add(slot)
        ms = {path: found[path]["ms"] for path in race.PATHS}
        records.append({"site": SITES[pass_], "dtype": dtype, "key": key, "path": min(ms, key=ms.get), "ms": ms,
                        "layer": layer})
    return records
