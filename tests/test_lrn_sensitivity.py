"""LRN tests that a wrong formula cannot pass, and that show it.

At AlexNet's alpha = 1e-4 the LRN scale is k + 2e-5 * sum x**2: the output sits within half
precision's tolerance of x * k**-beta, so a one-channel window, a halved alpha or a dropped
backward term all pass a comparison there. Here alpha, k and the inputs' scale are chosen so
that alpha / size * (window sum of x**2) is about k: every element of every window moves
the output by far more than the tolerance.

Each test runs our kernel once and checks it against float64 torch, then evaluates every
mutated formula (window one channel short or long or shifted, any one window element left
out, even sizes placed the other way, alpha halved or not divided by size, beta or k off, and
in backward the neighbours' term dropped, its window not transposed, its exponent or factor
2 wrong) in float64 and asserts that each would fail the same check by a wide margin.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

import kernels
from tests.helpers import assert_close, tolerance_excess

# A mutant must miss the tolerance by at least this factor (its worst element's error is
# MARGIN times the bound), so the check catches it with room to spare, not by luck.
MARGIN = 10.0


@dataclasses.dataclass(frozen=True)
class Lrn:
    """One LRN formula, explicit enough to mutate:
        scale[c] = k + a * sum_{d in offsets} x[c + d]**2
        y[c]     = x[c] * scale[c]**-beta
        dx[j]    = dy[j] * scale[j]**-beta
                   - coef * a * beta * x[j] * sum_{d in back} dy[j - d] x[j - d] scale[j - d]**(-beta - exp_shift)
    torch's LRN: offsets = back = -(size // 2) .. (size - 1) // 2, a = alpha / size, coef 2,
    exp_shift 1; `back` None means "the same as offsets"."""

    offsets: tuple[int, ...]
    a: float
    beta: float
    k: float
    back: tuple[int, ...] | None = None
    coef: float = 2.0
    exp_shift: float = 1.0

    @staticmethod
    def torch(size: int, alpha: float, beta: float, k: float) -> Lrn:
        return Lrn(tuple(range(-(size // 2), (size - 1) // 2 + 1)), alpha / size, beta, k)


def _shift(t: torch.Tensor, d: int) -> torch.Tensor:
    """out[:, c] = t[:, c + d], zero where c + d is outside the channels."""
    out = torch.zeros_like(t)
    C = t.shape[1]
    if abs(d) < C:
        if d >= 0:
            out[:, :C - d] = t[:, d:]
        else:
            out[:, -d:] = t[:, :C + d]
    return out


def _scale(x, f: Lrn):
    return f.k + f.a * sum(_shift(x * x, d) for d in f.offsets)


def reference_forward(x: torch.Tensor, f: Lrn) -> torch.Tensor:
    return x * _scale(x, f) ** -f.beta


def reference_backward(x: torch.Tensor, dy: torch.Tensor, f: Lrn) -> torch.Tensor:
    scale = _scale(x, f)
    u = dy * x * scale ** (-f.beta - f.exp_shift)
    back = f.offsets if f.back is None else f.back
    cross = sum((_shift(u, -d) for d in back), torch.zeros_like(x))
    return dy * scale ** -f.beta - f.coef * f.a * f.beta * x * cross


def forward_mutants(f: Lrn) -> dict[str, Lrn]:
    """Every plausible wrong forward formula next to `f` (torch's), by name."""
    lo, hi = -f.offsets[0], f.offsets[-1]
    window = lambda a, b: tuple(range(-a, b + 1))
    out = {
        "size-1 window": window(0, 0),
        "one channel short below": window(lo - 1, hi) if lo > 0 else None,
        "one channel short above": window(lo, hi - 1) if hi > 0 else None,
        "one channel long below": window(lo + 1, hi),
        "one channel long above": window(lo, hi + 1),
        "window shifted down": window(lo + 1, hi - 1),
        "window shifted up": window(lo - 1, hi + 1),
        "even size placed the other way": window(hi, lo) if lo != hi else None,
    }
    muts = {name: dataclasses.replace(f, offsets=w) for name, w in out.items() if w is not None and w != f.offsets}
    for d in f.offsets:
        if len(f.offsets) > 1:
            muts[f"window element {d:+d} left out"] = dataclasses.replace(
                f, offsets=tuple(o for o in f.offsets if o != d))
    size = len(f.offsets)
    muts["alpha halved"] = dataclasses.replace(f, a=f.a / 2)
    muts["alpha not divided by size"] = dataclasses.replace(f, a=f.a * size)
    muts["beta off by 0.05"] = dataclasses.replace(f, beta=f.beta - 0.05)
    muts["k off by 0.25"] = dataclasses.replace(f, k=f.k - 0.25)
    return muts


def backward_mutants(f: Lrn) -> dict[str, Lrn]:
    """The gradient of every forward mutant, and wrong backward formulas of the right forward."""
    muts = {f"grad of {name}": m for name, m in forward_mutants(f).items()}
    muts["neighbours' term dropped (dy * scale**-beta only)"] = dataclasses.replace(f, coef=0.0)
    muts["neighbours' term reduced to the channel's own"] = dataclasses.replace(f, back=(0,))
    if f.offsets != tuple(-d for d in reversed(f.offsets)):
        muts["neighbours' window not transposed"] = dataclasses.replace(f, back=tuple(-d for d in f.offsets))
    muts["neighbours' exponent -beta instead of -beta-1"] = dataclasses.replace(f, exp_shift=0.0)
    muts["factor 2 of the neighbours' term dropped"] = dataclasses.replace(f, coef=1.0)
    return muts


# (shape, size, alpha, beta, k, dtype, channels_last): alpha / size * sum x**2 is about k.
CASES = {
    "alexnet-window-fp32": ((2, 11, 3, 4), 5, 2.0, 0.75, 2.0, torch.float32, False),
    "alexnet-window-fp16-cl": ((2, 11, 3, 4), 5, 2.0, 0.75, 2.0, torch.float16, True),
    "even-size-fp32": ((2, 9, 3, 3), 4, 1.6, 0.6, 1.0, torch.float32, False),
    "3d-size3-fp32": ((2, 8, 5), 3, 1.2, 1.1, 0.5, torch.float32, False),
    # channels_last, 24 channels: the group kernels' vectors of 8, windows across their edges
    "groups-of-8-fp32-cl": ((2, 24, 3, 2), 5, 2.0, 0.75, 2.0, torch.float32, True),
    "groups-of-8-even-size-fp32-cl": ((2, 24, 2, 3), 4, 1.6, 0.6, 1.0, torch.float32, True),
}


def _run(case, device):
    shape, size, alpha, beta, k, dtype, channels_last = CASES[case]
    gen = torch.Generator().manual_seed(sum(shape) * size)
    x64 = torch.randn(*shape, generator=gen).to(dtype).double()
    dy64 = torch.randn(*shape, generator=gen).to(dtype).double()
    x = x64.to(device, dtype)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    x.requires_grad_()
    y = kernels.local_response_norm(x, size, alpha, beta, k)
    y.backward(dy64.to(device, dtype))
    return x64, dy64, y, x.grad, Lrn.torch(size, alpha, beta, k), size, dtype


def test_explicit_formula_is_torchs():
    """The formula the mutants are made from is torch's LRN and its autograd gradient."""
    for shape, size, alpha, beta, k, _, _ in CASES.values():
        gen = torch.Generator().manual_seed(size)
        x = torch.randn(*shape, generator=gen, dtype=torch.float64, requires_grad=True)
        dy = torch.randn(*shape, generator=gen, dtype=torch.float64)
        f = Lrn.torch(size, alpha, beta, k)
        y = F.local_response_norm(x, size, alpha, beta, k)
        y.backward(dy)
        torch.testing.assert_close(reference_forward(x.detach(), f), y.detach(), rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(reference_backward(x.detach(), dy, f), x.grad, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("case", sorted(CASES))
def test_lrn_forward_and_backward_catch_every_mutant(case, device):
    x64, dy64, y, dx, f, size, dtype = _run(case, device)
    truth_y = F.local_response_norm(x64, size, f.a * size, f.beta, f.k)
    truth_dx = reference_backward(x64, dy64, f)
    # Our kernel: inside the tolerance (the reduction lengths of tests/test_lrn_residual.py).
    assert_close(y, truth_y, reduction=size, name=f"lrn forward {case}")
    assert_close(dx, truth_dx, reduction=2 * size, name=f"lrn grad {case}")

    weak = []
    for name, m in forward_mutants(f).items():
        excess = tolerance_excess(reference_forward(x64, m), truth_y, dtype, reduction=size)
        if excess < MARGIN:
            weak.append(f"forward, {name}: {excess:.3g}x the tolerance")
    for name, m in backward_mutants(f).items():
        excess = tolerance_excess(reference_backward(x64, dy64, m), truth_dx, dtype, reduction=2 * size)
        if excess < MARGIN:
            weak.append(f"backward, {name}: {excess:.3g}x the tolerance")
    assert not weak, f"{case}: mutants within {MARGIN}x of the tolerance:\n" + "\n".join(weak)


def test_alexnet_alpha_cannot_tell_a_size_1_window():
    """Why the cases above use a large alpha: at AlexNet's settings in half precision, a
    one-channel window and a halved alpha both pass the forward comparison."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 96, 3, 3, generator=gen).half().double()
    f = Lrn.torch(5, 1e-4, 0.75, 2.0)
    truth = reference_forward(x, f)
    muts = forward_mutants(f)
    for name in ("size-1 window", "alpha halved"):
        assert tolerance_excess(reference_forward(x, muts[name]), truth, torch.float16, reduction=5) <= 1, name
