"""The one runner every kernel benchmark goes through.

For a (case, provider, pass) it makes the inputs, checks the provider's forward against a
float64 reference (max relative error, recorded and bounded), times the pass on the device
(`timing.measure`: do_bench medians on GPU), derives rates / % of ceiling / speedup over the
`torch` provider (`metrics.derive`), and hands pytest-benchmark a synchronized closure so
its own clock times the device too.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import pytest
import torch

from nets.flops import flop_counter

from .cases import Case
from .ceilings import measure_ceilings
from .metrics import derive, max_rel_error
from .timing import Timing, measure, synchronized

PASSES = ("fwd", "fwd+bwd")
# max |out - ref| / max |ref| allowed against the float64 reference, by dtype.
MAX_REL_ERROR = {torch.bfloat16: 2e-2, torch.float16: 4e-3, "tf32": 4e-3, torch.float32: 1e-4}


@dataclass
class BenchEnv:
    device: torch.device
    dtype: torch.dtype
    batch: int
    ceilings_: dict | None = None
    baselines: dict = field(default_factory=dict)
    flops: dict = field(default_factory=dict)

    @classmethod
    def from_environment(cls) -> BenchEnv:
        on_gpu = torch.cuda.is_available()
        dtype = os.environ.get("CONVBENCH_DTYPE", "bfloat16" if on_gpu else "float32")
        batch = int(os.environ.get("CONVBENCH_BATCH", 128 if on_gpu else 1))
        return cls(torch.device("cuda" if on_gpu else "cpu"), getattr(torch, dtype), batch)

    @property
    def ceilings(self) -> dict:
        if self.ceilings_ is None:
            self.ceilings_ = measure_ceilings(self.device, (str(self.dtype).removeprefix("torch."),))
        return self.ceilings_

    @property
    def dtype_name(self) -> str:
        return str(self.dtype).removeprefix("torch.")


def closure(case: Case, provider: str, pass_: str, inputs: dict):
    """The zero-argument closure a pass times: forward, or forward + all input gradients."""
    forward = case.providers[provider](inputs)
    if pass_ == "fwd":
        return forward
    wrt = [inputs[k] for k in case.grad_inputs]
    for t in wrt:
        t.requires_grad_(True)
    grad = torch.randn_like(forward())

    def step():
        torch.autograd.grad(forward(), wrt, grad)

    return step


def count_flops(case: Case, pass_: str, env: BenchEnv) -> float:
    """FLOPs of the pass, counted by torch on the torch provider with meta tensors."""
    key = (case.id, pass_, env.batch)
    if key not in env.flops:
        inputs = case.make("meta", env.dtype, env.batch)
        fn = closure(case, "torch", pass_, inputs)  # outside the counter: it runs a forward for its grad
        counter = flop_counter()
        with counter:
            fn()
        env.flops[key] = counter.get_total_flops()
    return env.flops[key]


def _tolerance(dtype) -> float:
    tf32 = dtype == torch.float32 and torch.backends.cudnn.allow_tf32 and torch.cuda.is_available()
    return MAX_REL_ERROR["tf32" if tf32 else dtype]


def run(benchmark, env: BenchEnv, case: Case, provider: str, pass_: str) -> None:
    if provider == "triton" and env.device.type != "cuda":
        pytest.skip("Triton providers need a CUDA device (the interpreter times nothing real)")
    inputs = case.make(env.device, env.dtype, env.batch)
    with torch.no_grad():
        out = case.providers[provider](inputs)()
        ref = case.reference({k: v.detach().double() for k, v in inputs.items()})
    err = max_rel_error(out, ref)
    del out, ref
    fn = closure(case, provider, pass_, inputs)
    # max_rel_error is the forward output's, on fwd+bwd rows too: a float64 reference gradient
    # through a ReLU differs wherever the rounded forward flips the mask, so the gradients are
    # checked by the tests, against references that take the masks from the kernel's forward
    info = {"kernel": case.kernel, "shape": case.name, "provider": provider, "pass": pass_,
            "dtype": env.dtype_name, "batch": env.batch, "device": str(env.device), "max_rel_error": err}
    if not benchmark.disabled:
        t = measure(fn, env.device)
        if provider == "torch":
            env.baselines[(case.id, pass_)] = t
        base = _baseline(env, case, pass_)
        nbytes = case.floor_bytes(inputs, pass_) if case.floor_bytes else None
        m = derive(t.ms, flops=None if nbytes else count_flops(case, pass_, env), nbytes=nbytes,
                   ceilings=env.ceilings, dtype=env.dtype_name, baseline_ms=base.ms)
        info.update(median_ms=t.ms, p20_ms=t.p20, p80_ms=t.p80, tflops=m["tflops"], gbps=m["gbps"],
                    pct_peak=m["pct_peak"], ceiling=m["ceiling"], ceiling_value=m["ceiling_value"],
                    ceiling_unit=m["ceiling_unit"], speedup_vs_torch=m["speedup"])
    benchmark.group = f"{case.kernel} {case.name} {pass_}"
    benchmark.extra_info.update(info)
    benchmark(synchronized(fn, env.device))
    bound = _tolerance(env.dtype)
    assert err <= bound, (f"{provider} {case.id} forward: max relative error {err:.3g} > {bound:.3g} "
                          f"vs float64 ({env.dtype_name}, batch {env.batch})")


def _baseline(env: BenchEnv, case: Case, pass_: str) -> Timing:
    """The torch provider's time for the same case and pass (measured once per session)."""
    key = (case.id, pass_)
    if key not in env.baselines:
        inputs = case.make(env.device, env.dtype, env.batch)
        env.baselines[key] = measure(closure(case, "torch", pass_, inputs), env.device)
    return env.baselines[key]


def params(kernel: str):
    """pytest parameters (case, provider, pass) for one kernel family, ids readable."""
    from .cases import cases

    out = []
    for case in cases(kernel, on_gpu=torch.cuda.is_available()):
        for provider in case.providers:
            for pass_ in PASSES:
                out.append(pytest.param(case, provider, pass_, id=f"{case.name}-{provider}-{pass_}"))
    return out
