"""Triton kernels for the classic CNN layers, each family one module with four tiers:
a private `@triton.jit` kernel, a host launcher, an `autograd.Function`, an `nn.Module`.

Imports nothing from `nets`, `benchmarks` or `reports`. Importing does no GPU work.
On a machine without CUDA, set TRITON_INTERPRET=1 before importing to run on CPU tensors.
"""

from .batchnorm import BatchNorm2d, BatchNormReLUMaxPool2d, ConvBatchNorm2d, batch_norm, batch_norm_relu_max_pool2d
from .conv import Conv2d, conv2d
from .fc import Dropout, Linear, dropout, linear
from .inception import Inception1x1, inception_1x1, inception_block
from .lrn import LocalResponseNorm, local_response_norm
from .lrn_pool import LRNMaxPool2d, MaxPool2dLRN, lrn_max_pool2d, max_pool2d_lrn
from .pool import MaxPool2d, max_pool2d
from .residual import AddReLU, add_relu

__all__ = [
    "AddReLU",
    "BatchNorm2d",
    "BatchNormReLUMaxPool2d",
    "Conv2d",
    "ConvBatchNorm2d",
    "Dropout",
    "Inception1x1",
    "LRNMaxPool2d",
    "Linear",
    "LocalResponseNorm",
    "MaxPool2d",
    "MaxPool2dLRN",
    "add_relu",
    "batch_norm",
    "batch_norm_relu_max_pool2d",
    "conv2d",
    "dropout",
    "inception_1x1",
    "inception_block",
    "linear",
    "local_response_norm",
    "lrn_max_pool2d",
    "max_pool2d",
    "max_pool2d_lrn",
]
