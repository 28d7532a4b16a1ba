"""GoogLeNet / Inception-v1 as in Szegedy et al. 2014, Table 1: 22 layers, conv biases and
no BatchNorm, LRN after the stem pool and after the 3x3 conv, real 5x5 branches, 1x1
reductions, auxiliary classifiers on 4a and 4d (weight 0.3 in the loss, training only),
dropout 0.4. 6,998,552 parameters at 1000 classes, 13,378,280 with the aux classifiers.

Parameter names follow torchvision's GoogLeNet where the structure allows (inception3a.
branch2.1, aux1.fc1, ...); the convs have biases and no BN, as in the paper.
"""

from __future__ import annotations

from collections import namedtuple

import torch
from torch import nn

GoogLeNetOutputs = namedtuple("GoogLeNetOutputs", ["logits", "aux2", "aux1"])
AUX_WEIGHT = 0.3

# (name, in, #1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj): the paper's Table 1.
TABLE1 = [
    ("inception3a", 192, 64, 96, 128, 16, 32, 32),
    ("inception3b", 256, 128, 128, 192, 32, 96, 64),
    ("inception4a", 480, 192, 96, 208, 16, 48, 64),
    ("inception4b", 512, 160, 112, 224, 24, 64, 64),
    ("inception4c", 512, 128, 128, 256, 24, 64, 64),
    ("inception4d", 512, 112, 144, 288, 32, 64, 64),
    ("inception4e", 528, 256, 160, 320, 32, 128, 128),
    ("inception5a", 832, 256, 160, 320, 32, 128, 128),
    ("inception5b", 832, 384, 192, 384, 48, 128, 128),
]


class Inception(nn.Module):
    """Four branches concatenated; the backend's `inception(x, block)` runs them (the torch
    set runs each branch and torch.cat, the Triton set one fused block)."""

    def __init__(self, layers, in_ch, c1, r3, c3, r5, c5, pool_proj):
        super().__init__()
        conv = layers.Conv2d
        self.branch1 = conv(in_ch, c1, 1, activation="relu")
        self.branch2 = nn.Sequential(conv(in_ch, r3, 1, activation="relu"),
                                     conv(r3, c3, 3, padding=1, activation="relu"))
        self.branch3 = nn.Sequential(conv(in_ch, r5, 1, activation="relu"),
                                     conv(r5, c5, 5, padding=2, activation="relu"))
        self.branch4 = nn.Sequential(layers.MaxPool2d(3, stride=1, padding=1),
                                     conv(in_ch, pool_proj, 1, activation="relu"))
        self._run = layers.inception

    def forward(self, x):
        return self._run(x, self)


class InceptionAux(nn.Module):
    """5x5/3 average pool, 1x1 conv to 128, FC 1024, dropout 0.7, FC num_classes."""

    def __init__(self, layers, in_ch, num_classes, dropout: float = 0.7):
        super().__init__()
        self.pool = nn.AvgPool2d(5, stride=3)                   # 4 x 4 at 14 x 14 input
        self.conv = layers.Conv2d(in_ch, 128, 1, activation="relu")
        self.fc1 = nn.Linear(128 * 4 * 4, 1024)
        self.relu = nn.ReLU(inplace=True)
        self.dropout = nn.Dropout(dropout)
        self.fc2 = nn.Linear(1024, num_classes)

    def forward(self, x):
        x = self.conv(self.pool(x)).flatten(1)
        return self.fc2(self.dropout(self.relu(self.fc1(x))))


class GoogLeNet(nn.Module):
    # max-pool -> LRN and LRN -> max-pool pairs the triton backend runs as one kernel (nets.layers)
    FUSED_PAIRS = (("maxpool1", "norm1"), ("norm2", "maxpool2"))

    def __init__(self, layers, num_classes: int = 1000, aux_logits: bool = True, dropout: float = 0.4,
                 aux_dropout: float = 0.7):
        super().__init__()
        conv, lrn, pool = layers.Conv2d, layers.LocalResponseNorm, layers.MaxPool2d
        self.conv1 = conv(3, 64, 7, stride=2, padding=3, activation="relu")    # 64 x 112 x 112
        self.maxpool1 = pool(3, stride=2, ceil_mode=True)                       # 64 x 56 x 56
        self.norm1 = lrn(5, alpha=1e-4, beta=0.75, k=1.0)
        self.conv2 = conv(64, 64, 1, activation="relu")                         # 64 x 56 x 56
        self.conv3 = conv(64, 192, 3, padding=1, activation="relu")             # 192 x 56 x 56
        self.norm2 = lrn(5, alpha=1e-4, beta=0.75, k=1.0)
        self.maxpool2 = pool(3, stride=2, ceil_mode=True)                       # 192 x 28 x 28
        blocks = {name: Inception(layers, *cfg) for name, *cfg in TABLE1}
        self.inception3a, self.inception3b = blocks["inception3a"], blocks["inception3b"]  # 480 x 28 x 28
        self.maxpool3 = pool(3, stride=2, ceil_mode=True)                                   # 480 x 14 x 14
        self.inception4a, self.inception4b = blocks["inception4a"], blocks["inception4b"]
        self.inception4c, self.inception4d = blocks["inception4c"], blocks["inception4d"]
        self.inception4e = blocks["inception4e"]                                            # 832 x 14 x 14
        self.maxpool4 = pool(3, stride=2, ceil_mode=True)                                   # 832 x 7 x 7
        self.inception5a, self.inception5b = blocks["inception5a"], blocks["inception5b"]  # 1024 x 7 x 7
        self.aux1 = InceptionAux(layers, 512, num_classes, aux_dropout) if aux_logits else None
        self.aux2 = InceptionAux(layers, 528, num_classes, aux_dropout) if aux_logits else None
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))                                         # 1024 x 1 x 1
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(1024, num_classes)
        self.reset_parameters()
        # the aux heads' fc1 bias + ReLU + dropout and the last dropout, in Triton on the
        # triton backend (nets.layers.fuse_fc_epilogues)
        self.FC_EPILOGUES = tuple((f"{a}.fc1", f"{a}.relu", f"{a}.dropout") for a in ("aux1", "aux2")
                                  if getattr(self, a) is not None)
        self.DROPOUTS = ("dropout",)

    def reset_parameters(self) -> None:
        """Caffe's bvlc_googlenet init (the paper gives none): its "xavier" weights, i.e.
        U(-sqrt(3 / fan_in), sqrt(3 / fan_in)) (Caffe's default variance_norm FAN_IN; torch's
        xavier_uniform_ averages fan_in and fan_out instead), biases 0.2 in the convs and
        the aux heads' 1024-unit FC layers, 0 in the classifiers."""
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_uniform_(m.weight, a=1.0, mode="fan_in", nonlinearity="leaky_relu")  # gain 1
                nn.init.constant_(m.bias, 0.2)
        for fc in (self.fc, *(aux.fc2 for aux in (self.aux1, self.aux2) if aux is not None)):
            nn.init.zeros_(fc.bias)

    def forward(self, x):
        x = self.norm1(self.maxpool1(self.conv1(x)))
        x = self.maxpool2(self.norm2(self.conv3(self.conv2(x))))
        x = self.maxpool3(self.inception3b(self.inception3a(x)))
        x = self.inception4a(x)
        aux1 = self.aux1(x) if self.aux1 is not None and self.training else None
        x = self.inception4d(self.inception4c(self.inception4b(x)))
        aux2 = self.aux2(x) if self.aux2 is not None and self.training else None
        x = self.maxpool4(self.inception4e(x))
        x = self.inception5b(self.inception5a(x))
        logits = self.fc(self.dropout(torch.flatten(self.avgpool(x), 1)))
        if aux1 is not None:
            return GoogLeNetOutputs(logits, aux2, aux1)
        return logits
