"""Sweep items for the per-shape path race (kernels/race.py) and the tuned table's dispatch
records that come out of them.

Each path other than the generic kernel's is a `PathSpec`: the layers it may serve, the
kernel each pass's configs are forced on, the passes swept. `path_items` makes one sweep
item per such layer and pass, built from `sweep.conv_items` with the kernel swapped and the
launch wrapped in `race.forced_path`, so the public launcher takes that path and the
sweep's forced configs land on its kernels (a path that runs the generic kernels on a
rewritten problem, e.g. a space-to-depth stem, records its entries under the rewritten
shape's key, which is what its launches look up). Each item carries the layer's dispatch
key (`kernels.conv.dispatch_key`), and `dispatch_records` turns the winners of a layer's
pass on two or more paths, the generic kernel's among them, into the table's record of
which path won and every path's time.

The 1x1 GEMM path (kernels/conv1x1.py) serves every 1x1 stride-1, unpadded, one-group conv:
ResNet-50's reduce / expand convs and GoogLeNet's conv2 (forward and both gradients), and
the Inception blocks' fused 1x1 and pool projection, whose backward runs as 1x1 conv
data-grad and weight-grad. Its weight-grad items take the split count its own launcher
asks for. The stems' space-to-depth path (kernels/stem.py, "s2d") serves AlexNet's, GoogLeNet's
and ResNet-50's first conv, forward and weight-grad (an image input takes no data-grad) at
the generic weight-grad's first split count. The TMA KxK path (kernels/conv_tma.py,
"tma_kxk") serves the stride-1, one-group 3x3 and 5x5 convs whose outputs an H100 config's
patch tiles (GoogLeNet's conv3 and its 3x3 / 5x5 branches up to 4e, ResNet-50's layer1-3
3x3s), each pass, at its own weight-grad split count.

Hooked into benchmarks/sweep.py: `path_sweep_items` (the `paths` step) and
`step_sweep(..., dispatch=True)`, which writes `dispatch_records(entries)` into the table.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from unittest import mock

import torch

import kernels.conv as kconv
import kernels.conv1x1 as k1x1
import kernels.conv_tma as ktma
import kernels.stem as kstem
from kernels import configs as kconfigs
from kernels import race

from . import sweep
from .shapes import ConvShape

KERNELS = {"forward": "_conv1x1_fwd_kernel", "dgrad": "_conv1x1_dgrad_kernel", "wgrad": "_conv1x1_wgrad_kernel"}
GENERIC = {"forward": "_conv_fwd_kernel", "dgrad": "_conv_dgrad_kernel", "wgrad": "_conv_wgrad_kernel"}
SITES = {"forward": "conv_forward", "dgrad": "conv_dgrad", "wgrad": "conv_wgrad"}


def is_gemm1x1(s: ConvShape) -> bool:
    """The shapes the 1x1 path may serve (kernels.conv1x1.eligible, on a ConvShape)."""
    return (s.R, s.kw, s.stride, s.padding, s.groups) == (1, 1, 1, 0, 1)


@dataclasses.dataclass(frozen=True)
class PathSpec:
    """A conv path beside the generic kernel, as the sweep sees it (on an H100's configs)."""
    name: str
    kernels: dict  # pass -> the kernel whose configs the sweep forces
    eligible: Callable[[ConvShape], bool]
    passes: tuple = ("forward", "dgrad")
    split: Callable[[ConvShape, int], int] | None = None  # (layer, batch) -> the weight-grad's split count


def _on_gpu(fn: Callable) -> Callable:
    """`fn` evaluated as on an H100: the GPU config lists (a path's eligibility may depend on
    its configs' tiles), its 132 SMs, no tuned table."""
    def wrapped(*args):
        with mock.patch.dict(os.environ, {"CONVBENCH_TUNED": "off"}), \
                mock.patch.object(kconfigs, "interpreting", lambda: False), \
                mock.patch.object(ktma, "sm_count", lambda device: 132):
            return fn(*args)
    return wrapped


@_on_gpu
def _tma_serves(s: ConvShape) -> bool:
    geo = s.geometry(sweep.BATCH)
    return ktma.geometry_served(geo) and ktma.geometry_served(geo, grad=True)


@_on_gpu
def _tma_split(s: ConvShape, batch: int) -> int:
    return ktma.wgrad_splits(s.geometry(batch), torch.device("cuda"), None)


PATH_SPECS = {
    "gemm1x1": PathSpec("gemm1x1", KERNELS, is_gemm1x1, ("forward", "dgrad", "wgrad")),
    # the stems' space-to-depth rewrite (kernels/stem.py) runs the generic kernels on the
    # rewritten stride-1 conv (entries keyed by its shape, as its launches look them up); a
    # net's image input takes no data-grad; its weight-grad keeps the layer's pixel count,
    # so the original geometry's split counts serve it
    "s2d": PathSpec("s2d", GENERIC, lambda s: kstem.eligible_s2d(s.geometry(sweep.BATCH)), ("forward", "wgrad")),
    # stride-1 KxK convs from TMA boxes over output patches (kernels/conv_tma.py): the layers
    # whose output an H100 config's patch serves, each pass; its weight-grad's own split count
    "tma_kxk": PathSpec("tma_kxk", {"forward": "_conv_tma_fwd_kernel", "dgrad": "_conv_tma_dgrad_kernel",
                                    "wgrad": "_conv_tma_wgrad_kernel"}, _tma_serves,
                        ("forward", "dgrad", "wgrad"), _tma_split),
}


def wgrad_split(s: ConvShape, batch: int, sm_count: int = 132) -> int:
    """The split count the 1x1 weight-grad's heuristic asks for on a card of `sm_count` SMs
    (an H100's 132), as the table will record it."""
    pixels = batch * s.H * s.width
    with mock.patch.dict(os.environ, {"CONVBENCH_TUNED": "off"}), \
            mock.patch.object(k1x1, "sm_count", lambda device: sm_count):
        rows = k1x1.wgrad_split_rows(pixels, s.K, s.C, torch.device("cuda"), None)
    return -(-pixels // rows)


def _on_path(run: Callable, site: str, path: str) -> Callable:
    """`run` (inputs -> closure) with every call of its closure inside race.forced_path."""
    def make(inputs):
        fn = run(inputs)

        def forced():
            with race.forced_path(site, path):
                return fn()
        return forced
    return make


def conv_path_items(s: ConvShape, path: str, passes=None) -> list:
    """The items of one layer on one path (none where the path cannot serve it): the generic
    items of `passes` (default the path's) with the path's kernels and launches."""
    spec = PATH_SPECS[path]
    passes = tuple(p for p in (passes or spec.passes) if p in spec.passes)
    if not passes or not spec.eligible(s):
        return []
    if path == "gemm1x1":
        splits = [wgrad_split(s, sweep.BATCH)]
    else:
        splits = [spec.split(s, sweep.BATCH)] if spec.split is not None else sweep.wgrad_splits(s)[:1]
    items = sweep.conv_items(s, passes, splits=splits)
    key = kconv.dispatch_key(s.geometry(sweep.BATCH))
    return [dataclasses.replace(item, kernel=spec.kernels[item.pass_], follows=False, path=path, dispatch_key=key,
                                triton=_on_path(item.triton, SITES[item.pass_], path)) for item in items]


def conv1x1_items(s: ConvShape, passes=("forward", "dgrad", "wgrad")) -> list:
    """The 1x1 kernels' items of one layer (none where the 1x1 path cannot serve it)."""
    return conv_path_items(s, "gemm1x1", passes)


def path_items(layers, paths=None) -> list:
    """Every path item of the nets' layers (sweep.all_items's `layers`), over `paths` (default
    every PathSpec): conv layers, and for the 1x1 path the Inception blocks' fused 1x1 and
    pool projection (data-grad and weight-grad), named as sweep.inception_items names their
    generic items."""
    items, seen = [], set()
    for path in paths or PATH_SPECS:
        for layer in layers:
            if layer.kind == "conv":
                new = conv_path_items(layer.shape, path)
            elif layer.kind == "inception" and path == "gemm1x1":
                b = layer.shape
                new = [item for suffix, n in (("fused1x1", b.c1 + b.r3 + b.r5), ("pool_proj", b.pool_proj))
                       for item in conv_path_items(ConvShape(f"{b.name}.{suffix}", b.C, b.H, n, 1), path,
                                                   ("dgrad", "wgrad"))]
            else:
                continue
            for item in new:
                index = (item.path, item.kernel, item.pass_, item.shape_key)
                if index not in seen:
                    seen.add(index)
                    items.append(item)
    return items


def _entry_path(e: dict) -> str:
    """The path an entry was measured on: its own field, else its kernel's (tables written
    before entries named their path held the 1x1 and generic kernels only)."""
    if e.get("path"):
        return e["path"]
    return "gemm1x1" if e["kernel"] in KERNELS.values() else "generic"


def _legacy_key(found: dict) -> dict | None:
    """The dispatch key of a layer pass whose entries predate the `dispatch_key` field: the
    1x1 kernel's GEMM sizes."""
    e = found.get("gemm1x1")
    return {k: e["key"][k] for k in ("PIXELS", "C", "K")} if e is not None else None


def dispatch_records(entries: list[dict]) -> list[dict]:
    """The tuned table's dispatch records (kernels/tuned.py) from its entries (the sweep's
    `best_entries`): wherever a layer's pass has timed winners on the generic kernel and on
    one or more other paths, which path won and every path's time. The key is the layer's
    dispatch key (what `conv.dispatch_key` gives at run time, carried by the path items'
    entries); one record per (site, dtype, key)."""
    passes = {kernel: pass_ for spec in (GENERIC, *(p.kernels for p in PATH_SPECS.values()))
              for pass_, kernel in spec.items()}
    by_pass: dict[tuple, dict[str, dict]] = {}
    for e in entries:
        pass_ = e.get("pass")
        if passes.get(e["kernel"]) == pass_ and e.get("ms"):
            by_pass.setdefault((e.get("layer"), pass_, e["dtype"]), {})[_entry_path(e)] = e
    records, seen = [], set()
    for (layer, pass_, dtype), found in by_pass.items():
        if "generic" not in found or len(found) < 2:
            continue
        key = next((e["dispatch_key"] for e in found.values() if e.get("dispatch_key")), None) or _legacy_key(found)
        if key is None:
            continue
        slot = (pass_, dtype, tuple(sorted(key.items())))
        if slot in seen:
            continue
        seen.add(slot)
        ms = {path: found[path]["ms"] for path in sorted(found)}
        records.append({"site": SITES[pass_], "dtype": dtype, "key": key, "path": min(ms, key=ms.get), "ms": ms,
                        "layer": layer})
    return records
