"""Static code facts of the LRN kernels compiled for an NVIDIA target without a GPU:
registers, spills, SASS instructions per element and how the loads and stores are issued.

    python scripts/lrn_sass.py [--arch 90] [--dtype bf16] [--channels 64 96 192 256]

For each channel count (AlexNet's 96 and 256, GoogLeNet's 64 and 192; window 5, beta 0.75,
alpha and k positive, channels_last) it lowers the [BLOCK_P, BLOCK_C] kernels (`_lrn_fwd_kernel`,
`_lrn_bwd_kernel`, at the LRN family's first config) and the channels-innermost group kernels
(`_lrn_groups_*`, at their family's first config), and counts from cuobjdump's SASS: every
instruction of the kernel (static count: the code is straight-line, so a thread runs each
once, slow-path subroutines aside), divided by the useful elements a thread owns (padding
channels excluded); global loads and stores by width; MUFU, shuffles, barriers and shared
memory accesses. Static facts, not timings.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile

os.environ.pop("TRITON_INTERPRET", None)  # must be unset before `kernels` is imported

from triton.backends.compiler import GPUTarget

from kernels import configs as cfg
from kernels import lrn
from scripts.compile_check import _cuobjdump, compile_one

OPS = ("MUFU", "SHFL", "BAR", "LDS", "STS", "LDL", "STL")


def sass_facts(compiled) -> dict:
    """Registers, stack bytes, instruction count and load/store widths of one cubin."""
    tool = _cuobjdump()
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(compiled.asm["cubin"])
        f.flush()
        usage = subprocess.run([tool, "-res-usage", f.name], capture_output=True, text=True, check=True).stdout
        sass = subprocess.run([tool, "-sass", f.name], capture_output=True, text=True, check=True).stdout
    ins = [re.sub(r"^@!?U?P\w+\s+", "", i) for i in re.findall(r"/\*[0-9a-f]{4}\*/\s+([^;]*);", sass)]
    ins = [i for i in ins if not i.startswith("NOP")]
    regs, stack = re.search(r"REG:(\d+) STACK:(\d+)", usage).groups()

    def widths(op):
        found = [i.split()[0] for i in ins if i.startswith(op + ".") or i.split()[0] == op]
        out = {}
        for name in found:
            w = next((s for s in (".128", ".64", ".U16", ".S16", ".U8") if name.endswith(s)), ".32")
            out[w] = out.get(w, 0) + 1
        return out

    counts = {op: sum(1 for i in ins if i.split()[0].split(".")[0] == op) for op in OPS}
    return dict(regs=int(regs), stack=int(stack), instructions=len(ins), ldg=widths("LDG.E"), stg=widths("STG.E"),
                **counts)


def variants(channels, dt):
    scalars = dict.fromkeys(["alpha_over_size", "beta", "k"], "fp64")
    power = dict(SIGNED=False, B_INT=False, B_ODD=False, B_ZERO=False)
    for C in channels:
        block_c = 1 << (C - 1).bit_length()
        old = lrn._prune_tiles(cfg.LRN, {}, BLOCK_C=block_c)[0]
        meta = dict(SIZE=5, BLOCK_C=block_c, INDEX_64=False, sc=1, **old.kwargs)
        per_thread = old.kwargs["BLOCK_P"] * C / (32 * old.num_warps)
        yield (C, "fwd", "[P, C] tile", lrn._lrn_fwd_kernel, ["x_ptr", "y_ptr"], scalars, meta, old.num_warps,
               per_thread)
        yield (C, "bwd", "[P, C] tile", lrn._lrn_bwd_kernel, ["x_ptr", "dy_ptr", "dx_ptr"],
               {**scalars, "coef": "fp64"}, meta, old.num_warps, per_thread)
        V = lrn._group_width(C)
        new = lrn._prune_groups(cfg.LRN_GROUPS, {}, C=C, V=V)[0]
        meta = dict(C=C, V=V, SIZE=5, LOG2="exact" if dt == "fp64" else "approx.ftz", INDEX_64=False, **power,
                    **new.kwargs)
        per_thread = (new.kwargs["GROUPS"] * V // C) * C / (32 * new.num_warps)
        yield (C, "fwd", "groups", lrn._lrn_groups_fwd_kernel, ["x_ptr", "y_ptr"], scalars, meta, new.num_warps,
               per_thread)
        yield (C, "bwd", "groups", lrn._lrn_groups_bwd_kernel, ["x_ptr", "dy_ptr", "dx_ptr"],
               {**scalars, "coef": "fp64"}, {**meta, "B_EVEN": False, "B_ONE": False}, new.num_warps, per_thread)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", type=int, default=90)
    p.add_argument("--dtype", default="bf16", choices=["bf16", "fp16", "fp32", "fp64"])
    p.add_argument("--channels", type=int, nargs="+", default=[64, 96, 192, 256])
    args = p.parse_args(argv)
    target = GPUTarget("cuda", args.arch, 32)
    print("C  pass kernel        regs stack instr/elem  global loads          stores        MUFU SHFL BAR LDS STS")
    for C, pass_, name, kernel, ptrs, floats, meta, warps, per_thread in variants(args.channels, args.dtype):
        facts = sass_facts(compile_one(kernel, dict.fromkeys(ptrs, args.dtype), floats, meta, warps, 1, target))
        per_element = facts["instructions"] / per_thread
        print(f"{C:<4} {pass_} {name:<13} {facts['regs']:>4} {facts['stack']:>5} {per_element:>8.1f}"
              f"   {facts['ldg']!s:<22} {facts['stg']!s:<13} {facts['MUFU']:>4} {facts['SHFL']:>4}"
              f" {facts['BAR']:>3} {facts['LDS']:>3} {facts['STS']:>3}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
