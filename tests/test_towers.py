"""AlexNet's two-tower split (nets/towers.py) against the grouped single-device net: the same
parameters, and on 2 gloo ranks the same logits and gradients in float64."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import nets
from benchmarks.distributed_launch import launch
from nets.towers import build_tower, gather_state_dict, merge_state_dicts, split_state_dict

from .helpers import assert_close

IMAGE = 63      # conv1 15x15, pool2 3x3, pool5 1x1 (avgpool replicates it to 6x6)
CLASSES = 10
# The longest reduction on the way: fc6 reads 256 * 6 * 6 inputs.
K = 256 * 6 * 6


def _unit_scale(model: torch.nn.Module) -> None:
    """Weights N(0, 1/fan_in), small biases: activations and gradients of unit scale, so the
    float64 tolerances below are tight relative to the values compared (the paper's 0.01
    init shrinks them towards zero, where any absolute tolerance passes)."""
    gen = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
            fan_in = m.weight[0].numel()
            with torch.no_grad():
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen, dtype=torch.float64) / math.sqrt(fan_in))
                m.bias.copy_(torch.rand(m.bias.shape, generator=gen, dtype=torch.float64) * 0.2 - 0.1)


def _reference():
    """The grouped single-device net with unit-scale float64 weights, an image batch, labels."""
    with torch.device("meta"):  # every weight is drawn by _unit_scale: skip the paper init
        ref = nets.build("alexnet", num_classes=CLASSES, dropout=0.0)
    ref = ref.to_empty(device="cpu").double()
    _unit_scale(ref)
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(2, 3, IMAGE, IMAGE, dtype=torch.float64, generator=gen)
    y = torch.randint(0, CLASSES, (2,), generator=gen)
    return ref, x, y


def _check_tower(rank, world_size, ref, tower, x, y, backend):
    """Run the tower and the reference on (x, y); compare this rank's half of the logits
    and gradients, and the image gradient summed over the towers."""
    ref.zero_grad(set_to_none=True)
    xt = x.clone().requires_grad_(True)
    logits = tower(xt)
    F.cross_entropy(logits, y).backward()
    x_grads = [torch.empty_like(x) for _ in range(world_size)]
    torch.distributed.all_gather(x_grads, xt.grad)

    xr = x.clone().requires_grad_(True)
    expected = ref(xr)
    F.cross_entropy(expected, y).backward()
    assert expected.abs().max() > 0.1  # unit-scale values, not a near-zero output
    where = f"{backend} rank {rank}"
    assert_close(logits, expected, reduction=K, name=f"{where} logits")
    halves = split_state_dict({k: p.grad for k, p in ref.named_parameters()})[rank]
    grads = {k: p.grad for k, p in tower.named_parameters()}
    assert set(grads) == set(halves)
    for name, g in grads.items():
        assert_close(g, halves[name], reduction=K, scale=max(1.0, halves[name].abs().max().item()),
                     name=f"{where} {name}.grad")
    # Each tower's conv1 reads the image: its gradient is the sum of the two towers'.
    assert_close(x_grads[0] + x_grads[1], xr.grad, reduction=K, name=f"{backend} image grad")
    assert not torch.equal(x_grads[rank], xr.grad)  # one tower alone is not the whole gradient


def _towers_worker(rank, world_size, folder):
    """Both ranks check their tower on each backend against the same reference (an
    AssertionError ends the launch with the rank and the numbers), then gather the state_dict."""
    ref, x, y = _reference()
    state = split_state_dict(ref.state_dict())[rank]
    # The Triton interpreter is slow: one image there; the layers' own tests cover the rest.
    for backend, batch in (("torch", 2), ("triton", 1)):
        tower = build_tower(rank, backend, num_classes=CLASSES, dropout=0.0).double()
        tower.load_state_dict(state)
        _check_tower(rank, world_size, ref, tower, x[:batch], y[:batch], backend)
    gathered = gather_state_dict(tower)
    if rank == 0:
        assert list(gathered) == list(ref.state_dict())
        assert all(torch.equal(gathered[k], v) for k, v in ref.state_dict().items())
    else:
        assert gathered is None
    (Path(folder) / f"rank{rank}.ok").write_text("")


def test_towers_match_grouped_net_forward_and_gradients(tmp_path):
    launch(_towers_worker, 2, (str(tmp_path),), timeout_s=300, pg_timeout_s=120)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rank0.ok", "rank1.ok"]


def test_towers_hold_exactly_the_paper_parameters():
    with torch.device("meta"):
        full = nets.build("alexnet")
        towers = [build_tower(r) for r in range(2)]
    assert sum(p.numel() for t in towers for p in t.parameters()) == 60_965_224
    assert sum(p.numel() for p in full.parameters()) == 60_965_224
    parts = split_state_dict(full.state_dict())
    for tower, part in zip(towers, parts):
        assert {k: v.shape for k, v in tower.state_dict().items()} == {k: v.shape for k, v in part.items()}


def test_split_and_merge_are_inverse():
    state = nets.build("alexnet", num_classes=CLASSES).state_dict()
    parts = split_state_dict(state)
    assert parts[0]["features.conv2.weight"].shape == (128, 48, 5, 5)
    assert torch.equal(parts[1]["features.conv4.weight"], state["features.conv4.weight"][192:])
    merged = merge_state_dicts(parts)
    assert list(merged) == list(state) and all(torch.equal(merged[k], state[k]) for k in state)


@pytest.mark.parametrize("call, exc, words", [
    (lambda: build_tower(2), ValueError, "rank must be 0 or 1"),
    (lambda: build_tower(0, num_classes=999), ValueError, "num_classes must be an even"),
    (lambda: build_tower(0, backend="tpu"), ValueError, "backend must be one of"),
    (lambda: split_state_dict(nets.build("alexnet", groups=1, num_classes=CLASSES).state_dict()), ValueError,
     "groups=2 conv"),
    (lambda: split_state_dict({"w": torch.zeros(3, 2)}), ValueError, "do not split"),
    (lambda: merge_state_dicts([{}]), ValueError, "2 tower state_dicts"),
])
def test_bad_arguments(call, exc, words):
    with pytest.raises(exc, match=words):
        call()
