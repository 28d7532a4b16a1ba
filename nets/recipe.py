"""The papers' training recipes as helpers: optimizer, learning-rate schedule, loss.

  AlexNet   SGD momentum 0.9, weight decay 5e-4, lr 0.01, divided by 10 when the
            validation error stops improving (Krizhevsky et al. 2012, sec. 5)
  GoogLeNet SGD momentum 0.9, lr decreased 4% every 8 epochs (Szegedy et al. 2014, sec. 6);
            weight decay 2e-4 and base lr 0.01 at batch 32 from Caffe's bvlc_googlenet
            solver and train_val (the paper gives none of them); aux losses weighted 0.3
  ResNet    SGD momentum 0.9, weight decay 1e-4, lr 0.1 at batch 256, divided by 10 when
            the error plateaus (He et al. 2015, sec. 3.4): epochs 30 and 60, as torchvision
The initializations live with each net (`reset_parameters`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .googlenet import AUX_WEIGHT, GoogLeNetOutputs

# lr at the batch size it was set for ("batch"), which the linear scaling starts from
_RECIPES = {
    "alexnet": {"lr": 0.01, "batch": 128, "weight_decay": 5e-4},
    "googlenet": {"lr": 0.01, "batch": 32, "weight_decay": 2e-4},
    "resnet": {"lr": 0.1, "batch": 256, "weight_decay": 1e-4},
}


def _family(arch: str) -> str:
    family = "resnet" if arch.startswith("resnet") else arch
    if family not in _RECIPES:
        raise ValueError(f"no recipe for arch {arch!r}; known: alexnet, googlenet, resnet*")
    return family


def optimizer(model: nn.Module, arch: str | None = None, *, lr: float | None = None,
              batch_size: int = 256) -> torch.optim.SGD:
    """SGD with momentum 0.9 and the paper's weight decay; lr scaled linearly from the
    batch size the recipe's lr was set at (256 for ResNet, 128 for AlexNet, Caffe's 32 for
    GoogLeNet) unless given."""
    recipe = _RECIPES[_family(arch or model.arch)]
    lr = recipe["lr"] * batch_size / recipe["batch"] if lr is None else lr
    return torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=recipe["weight_decay"])


def lr_scheduler(opt: torch.optim.Optimizer, arch: str):
    """The paper's schedule; step it once per epoch (AlexNet's: with the validation error)."""
    family = _family(arch)
    if family == "alexnet":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="min", factor=0.1)
    if family == "googlenet":
        return torch.optim.lr_scheduler.StepLR(opt, step_size=8, gamma=0.96)
    return torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[30, 60], gamma=0.1)


def loss(outputs, target: torch.Tensor) -> torch.Tensor:
    """Cross entropy; for GoogLeNet's training outputs, plus 0.3 x each aux classifier's."""
    if isinstance(outputs, GoogLeNetOutputs):
        total = F.cross_entropy(outputs.logits, target)
        for aux in (outputs.aux1, outputs.aux2):
            total = total + AUX_WEIGHT * F.cross_entropy(aux, target)
        return total
    return F.cross_entropy(outputs, target)


def train_step(model: nn.Module, opt: torch.optim.Optimizer, images: torch.Tensor,
               target: torch.Tensor) -> torch.Tensor:
    """One SGD step of the recipe; returns the (detached) loss."""
    opt.zero_grad(set_to_none=True)
    value = loss(model(images), target)
    value.backward()
    opt.step()
    return value.detach()


def fit(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *, steps: int, batch_size: int = 64,
        lr: float | None = None, seed: int = 0) -> list[float]:
    """Train on an in-memory dataset for `steps` recipe steps (random batches); returns the
    loss of every step. For short real-data checks, not a full training loop."""
    model.train()
    opt = optimizer(model, lr=lr, batch_size=batch_size)
    gen = torch.Generator().manual_seed(seed)
    losses = []
    for _ in range(steps):
        idx = torch.randint(0, images.shape[0], (batch_size,), generator=gen)
        x = images[idx].to(next(model.parameters()).device)
        losses.append(float(train_step(model, opt, x, labels[idx].to(x.device))))
    return losses
