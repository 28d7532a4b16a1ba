"""The real layers of the three nets as named constants, shared by benchmarks and GPU tests.

Names are module paths in `nets` (`resnet50.layer1.0.conv2`); batch size is chosen by the
caller. ResNet-50 shapes follow the paper (stride on the bottleneck's first 1x1); the
torchvision v1.5 variant's strided 3x3 is listed as `resnet50_v15.*` to match cuDNN anchors.
`QUICK` marks the subset a short run (CPU, CI, the GPU check script) covers.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ConvShape:
    name: str
    C: int
    H: int
    K: int
    R: int
    stride: int = 1
    padding: int = 0
    groups: int = 1
    W: int | None = None  # defaults to H
    S: int | None = None  # defaults to R

    @property
    def width(self) -> int:
        return self.W or self.H

    @property
    def kw(self) -> int:
        return self.S or self.R

    def out_hw(self) -> tuple[int, int]:
        p = (self.H + 2 * self.padding - self.R) // self.stride + 1
        q = (self.width + 2 * self.padding - self.kw) // self.stride + 1
        return p, q

    def x_shape(self, batch: int) -> tuple[int, int, int, int]:
        return (batch, self.C, self.H, self.width)

    def w_shape(self) -> tuple[int, int, int, int]:
        return (self.K, self.C // self.groups, self.R, self.kw)

    def geometry(self, batch: int):
        """The layer's `kernels.conv.ConvGeometry` at `batch`: what the launchers build from
        its tensors."""
        from kernels.conv import ConvGeometry

        return ConvGeometry(self.x_shape(batch), self.w_shape(), (self.stride,) * 2, (self.padding,) * 4, (1, 1),
                            self.groups)

    def flops(self, batch: int) -> int:
        """Forward FLOPs, 2 per multiply-add (torch.utils.flop_counter's convention)."""
        p, q = self.out_hw()
        return 2 * batch * self.K * p * q * (self.C // self.groups) * self.R * self.kw

    def reduction(self) -> int:
        return (self.C // self.groups) * self.R * self.kw


CONV = [
    # AlexNet (paper: 96-256-384-384-256, groups=2 on conv2/4/5), 224x224 input
    ConvShape("alexnet.features.conv1", 3, 224, 96, 11, stride=4, padding=2),
    ConvShape("alexnet.features.conv2", 96, 27, 256, 5, padding=2, groups=2),
    ConvShape("alexnet.features.conv3", 256, 13, 384, 3, padding=1),
    ConvShape("alexnet.features.conv4", 384, 13, 384, 3, padding=1, groups=2),
    ConvShape("alexnet.features.conv5", 384, 13, 256, 3, padding=1, groups=2),
    # GoogLeNet (paper Table 1): stem and the 3x3 / 5x5 branches
    ConvShape("googlenet.conv1", 3, 224, 64, 7, stride=2, padding=3),
    ConvShape("googlenet.conv3", 64, 56, 192, 3, padding=1),
    ConvShape("googlenet.inception3a.branch2.1", 96, 28, 128, 3, padding=1),
    ConvShape("googlenet.inception3a.branch3.1", 16, 28, 32, 5, padding=2),
    ConvShape("googlenet.inception4a.branch2.1", 96, 14, 208, 3, padding=1),
    ConvShape("googlenet.inception4a.branch3.1", 16, 14, 48, 5, padding=2),
    ConvShape("googlenet.inception5b.branch2.1", 192, 7, 384, 3, padding=1),
    # ResNet-50: stem, 1x1 reduce / expand, 3x3 per stage, strided layers
    ConvShape("resnet50.conv1", 3, 224, 64, 7, stride=2, padding=3),
    ConvShape("resnet50.layer1.1.conv1", 256, 56, 64, 1),
    ConvShape("resnet50.layer1.0.conv2", 64, 56, 64, 3, padding=1),
    ConvShape("resnet50.layer1.0.conv3", 64, 56, 256, 1),
    ConvShape("resnet50.layer2.0.conv1", 256, 56, 128, 1, stride=2),
    ConvShape("resnet50.layer2.0.downsample.0", 256, 56, 512, 1, stride=2),
    ConvShape("resnet50_v15.layer2.0.conv2", 128, 56, 128, 3, stride=2, padding=1),
    ConvShape("resnet50.layer3.1.conv2", 256, 14, 256, 3, padding=1),
    ConvShape("resnet50.layer4.1.conv2", 512, 7, 512, 3, padding=1),
]

QUICK_CONV = ["alexnet.features.conv1", "alexnet.features.conv2", "resnet50.layer1.1.conv1",
              "resnet50.layer3.1.conv2"]


@dataclass(frozen=True)
class LRNShape:
    name: str
    C: int
    H: int
    size: int = 5
    alpha: float = 1e-4
    beta: float = 0.75
    k: float = 2.0


LRN = [
    LRNShape("alexnet.features.norm1", 96, 55),
    LRNShape("alexnet.features.norm2", 256, 27),
    LRNShape("googlenet.norm1", 64, 56, k=1.0),
    LRNShape("googlenet.norm2", 192, 56, k=1.0),
]


@dataclass(frozen=True)
class EltwiseShape:
    """A residual add+ReLU input: [batch, C, H, H]."""
    name: str
    C: int
    H: int


ADD_RELU = [
    EltwiseShape("resnet50.layer1.add", 256, 56),
    EltwiseShape("resnet50.layer2.add", 512, 28),
    EltwiseShape("resnet50.layer3.add", 1024, 14),
    EltwiseShape("resnet50.layer4.add", 2048, 7),
]


def by_name(shapes, names):
    table = {s.name: s for s in shapes}
    return [table[n] for n in names]
