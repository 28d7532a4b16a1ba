"""AlexNet as in Krizhevsky et al. 2012: 96-256-384-384-256 convs, the two-GPU split kept as
groups=2 on conv2/4/5, LRN (size 5, alpha 1e-4, beta 0.75, k 2; torch/Caffe semantics,
alpha divided by size) after conv1 and conv2, overlapping 3x3/2 max-pools, dropout 0.5 and
4096-4096-num_classes FC layers. 60,965,224 parameters at 1000 classes (groups=2).

Dropout is where the paper puts it, "in the first two fully-connected layers" (sec. 4.2): on
the outputs of fc6 and fc7, as in the authors' cuda-convnet configurations and Caffe's
bvlc_alexnet. torchvision's AlexNet drops fc6's input and output instead.
"""

from __future__ import annotations

from collections import OrderedDict

from torch import nn


class AlexNet(nn.Module):
    # LRN -> max-pool pairs the triton backend runs as one kernel (nets.layers)
    FUSED_PAIRS = (("features.norm1", "features.pool1"), ("features.norm2", "features.pool2"))

    def __init__(self, layers, num_classes: int = 1000, groups: int = 2, dropout: float = 0.5):
        super().__init__()
        conv, lrn, pool = layers.Conv2d, layers.LocalResponseNorm, layers.MaxPool2d
        self.features = nn.Sequential(OrderedDict([
            ("conv1", conv(3, 96, 11, stride=4, padding=2, activation="relu")),        # 96 x 55 x 55
            ("norm1", lrn(5, alpha=1e-4, beta=0.75, k=2.0)),
            ("pool1", pool(3, stride=2)),                                              # 96 x 27 x 27
            ("conv2", conv(96, 256, 5, padding=2, groups=groups, activation="relu")),  # 256 x 27 x 27
            ("norm2", lrn(5, alpha=1e-4, beta=0.75, k=2.0)),
            ("pool2", pool(3, stride=2)),                                              # 256 x 13 x 13
            ("conv3", conv(256, 384, 3, padding=1, activation="relu")),                # 384 x 13 x 13
            ("conv4", conv(384, 384, 3, padding=1, groups=groups, activation="relu")),
            ("conv5", conv(384, 256, 3, padding=1, groups=groups, activation="relu")),  # 256 x 13 x 13
            ("pool5", pool(3, stride=2)),                                              # 256 x 6 x 6
        ]))
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))  # identity at 224x224 input
        self.classifier = nn.Sequential(OrderedDict([
            ("fc6", nn.Linear(256 * 6 * 6, 4096)),
            ("relu6", nn.ReLU(inplace=True)),
            ("drop6", nn.Dropout(dropout)),
            ("fc7", nn.Linear(4096, 4096)),
            ("relu7", nn.ReLU(inplace=True)),
            ("drop7", nn.Dropout(dropout)),
            ("fc8", nn.Linear(4096, num_classes)),
        ]))
        self.reset_parameters()

    # the hidden FC layers' bias + ReLU + dropout, in Triton on the triton backend
    # (nets.layers.fuse_fc_epilogues)
    FC_EPILOGUES = (("classifier.fc6", "classifier.relu6", "classifier.drop6"),
                    ("classifier.fc7", "classifier.relu7", "classifier.drop7"))
    DROPOUTS = ()

    def reset_parameters(self) -> None:
        """The paper's init: weights N(0, 0.01); biases 1 in conv2, conv4, conv5 and the
        hidden FCs (to give the ReLUs positive inputs early), 0 elsewhere."""
        ones = {"features.conv2", "features.conv4", "features.conv5", "classifier.fc6", "classifier.fc7"}
        for name, m in self.named_modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.normal_(m.weight, 0.0, 0.01)
                nn.init.constant_(m.bias, 1.0 if name in ones else 0.0)

    def forward(self, x):
        x = self.avgpool(self.features(x))
        return self.classifier(x.flatten(1))
