"""ResNet-18/34/50/101/152 as in He et al. 2015: basic blocks (18, 34) and bottlenecks
(50, 101, 152), BatchNorm after every conv, projection shortcuts (1x1 conv + BN) where the
shape changes. Parameter and buffer names equal torchvision's, so its state_dicts load
(resnet50: 25,557,032 parameters; resnet152: 60,192,808).

Stride: the paper (and its Caffe models) downsample in a bottleneck's first 1x1 conv;
torchvision ("ResNet v1.5") moves it to the 3x3. Option `stride_in_3x3=True` builds the
latter. Both have the same parameters.

Every BatchNorm carries its epilogue: `bn(x)` applies the ReLU that follows it, and a
block's last BatchNorm takes the shortcut, `bn(x, residual=identity)` = relu(bn(x) +
identity) (the triton backend runs each as one kernel pass; the torch backend runs cuDNN's
BatchNorm, then add_ and relu_ in place). Once BatchNorm is folded for inference
(`nets.fuse_for_inference`), the convs take over these epilogues: each block's last conv
takes the shortcut as its residual and the add+ReLU run in that conv's store.
"""

from __future__ import annotations

from torch import nn


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, layers, in_ch, width, stride=1, downsample=None, stride_in_3x3=True):
        super().__init__()
        conv, bn = layers.Conv2d, layers.BatchNorm2d
        self.conv1 = conv(in_ch, width, 3, stride=stride, padding=1, bias=False)
        self.bn1 = bn(width, activation="relu")
        self.conv2 = conv(width, width, 3, padding=1, bias=False)
        self.bn2 = bn(width, activation="relu")  # relu(bn2(x) + identity)
        self.downsample = downsample
        self.folded = False  # set by fuse_for_inference

    def _body(self, x):
        out = self.bn1(self.conv1(x))
        return out, self.conv2, self.bn2

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out, last_conv, last_bn = self._body(x)
        if self.folded:  # BN folded: bias + residual + ReLU in the conv's epilogue
            return last_conv(out, residual=identity)
        return last_bn(last_conv(out), residual=identity)


class Bottleneck(BasicBlock):
    expansion = 4

    def __init__(self, layers, in_ch, width, stride=1, downsample=None, stride_in_3x3=False):
        nn.Module.__init__(self)
        conv, bn = layers.Conv2d, layers.BatchNorm2d
        s1, s3 = (1, stride) if stride_in_3x3 else (stride, 1)
        self.conv1 = conv(in_ch, width, 1, stride=s1, bias=False)
        self.bn1 = bn(width, activation="relu")
        self.conv2 = conv(width, width, 3, stride=s3, padding=1, bias=False)
        self.bn2 = bn(width, activation="relu")
        self.conv3 = conv(width, width * self.expansion, 1, bias=False)
        self.bn3 = bn(width * self.expansion, activation="relu")  # relu(bn3(x) + identity)
        self.downsample = downsample
        self.folded = False

    def _body(self, x):
        out = self.bn2(self.conv2(self.bn1(self.conv1(x))))
        return out, self.conv3, self.bn3


class ResNet(nn.Module):
    # the stem's BatchNorm+ReLU and max-pool, one kernel on the triton backend (nets.layers)
    FUSED_PAIRS = (("bn1", "maxpool"),)

    def __init__(self, layers, block, depths, num_classes=1000, zero_init_residual=False,
                 stride_in_3x3=False):
        super().__init__()
        self.conv1 = layers.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)   # 64 x 112 x 112
        self.bn1 = layers.BatchNorm2d(64, activation="relu")
        self.maxpool = layers.MaxPool2d(3, stride=2, padding=1)                  # 64 x 56 x 56
        in_ch = 64
        for i, (width, depth) in enumerate(zip((64, 128, 256, 512), depths)):
            stride = 1 if i == 0 else 2
            stage = []
            for j in range(depth):
                down = None
                if j == 0 and (stride != 1 or in_ch != width * block.expansion):
                    down = nn.Sequential(layers.Conv2d(in_ch, width * block.expansion, 1, stride=stride, bias=False),
                                         layers.BatchNorm2d(width * block.expansion))
                stage.append(block(layers, in_ch, width, stride if j == 0 else 1, down, stride_in_3x3))
                in_ch = width * block.expansion
            # layer1: 64e x 56 x 56, layer2: 128e x 28 x 28, layer3: 256e x 14 x 14, layer4: 512e x 7 x 7
            self.add_module(f"layer{i + 1}", nn.Sequential(*stage))
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512 * block.expansion, num_classes)
        self.reset_parameters(zero_init_residual)
        # ... and every other conv with the BatchNorm after it: the conv's store emits the batch statistics
        self.FUSED_PAIRS = ResNet.FUSED_PAIRS + tuple(self._conv_bn_pairs())

    def _conv_bn_pairs(self):
        for name, m in self.named_modules():
            if isinstance(m, BasicBlock):
                for i in ("1", "2", "3") if isinstance(m, Bottleneck) else ("1", "2"):
                    yield f"{name}.conv{i}", f"{name}.bn{i}"
                if m.downsample is not None:
                    yield f"{name}.downsample.0", f"{name}.downsample.1"

    def reset_parameters(self, zero_init_residual=False) -> None:
        """He et al.'s init (fan_out, ReLU gain) for convs, BN weight 1 bias 0; optionally
        zero the last BN of each block (Goyal et al.), torchvision's option of that name."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, BasicBlock):
                    nn.init.zeros_((m.bn3 if isinstance(m, Bottleneck) else m.bn2).weight)

    def forward(self, x):
        x = self.maxpool(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.avgpool(x).flatten(1))


DEPTHS = {
    "resnet18": (BasicBlock, (2, 2, 2, 2)),
    "resnet34": (BasicBlock, (3, 4, 6, 3)),
    "resnet50": (Bottleneck, (3, 4, 6, 3)),
    "resnet101": (Bottleneck, (3, 4, 23, 3)),
    "resnet152": (Bottleneck, (3, 8, 36, 3)),
}
