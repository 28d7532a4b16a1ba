"""Inference-time folding: BatchNorm into the preceding conv, and BatchNorm's epilogue (ReLU,
residual add) into that conv's (`activation="relu"`, `residual=`), for either backend."""

from __future__ import annotations

import copy

import torch
from torch import nn

from .layers import fuse_pairs, unfuse_pairs
from .resnet import BasicBlock, Bottleneck, ResNet


@torch.no_grad()
def _fold(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    """conv <- bn(conv): w' = w * g / sqrt(var + eps), b' = beta + (b - mean) * g / sqrt(var + eps);
    the conv takes over BatchNorm's activation."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    conv.weight.mul_(scale.view(-1, 1, 1, 1).to(conv.weight.dtype))
    bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
    new_bias = bn.bias + (bias - bn.running_mean) * scale
    conv.bias = nn.Parameter(new_bias.to(conv.weight.dtype))
    conv.activation = getattr(bn, "activation", None)


def fuse_for_inference(model: nn.Module) -> nn.Module:
    """An eval-mode copy of `model` with BatchNorm folded and epilogues fused.

    ResNets: every conv+BN(+ReLU) becomes one conv with bias (and ReLU); each block's last
    conv takes the shortcut as its residual, so add+ReLU run in its store. AlexNet and
    GoogLeNet have no BatchNorm and already fuse bias+ReLU; they come back as eval copies.
    """
    fused = copy.deepcopy(model).eval()
    if not isinstance(fused, ResNet):
        return fused
    # The triton backend's stem runs BatchNorm+ReLU+max-pool in the BatchNorm module:
    # unfuse it (to the triton classes), so the max-pool survives the folding.
    was_fused = unfuse_pairs(fused, "triton")
    _fold(fused.conv1, fused.bn1)
    fused.bn1 = nn.Identity()
    for block in fused.modules():
        if not isinstance(block, BasicBlock):
            continue
        names = ["1", "2", "3"] if isinstance(block, Bottleneck) else ["1", "2"]
        for i in names:
            _fold(getattr(block, "conv" + i), getattr(block, "bn" + i))
            setattr(block, "bn" + i, nn.Identity())
        if block.downsample is not None:
            _fold(block.downsample[0], block.downsample[1])
            block.downsample[1] = nn.Identity()
        block.folded = True  # the last conv takes the shortcut: relu(conv + bias + residual)
    if was_fused:
        fuse_pairs(fused)  # every pair left (none in a ResNet once its stem BN is folded)
    return fused
