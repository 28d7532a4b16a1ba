"""The torch and triton backends of each net family agree to float64 roundoff, forward and
every parameter gradient, and that check is tight enough to see a wrong LRN.

In float32 the nets' equivalence tolerance has to admit ~10^4 ulps of compounded rounding,
wide enough to pass a halved LRN alpha or a dropped LRN backward term (the LRN's effect at
alpha = 1e-4 is ~1e-5 of its output). In float64 both backends' rounding is ~1e-16 per
operation, so the bound can sit some seven orders of magnitude below such a bug.

The bound (`TOL`): float64's unit roundoff u = 2^-53 times depth x K_max, the net's number of
weighted layers times its longest reduction (forward, data-gradient or weight-gradient). One
dot product of length K is off by at most ~K u relative to the sum of its |terms|
(Higham's gamma_K), each backend's error is within that per layer, and a layer passes on its
input's relative error with a gain of order one (ReLU, pooling and LRN do not amplify it;
a conv or FC with our initializations keeps activations and gradients of one scale), so the
two backends differ by at most about depth x K_max x u, worst case; rounding errors of random
sign grow more like sqrt(K), so the observed differences (~1e-15) sit far below it.
Errors are max |triton - torch| / max |torch| per tensor (the profiler's max_rel_err).

On a GPU the same check runs there (float64 has no TF32); on a CPU the triton side runs on the
interpreter, and the smallest inputs each net accepts keep its time down. Two changes made to both
backends alike, so they do not change what is compared: GoogLeNet's aux heads get an adaptive
4 x 4 average pool in place of the 5x5/3 pool that needs a 14 x 14 input (a 224 x 224 image;
pools are torch modules in both backends), and ResNet-18 runs BatchNorm in eval mode
(batch statistics over the single value per channel that layer4 leaves at this size are
undefined, and over a few values ill-conditioned: they would measure BatchNorm, not the kernels).
The interpreter time is in the triton side's backward (the weight gradients of the 256- to
1024-channel layers, whatever the input size). The interpreter's int32 overflow sanitizer,
which checks the kernels' index arithmetic and is on for the kernel tests, is switched off for
these runs: it was more than half their time, and nothing here is about indices.

Power: the triton results are compared again with a torch reference whose LRN is wrong (alpha
halved; the backward's cross-window term dropped); both must fail the same bound.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from triton.runtime.interpreter import interpreter_builder

import nets
from nets import recipe
from nets.layers import convert

U = 2.0**-53  # float64 unit roundoff
# arch -> (input size, training?, depth in weighted layers, longest reduction K_max)
NETS = {
    "alexnet": (63, True, 8, 256 * 6 * 6),       # fc6: 9216 (63 x 63: the smallest that leaves pool5 1 x 1)
    "googlenet": (32, True, 22, 128 * 4 * 4),    # aux fc1: 2048 (the paper's 22 layers; maxpool4 leaves 1 x 1)
    "resnet18": (16, False, 18, 512 * 3 * 3),    # layer4's 3x3 convs: 4608 (layer3 and layer4 at 1 x 1)
}
TOL = {arch: depth * k_max * U for arch, (_, _, depth, k_max) in NETS.items()}


def _build(arch: str, device) -> nn.Module:
    train = NETS[arch][1]
    torch.manual_seed(0)
    # dropout off: the backends draw their masks from different generators (tests/test_linear.py
    # checks the Triton dropout); the FC epilogues still run, with their bias and ReLU
    off = {"alexnet": {"dropout": 0.0}, "googlenet": {"dropout": 0.0, "aux_dropout": 0.0}}.get(arch, {})
    model = nets.build(arch, "torch", num_classes=10, **off).to(device=device, dtype=torch.float64)
    if arch == "googlenet":
        model.aux1.pool = nn.AdaptiveAvgPool2d(4)
        model.aux2.pool = nn.AdaptiveAvgPool2d(4)
    return model.train(train)


def _step(model: nn.Module, arch: str) -> dict[str, torch.Tensor]:
    """One forward and backward on a fixed batch (dropout off, see `_build`):
    every output head and every parameter's gradient, by name."""
    hw = NETS[arch][0]
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(1, 3, hw, hw, dtype=torch.float64, generator=gen)
    target = torch.randint(0, 10, (1,), generator=gen)
    device = next(model.parameters()).device
    x, target = x.to(device), target.to(device)
    model.zero_grad(set_to_none=True)
    torch.manual_seed(1)
    out = model(x)
    recipe.loss(out, target).backward()
    heads = out._asdict() if hasattr(out, "_asdict") else {"logits": out}
    result = {f"output {k}": v.detach() for k, v in heads.items() if v is not None}
    for name, p in model.named_parameters():
        assert p.grad is not None, f"{arch}: {name} got no gradient"
        result[f"grad {name}"] = p.grad.detach()
    return result


def _rel_errors(got: dict, expected: dict) -> dict[str, float]:
    assert got.keys() == expected.keys()
    out = {}
    for name, e in expected.items():
        diff = (got[name] - e).abs().max().item()
        scale = e.abs().max().item()
        out[name] = diff / scale if scale > 0 else diff
    return out


@pytest.fixture(scope="module")
def triton_results(device):
    """arch -> the triton backend's outputs and gradients (the slow part: run once each)."""
    cache = {}

    def get(arch):
        if arch not in cache:
            with pytest.MonkeyPatch.context() as mp:
                mp.setattr(interpreter_builder, "options",
                           dataclasses.replace(interpreter_builder.options, sanitize_overflow=False))
                cache[arch] = _step(convert(_build(arch, device), "triton"), arch)
        return cache[arch]

    return get


@pytest.mark.parametrize("arch", sorted(NETS))
def test_backends_agree_to_float64_roundoff(arch, triton_results, device):
    got = triton_results(arch)
    errors = _rel_errors(got, _step(_build(arch, device), arch))
    if arch == "googlenet":
        assert {"output aux1", "output aux2"} <= errors.keys() and "grad aux1.fc2.weight" in errors
    worst = max(errors, key=errors.get)
    assert errors[worst] <= TOL[arch], (f"{arch}: {worst} differs by {errors[worst]:.3g} of its largest "
                                        f"element, beyond {TOL[arch]:.3g} (float64 roundoff bound)")


# --------------------------------------------------------------------------- the bound's power
def _lrn_half_alpha(self, x):
    return F.local_response_norm(x, self.size, self.alpha / 2, self.beta, self.k)


class _LRNWithoutCrossTerm(torch.autograd.Function):
    """torch's LRN forward, with a backward that keeps dy / d and drops the
    -2 alpha beta / n * x * sum(dy y / d) term over each element's window."""

    @staticmethod
    def forward(ctx, x, size, alpha, beta, k):
        # torch's own formula (F.local_response_norm): the mean of x^2 over the channel window.
        sq = F.pad(x.pow(2).unsqueeze(1), (0, 0, 0, 0, size // 2, (size - 1) // 2))
        d = F.avg_pool3d(sq, (size, 1, 1), stride=1).squeeze(1).mul(alpha).add(k).pow(beta)
        ctx.save_for_backward(d)
        return x / d

    @staticmethod
    def backward(ctx, dy):
        (d,) = ctx.saved_tensors
        return dy / d, None, None, None, None


def _lrn_no_cross_term(self, x):
    return _LRNWithoutCrossTerm.apply(x, self.size, self.alpha, self.beta, self.k)


def test_lrn_reference_formula_is_torchs():
    """The mutated reference below differs from torch's LRN only in its backward."""
    x = torch.randn(2, 7, 3, 3, dtype=torch.float64, requires_grad=True)
    y = _LRNWithoutCrossTerm.apply(x, 5, 1.0, 0.75, 2.0)
    torch.testing.assert_close(y, F.local_response_norm(x, 5, 1.0, 0.75, 2.0), rtol=1e-14, atol=0)


@pytest.mark.parametrize("bug, forward_changes", [(_lrn_half_alpha, True), (_lrn_no_cross_term, False)],
                         ids=["half-alpha", "no-backward-cross-term"])
def test_a_wrong_lrn_fails_the_bound(bug, forward_changes, triton_results, device, monkeypatch):
    got = triton_results("alexnet")
    monkeypatch.setattr(nn.LocalResponseNorm, "forward", bug)  # the torch backend's LRN only
    errors = _rel_errors(got, _step(_build("alexnet", device), "alexnet"))
    outputs = max(v for k, v in errors.items() if k.startswith("output"))
    grads = max(v for k, v in errors.items() if k.startswith("grad"))
    assert grads > 100 * TOL["alexnet"], f"gradients differ by at most {grads:.3g}"
    # A halved alpha shows in the forward already; the dropped backward term only in gradients.
    assert (outputs > 100 * TOL["alexnet"]) if forward_changes else (outputs <= TOL["alexnet"]), outputs
