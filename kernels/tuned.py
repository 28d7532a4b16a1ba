"""Per-GPU tuned tables: the winning config of each kernel and shape, measured on one card.

One JSON file per (card, triton major.minor) under `kernels/tuned/`, written by the GPU
sweep (`benchmarks/sweep.py`) from real measurements only. At run time the autotuner in
`configs.py` looks a launch's shape key up in the table of the card it runs on: a hit
launches that config with no autotuning; a miss autotunes as before.

File layout:
  {"card": "NVIDIA H100 80GB HBM3", "triton": "3.6", "torch": "2.11.0+cu130",
   "measured": "2026-11-27", "entries": [
     {"kernel": "_conv_fwd_kernel", "family": "conv_gemm", "layer": "resnet50.layer1.0.conv2",
      "pass": "forward", "dtype": "bfloat16", "key": {"BATCH": 128, ...},
      "config": {"kwargs": {"BLOCK_M": 128, ...}, "num_warps": 8, "num_stages": 3},
      "split_k": null, "ms": 0.21, "runner_up_ms": 0.23, "cudnn_ms": 0.19}, ...]}
`key` holds the kernel's autotune key values; `split_k` is the host-chosen weight-grad
split count (the kernel's SPLIT_ROWS key follows from it), null elsewhere.

An optional "dispatch" list records which path won a pass where several kernels can serve
one shape (`race.py`), from the same measurements:
     {"site": "conv_forward", "dtype": "bfloat16", "key": {"PIXELS": 6272, "C": 2048, "K": 512},
      "path": "gemm1x1", "ms": {"gemm1x1": 0.02, "generic": 0.13}, "layer": "resnet50..."}
`path` is the fastest of `ms` (each path's best config); a run-time lookup of (site, dtype,
key) launches that path without racing.

Environment: CONVBENCH_TUNED=off ignores every table; CONVBENCH_TUNED=<path> uses that file
on any device (the GPU check's own fresh table; tests on the CPU).
Imports torch and triton only.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import torch
import triton

TABLE_DIR = Path(__file__).parent / "tuned"
_ENTRY_FIELDS = ("kernel", "family", "dtype", "key", "config", "ms", "runner_up_ms", "cudnn_ms")
_DISPATCH_FIELDS = ("site", "dtype", "key", "path", "ms")


def card_slug(card: str) -> str:
    """'NVIDIA H100 80GB HBM3' -> 'nvidia-h100-80gb-hbm3'."""
    slug = re.sub(r"[^a-z0-9]+", "-", card.lower()).strip("-")
    if not slug:
        raise ValueError(f"card must name a device, got {card!r}")
    return slug


def triton_minor(version: str | None = None) -> str:
    """'3.6.0' -> '3.6' (the installed triton when `version` is None)."""
    parts = (version or triton.__version__).split(".")
    return ".".join(parts[:2])


def table_path(card: str, triton_version: str | None = None, root: Path = TABLE_DIR) -> Path:
    return Path(root) / f"{card_slug(card)}-triton{triton_minor(triton_version)}.json"


def config_from_json(spec: dict) -> triton.Config:
    if not isinstance(spec, dict) or not isinstance(spec.get("kwargs"), dict):
        raise ValueError(f"config must be {{'kwargs': {{...}}, 'num_warps': n, 'num_stages': n}}, got {spec!r}")
    return triton.Config(dict(spec["kwargs"]), num_warps=int(spec.get("num_warps", 4)),
                         num_stages=int(spec.get("num_stages", 3)))


def config_to_json(config: triton.Config) -> dict:
    return {"kwargs": dict(config.kwargs), "num_warps": config.num_warps, "num_stages": config.num_stages}


def _key_tuple(key: dict) -> tuple:
    # bools stay distinct from ints (True == 1 in Python): each value goes in with whether it
    # is one (the names are unique, so the sort never compares values)
    return tuple(sorted((k, v.__class__ is bool, v) for k, v in key.items()))


class Table:
    """A loaded table: entries indexed by (kernel, dtype, key values)."""

    def __init__(self, card: str, triton_version: str, entries: list[dict], source: str = "<memory>",
                 dispatch: list[dict] | None = None):
        self.card, self.triton, self.entries, self.source = card, triton_version, list(entries), source
        self.dispatch = list(dispatch or [])
        self._paths: dict[tuple, str] = {}
        for i, record in enumerate(self.dispatch):
            problem = dispatch_problem(record)
            if problem:
                raise ValueError(f"{source}: dispatch record {i}: {problem}: {record!r}")
            index = (record["site"], record["dtype"], _key_tuple(record["key"]))
            if index in self._paths:
                raise ValueError(f"{source}: dispatch record {i} repeats site {record['site']} key {record['key']}")
            self._paths[index] = record["path"]
        self._index: dict[tuple, dict] = {}
        # per index: the entry's triton.Config, built once (looked up at every launch)
        self._configs: dict[tuple, triton.Config] = {}
        self._splits: dict[tuple, int | None] = {}  # split_count's answers, by its arguments
        for i, entry in enumerate(self.entries):
            missing = [f for f in _ENTRY_FIELDS if f not in entry]
            if missing:
                raise ValueError(f"{source}: entry {i} lacks {missing}: {entry!r}")
            if not isinstance(entry["key"], dict):
                raise ValueError(f"{source}: entry {i} key must be a dict of autotune key values, got {entry['key']!r}")
            index = (entry["kernel"], entry["dtype"], _key_tuple(entry["key"]))
            if index in self._index:
                raise ValueError(f"{source}: entry {i} repeats kernel {entry['kernel']} key {entry['key']}")
            self._index[index] = entry
            self._configs[index] = config_from_json(entry["config"])

    def entry(self, kernel: str, key: dict, dtype: str) -> dict | None:
        return self._index.get((kernel, dtype, _key_tuple(key)))

    def config(self, kernel: str, key: dict, dtype: str) -> triton.Config | None:
        """The entry's config (one shared object per entry: callers must not change it)."""
        return self._configs.get((kernel, dtype, _key_tuple(key)))

    def path(self, site: str, key: dict, dtype: str) -> str | None:
        """The recorded winning path of `site` for this dispatch key and dtype, or None."""
        return self._paths.get((site, dtype, _key_tuple(key)))

    def split_count(self, kernel: str, fields: dict, dtype: str | None = None) -> int | None:
        """The tuned split count of the entries of `kernel` whose key agrees with `fields`
        (a subset of the key) and, when given, `dtype`; None if none, or if they disagree.
        Answered once per distinct question (it runs at every weight-grad launch)."""
        question = (kernel, _key_tuple(fields), dtype)
        if question not in self._splits:
            self._splits[question] = self._split_count(kernel, fields, dtype)
        return self._splits[question]

    def _split_count(self, kernel: str, fields: dict, dtype: str | None) -> int | None:
        found = {e["split_k"] for e in self.entries
                 if e["kernel"] == kernel and e.get("split_k") and (dtype is None or e["dtype"] == dtype)
                 and all(e["key"].get(k) == v for k, v in fields.items())}
        return found.pop() if len(found) == 1 else None

    def to_json(self) -> dict:
        out = {"card": self.card, "triton": self.triton, "entries": self.entries}
        if self.dispatch:
            out["dispatch"] = self.dispatch
        return out


def dispatch_problem(record: dict) -> str:
    """Why a dispatch record is malformed ('' when it is not): its fields, a positive time
    per path, and `path` the fastest of them."""
    missing = [f for f in _DISPATCH_FIELDS if f not in record]
    if missing:
        return f"lacks {missing}"
    if not isinstance(record["key"], dict):
        return f"key must be a dict, got {record['key']!r}"
    ms = record["ms"]
    if not (isinstance(ms, dict) and len(ms) >= 2
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in ms.values())):
        return f"ms must map two or more paths to positive times, got {ms!r}"
    if record["path"] not in ms or ms[record["path"]] != min(ms.values()):
        return f"path {record['path']!r} is not the fastest of {ms}"
    return ""


def load_table(path: str | Path) -> Table:
    """Read and validate one table file (raises ValueError naming the file and entry)."""
    path = Path(path)
    data = json.loads(path.read_text())
    for field in ("card", "triton", "entries"):
        if field not in data:
            raise ValueError(f"{path}: tuned table lacks {field!r}")
    return Table(data["card"], data["triton"], data["entries"], source=str(path), dispatch=data.get("dispatch"))


def write_table(path: str | Path, card: str, triton_version: str, entries: list[dict], *,
                dispatch: list[dict] | None = None, **meta) -> Path:
    """Write a table (validated first, replaced whole); `dispatch`: its path records; `meta`
    adds top-level fields (torch, measured, ...)."""
    table = Table(card, triton_minor(triton_version), entries, source=str(path), dispatch=dispatch)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # written beside it and renamed over it: a write cut off part-way leaves the old table whole
    part = path.with_name(path.name + ".part")
    part.write_text(json.dumps({**table.to_json(), **meta}, indent=1, sort_keys=False) + "\n")
    os.replace(part, path)
    return path


_TABLES: dict[tuple, Table | None] = {}


def _device_card(device: torch.device) -> str | None:
    if device.type != "cuda":
        return None
    return torch.cuda.get_device_name(device)


def table_for(device: torch.device) -> Table | None:
    """The table that serves launches on `device`: CONVBENCH_TUNED's file when set, else the
    committed file of this card and triton version; None where there is none. Looked up once
    per (setting, device) and process: this runs at every autotuned launch."""
    choice = os.environ.get("CONVBENCH_TUNED", "")
    if choice.lower() == "off":
        return None
    slot = (choice, device.type, device.index)
    if slot not in _TABLES:
        if choice:
            path = Path(choice)
            if not path.exists():
                raise FileNotFoundError(f"CONVBENCH_TUNED names {path}, which does not exist")
        else:
            card = _device_card(device)
            path = table_path(card) if card is not None else None
        _TABLES[slot] = load_table(path) if path is not None and path.exists() else None
    return _TABLES[slot]


def tuned_split(kernel: str, device: torch.device, fields: dict, dtype: torch.dtype | None = None) -> int | None:
    table = table_for(device)
    if table is None:
        return None
    return table.split_count(kernel, fields, None if dtype is None else str(dtype).removeprefix("torch."))
