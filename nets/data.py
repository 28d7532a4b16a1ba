"""Data for the nets: synthetic batches on the device (throughput), an ImageFolder-style
loader for a real ImageNet directory, the papers' augmentation, 10-crop evaluation, and a
small real image set that ships in a package (scikit-learn's digits) for learning checks.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

# ImageNet statistics (RGB, [0, 1] scale) and the PCA of its pixel colours used by AlexNet's
# lighting noise (the values fb.resnet.torch published; the paper gives the method only).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PCA_EIGVAL = torch.tensor([0.2175, 0.0188, 0.0045])
PCA_EIGVEC = torch.tensor([[-0.5675, 0.7192, 0.4009],
                           [-0.5808, -0.0045, -0.8140],
                           [-0.5836, -0.6948, 0.4203]])
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def synthetic_batch(batch_size: int, *, num_classes: int = 1000, image_size: int = 224,
                    device="cpu", dtype=torch.float32, channels_last: bool = False,
                    seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random images and labels generated directly on `device` (no host copy)."""
    gen = torch.Generator(device=device).manual_seed(seed)
    x = torch.randn(batch_size, 3, image_size, image_size, generator=gen, device=device, dtype=dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, num_classes, (batch_size,), generator=gen, device=device)
    return x, y


def normalize(images: torch.Tensor, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> torch.Tensor:
    """Mean-centre (and scale) each colour channel of a [N, 3, H, W] or [3, H, W] batch."""
    shape = (-1, 1, 1)
    m = torch.tensor(mean, device=images.device, dtype=images.dtype).view(shape)
    s = torch.tensor(std, device=images.device, dtype=images.dtype).view(shape)
    return (images - m) / s


def random_crop_flip(image: torch.Tensor, size: int = 224, *, generator=None) -> torch.Tensor:
    """A random `size` crop of a [3, H, W] image, mirrored with probability 1/2 (the papers'
    label-preserving augmentation: random 224 crops of 256 images, horizontal flips)."""
    _, h, w = image.shape
    if h < size or w < size:
        raise ValueError(f"image {h}x{w} is smaller than the crop size {size}")
    top = int(torch.randint(0, h - size + 1, (1,), generator=generator))
    left = int(torch.randint(0, w - size + 1, (1,), generator=generator))
    crop = image[:, top:top + size, left:left + size]
    if torch.rand((), generator=generator) < 0.5:
        crop = crop.flip(-1)
    return crop


def pca_lighting(image: torch.Tensor, alphastd: float = 0.1, *, generator=None) -> torch.Tensor:
    """AlexNet's colour augmentation: add eigvec @ (alpha * eigval), alpha ~ N(0, 0.1)."""
    alpha = torch.randn(3, generator=generator) * alphastd
    rgb = (PCA_EIGVEC * (alpha * PCA_EIGVAL)).sum(dim=1)
    return image + rgb.view(3, 1, 1).to(image)


def resize_shorter(image: torch.Tensor, size: int = 256) -> torch.Tensor:
    _, h, w = image.shape
    scale = size / min(h, w)
    new = (max(size, round(h * scale)), max(size, round(w * scale)))
    return F.interpolate(image[None], size=new, mode="bilinear", antialias=True, align_corners=False)[0]


def ten_crops(images: torch.Tensor, size: int = 224) -> torch.Tensor:
    """[N, C, H, W] -> [10, N, C, size, size]: four corners and centre, and their mirrors."""
    h, w = images.shape[-2:]
    if h < size or w < size:
        raise ValueError(f"images {h}x{w} are smaller than the crop size {size}")
    tops = (0, 0, h - size, h - size, (h - size) // 2)
    lefts = (0, w - size, 0, w - size, (w - size) // 2)
    crops = [images[..., t:t + size, left:left + size] for t, left in zip(tops, lefts)]
    return torch.stack(crops + [c.flip(-1) for c in crops])


@torch.no_grad()
def ten_crop_predict(model, images: torch.Tensor, size: int = 224) -> torch.Tensor:
    """Class probabilities averaged over the 10 crops (the papers' 10-crop evaluation), in
    eval mode; the model is left in the mode it came in (a validation pass inside a training
    loop must not leave BatchNorm on running statistics and dropout off for the next steps)."""
    was_training = model.training
    model.eval()
    try:
        crops = ten_crops(images, size)
        probs = torch.stack([F.softmax(model(c), dim=1) for c in crops])
    finally:
        model.train(was_training)
    return probs.mean(0)


class ImageFolder(torch.utils.data.Dataset):
    """`root/<class>/<image>` files, classes in sorted order. Training: resize shorter side
    to 256, random 224 crop + flip, PCA lighting, normalize. Eval: centre crop instead."""

    def __init__(self, root: str | os.PathLike, *, train: bool = True, resize: int = 256, crop: int = 224,
                 lighting: float = 0.1):
        self.root = Path(root)
        if not self.root.is_dir():
            raise ValueError(f"root must be a directory of class folders, got {str(root)!r}")
        self.classes = sorted(d.name for d in self.root.iterdir() if d.is_dir())
        self.samples = [(p, i) for i, c in enumerate(self.classes) for p in sorted((self.root / c).iterdir())
                        if p.suffix.lower() in IMAGE_EXTENSIONS]
        if not self.samples:
            raise ValueError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) under {str(root)!r}")
        self.train, self.resize, self.crop, self.lighting = train, resize, crop, lighting

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        from PIL import Image  # pillow comes with matplotlib

        path, label = self.samples[i]
        with Image.open(path) as im:
            arr = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
        image = resize_shorter(torch.from_numpy(arr).permute(2, 0, 1).contiguous(), self.resize)
        if self.train:
            image = random_crop_flip(image, self.crop)
            if self.lighting:
                image = pca_lighting(image, self.lighting)
        else:
            _, h, w = image.shape
            t, left = (h - self.crop) // 2, (w - self.crop) // 2
            image = image[:, t:t + self.crop, left:left + self.crop]
        return normalize(image), label


def digits(image_size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's 1,797 handwritten digits (8x8, shipped inside the package), upscaled
    to `image_size`, grey replicated to 3 channels, normalized; labels 0-9."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.tensor(data.images, dtype=torch.float32)[:, None] / 16.0
    x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False)
    x = (x - x.mean()) / x.std()
    return x.expand(-1, 3, -1, -1).contiguous(), torch.tensor(data.target, dtype=torch.long)
