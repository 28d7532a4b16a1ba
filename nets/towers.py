"""AlexNet's two-GPU split (Krizhevsky et al. 2012, sec. 3.2 and fig. 2) on torch.distributed:
world size 2, each rank holding one tower, i.e. half the kernels of every layer.

  conv1, conv3, fc6, fc7, fc8   half the output channels (rows of the weight)
  conv2, conv4, conv5           the rank's group of the paper net's groups=2 conv
  conv3, fc6, fc7, fc8          read both towers: the previous layer's halves are all-gathered
  logits                        fc8's halves are all-gathered into the full logits on both ranks

Every parameter of the paper net (`nets.build("alexnet")`, groups=2) splits along its first
dimension, so the two towers hold exactly its parameters: `split_state_dict` /
`merge_state_dicts` convert between the two. With the same weights the towers compute the
same function as the grouped single-device net, forward and backward:

  * LRN (norm1, norm2) in the single-device net normalizes across all channels, so the 2
    channels on each side of the split (size // 2) read the other tower's. The towers
    exchange that halo: each all-gathers its 2 first and 2 last channels (4 of its 48
    channels at norm1, 4 of 128 at norm2). The paper's towers (cuda-convnet's two-GPU
    layers) normalized within each GPU and exchanged nothing there.
  * dropout is applied to each tower's own half before a gather, so the gathered tensor
    carries one mask, as in the single-device net (the masks differ from its random draws).

Gradients flow through the collectives: `_Gather` (all_gather forward), whose backward sums
each piece's gradient over the ranks that read it (each rank's consumer is a different half
of the next layer; reduce-scatter on NCCL); the logits use `_GatherReplicated`, whose
backward keeps the local gradient of the rank's own piece, because both ranks compute the identical loss on
the identical logits (summing would double it).

Both ranks get the full batch (the paper fed the same images to both GPUs). The layers are
the injected backend's (`nets.layers`), like every net here. Imports `kernels` (through the
layer sets) and torch.distributed only.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.distributed as dist
from torch import nn

from .alexnet import AlexNet
from .layers import layers_for

WORLD_SIZE = 2  # the paper's split: conv2/4/5 have groups=2, one group per GPU
LRN = {"size": 5, "alpha": 1e-4, "beta": 0.75, "k": 2.0}  # the paper's, as nets/alexnet.py


def _all_gather_dim1(x: torch.Tensor, group) -> tuple[torch.Tensor, int, int]:
    world, rank = dist.get_world_size(group), dist.get_rank(group)
    parts = [torch.empty_like(x, memory_format=torch.contiguous_format) for _ in range(world)]
    dist.all_gather(parts, x.contiguous(), group=group)
    return torch.cat(parts, dim=1), rank, world


class _Gather(torch.autograd.Function):
    """all_gather along dim 1 whose consumers differ by rank (each computes its own half of
    the next layer): the backward sums each piece's gradient over the ranks (reduce-scatter;
    gloo has none, so an all-reduce of the whole gradient and this rank's slice of it)."""

    @staticmethod
    def forward(ctx, x, group):
        out, ctx.rank, _ = _all_gather_dim1(x, group)
        ctx.group, ctx.width = group, x.shape[1]
        return out

    @staticmethod
    def backward(ctx, grad):
        g = grad.contiguous()
        if dist.get_backend(ctx.group) == dist.Backend.NCCL:
            pieces = [p.contiguous() for p in g.split(ctx.width, dim=1)]
            out = torch.empty_like(pieces[ctx.rank])
            dist.reduce_scatter(out, pieces, group=ctx.group)
            return out, None
        dist.all_reduce(g, group=ctx.group)
        return g.narrow(1, ctx.rank * ctx.width, ctx.width), None


class _GatherReplicated(torch.autograd.Function):
    """all_gather along dim 1 for a consumer every rank computes identically (the loss on
    the full logits): the backward returns this rank's slice of its own gradient."""

    @staticmethod
    def forward(ctx, x, group):
        out, ctx.rank, _ = _all_gather_dim1(x, group)
        ctx.width = x.shape[1]
        return out

    @staticmethod
    def backward(ctx, grad):
        return grad.narrow(1, ctx.rank * ctx.width, ctx.width), None


def _gather(x: torch.Tensor, group) -> torch.Tensor:
    """Both towers' halves concatenated along channels, differentiable (summed backward)."""
    return _Gather.apply(x, group)


class _HaloLRN(nn.Module):
    """Cross-channel LRN of the full (both towers') channel stack, computed on one tower's
    channels plus a halo of `size // 2` channels received from the other tower."""

    def __init__(self, layers, rank: int, group):
        super().__init__()
        self.lrn = layers.LocalResponseNorm(LRN["size"], alpha=LRN["alpha"], beta=LRN["beta"], k=LRN["k"])
        self.rank, self.group, self.halo = rank, group, LRN["size"] // 2

    def forward(self, x):
        h = self.halo
        edges = _gather(torch.cat([x[:, :h], x[:, -h:]], dim=1), self.group)  # [first h, last h] per rank
        if self.rank == 0:  # tower 0's upper neighbours are tower 1's first channels
            padded = torch.cat([x, edges[:, 2 * h:3 * h]], dim=1)
            return self.lrn(padded)[:, :-h]
        padded = torch.cat([edges[:, h:2 * h], x], dim=1)  # tower 0's last channels below ours
        return self.lrn(padded)[:, h:]


class AlexNetTower(nn.Module):
    """One rank's half of the paper AlexNet; parameter names as in `nets.alexnet.AlexNet`."""

    def __init__(self, layers, rank: int, num_classes: int = 1000, dropout: float = 0.5, group=None):
        super().__init__()
        if rank not in (0, 1):
            raise ValueError(f"rank must be 0 or 1 (the towers need world size {WORLD_SIZE}), got {rank!r}")
        if not isinstance(num_classes, int) or num_classes < 2 or num_classes % WORLD_SIZE:
            raise ValueError(f"num_classes must be an even int >= 2 (fc8 is split in halves), got {num_classes!r}")
        self.rank, self.group = rank, group
        conv, pool = layers.Conv2d, layers.MaxPool2d
        self.features = nn.Sequential(OrderedDict([
            ("conv1", conv(3, 48, 11, stride=4, padding=2, activation="relu")),       # 48 x 55 x 55
            ("norm1", _HaloLRN(layers, rank, group)),
            ("pool1", pool(3, stride=2)),                                              # 48 x 27 x 27
            ("conv2", conv(48, 128, 5, padding=2, activation="relu")),                # 128 x 27 x 27
            ("norm2", _HaloLRN(layers, rank, group)),
            ("pool2", pool(3, stride=2)),                                              # 128 x 13 x 13
            # conv3 reads both towers: its input is gathered in forward()
            ("conv3", conv(256, 192, 3, padding=1, activation="relu")),               # 192 x 13 x 13
            ("conv4", conv(192, 192, 3, padding=1, activation="relu")),
            ("conv5", conv(192, 128, 3, padding=1, activation="relu")),               # 128 x 13 x 13
            ("pool5", pool(3, stride=2)),                                              # 128 x 6 x 6
        ]))
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
        self.classifier = nn.Sequential(OrderedDict([
            ("fc6", nn.Linear(256 * 6 * 6, 2048)),
            ("relu6", nn.ReLU(inplace=True)),
            ("drop6", nn.Dropout(dropout)),            # on the tower's own half, before the gather
            ("fc7", nn.Linear(4096, 2048)),
            ("relu7", nn.ReLU(inplace=True)),
            ("drop7", nn.Dropout(dropout)),
            ("fc8", nn.Linear(4096, num_classes // WORLD_SIZE)),
        ]))
        AlexNet.reset_parameters(self)  # the paper's init; same module names as the full net

    def forward(self, x):
        f, c, g = self.features, self.classifier, self.group
        x = f.pool2(f.norm2(f.conv2(f.pool1(f.norm1(f.conv1(x))))))
        x = f.conv3(_gather(x, g))
        x = f.pool5(f.conv5(f.conv4(x)))
        x = self.avgpool(x).flatten(1)  # channel-major, so the halves concatenate in order
        x = c.drop6(c.relu6(c.fc6(_gather(x, g))))
        x = c.drop7(c.relu7(c.fc7(_gather(x, g))))
        return _GatherReplicated.apply(c.fc8(_gather(x, g)), g)  # full logits on both ranks


def build_tower(rank: int, backend: str = "torch", num_classes: int = 1000, dropout: float = 0.5,
                group=None) -> AlexNetTower:
    """Rank `rank`'s tower of the paper AlexNet on `backend`'s layers ("torch" | "triton").
    Its forward needs an initialized process group of world size 2 (`group`, default WORLD)."""
    model = AlexNetTower(layers_for(backend), rank, num_classes, dropout, group)
    model.arch, model.backend = "alexnet-towers", backend
    model.build_options = {"num_classes": num_classes, "dropout": dropout, "rank": rank}
    return model


def _check_full(state: dict) -> None:
    odd = {k: tuple(v.shape) for k, v in state.items() if v.dim() == 0 or v.shape[0] % WORLD_SIZE}
    if odd:
        raise ValueError(f"state_dict entries do not split in {WORLD_SIZE} along dim 0: {odd}")


def split_state_dict(state: dict) -> list[dict]:
    """The paper AlexNet's state_dict (groups=2) as the two towers' state_dicts: every
    tensor's first dimension (output channels, or the group's output channels) halved."""
    _check_full(state)
    convs = [k for k in state if k.endswith(".weight") and state[k].dim() == 4]
    for k in ("features.conv2.weight", "features.conv4.weight", "features.conv5.weight"):
        if k in state and 2 * state[k].shape[1] != state[convs[convs.index(k) - 1]].shape[0]:
            raise ValueError(f"{k} must be the groups=2 conv of the paper net, got shape {tuple(state[k].shape)}")
    return [{k: v.chunk(WORLD_SIZE, dim=0)[r].clone() for k, v in state.items()} for r in range(WORLD_SIZE)]


def merge_state_dicts(states: list[dict]) -> dict:
    """The inverse of `split_state_dict`: the two towers' state_dicts as the full net's."""
    if len(states) != WORLD_SIZE:
        raise ValueError(f"states must hold {WORLD_SIZE} tower state_dicts, got {len(states)}")
    if set(states[0]) != set(states[1]):
        raise ValueError(f"the towers' state_dicts differ in keys: {sorted(set(states[0]) ^ set(states[1]))}")
    return {k: torch.cat([s[k] for s in states], dim=0) for k in states[0]}


def gather_state_dict(tower: AlexNetTower) -> dict | None:
    """Collective over the tower's group: the full net's state_dict on rank 0, None elsewhere."""
    local = {k: v.detach().cpu() for k, v in tower.state_dict().items()}
    parts = [None] * WORLD_SIZE if tower.rank == 0 else None
    dist.gather_object(local, parts, dst=dist.get_global_rank(tower.group or dist.group.WORLD, 0),
                       group=tower.group)
    return merge_state_dicts(parts) if tower.rank == 0 else None
