"""Segmentation data: images with per-pixel class labels (255 = void, ignored by loss and metrics).

  voc           PASCAL VOC 2012 through torchvision (`<root>/VOCdevkit/VOC2012`, `make data-voc`):
                21 classes (background + 20). Training: the joint transforms of torchvision's
                segmentation reference — the image's shorter side drawn from [0.5, 2.0] ×
                `data.base_size` (default: the crop size), padded random crop of
                `data.image_size` (image 0, mask 255), horizontal flip. Validation: image and
                mask resized to image_size × image_size (mask by nearest neighbour), so the costs
                are counted at the evaluation resolution; metrics are taken on the resized masks
                (the official protocol scores at the original resolution).
                With `data.sbd`, training reads "train_aug": VOC 2012 train plus the Semantic
                Boundaries Dataset's train and val images (Hariharan et al. 2011, through
                torchvision's SBDataset from `<root>/sbd`, `make data-sbd`), leaving out every
                VOC 2012 val image and taking each image once (the VOC annotation where an image
                has both): 10,582 images. SBD's labels (cls/<id>.mat, GTcls.Segmentation) use the
                same 21 classes and mark no void.
  digit_scenes  embedded smoke set: 1 to 3 of scikit-learn's handwritten digits, each scaled by
                1, 1.5 or 2, composed on a dark canvas (32 × 32 unless data.image_size says
                otherwise); 11 classes (background + digits 0-9). A pixel is its digit's class
                where the digit's ink is over half its maximum, void (255) on the faint rim (as
                VOC marks object borders void), background elsewhere; later digits cover earlier
                ones. Generated from a fixed seed; training scenes use the digits of the digits
                train split only, validation scenes the held-out digits.
"""

from __future__ import annotations

import os

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

SEGMENTATION_DATASETS = ("voc", "digit_scenes")
VOID = 255
SCENE_SEED = 0
VOC_CLASSES = 21
DIGIT_SCENE_CLASSES = 11
VOC_DIRS = ("JPEGImages", "SegmentationClass", os.path.join("ImageSets", "Segmentation"))


def digit_scenes(n: int, size: int, digits: Tensor, labels: Tensor, seed: int
                 ) -> tuple[Tensor, Tensor]:
    """n scenes (uint8 images (n, 1, size, size), masks (n, size, size) int64)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.zeros(n, 1, size, size)
    y = torch.zeros(n, size, size, dtype=torch.long)
    for i in range(n):
        for _ in range(int(torch.randint(1, 4, (), generator=gen))):
            j = int(torch.randint(len(digits), (), generator=gen))
            side = int(8 * (1.0, 1.5, 2.0)[int(torch.randint(3, (), generator=gen))])
            side = min(side, size)
            ink = F.interpolate(digits[j].float()[None, None], size=(side, side), mode="bilinear",
                                align_corners=False)[0, 0] / 16.0
            r = int(torch.randint(size - side + 1, (), generator=gen))
            c = int(torch.randint(size - side + 1, (), generator=gen))
            patch = (slice(r, r + side), slice(c, c + side))
            strong, faint = ink > 0.5 * ink.max(), ink > 0.15 * ink.max()
            x[i, 0][patch] = torch.where(faint, torch.maximum(x[i, 0][patch], ink), x[i, 0][patch])
            y[i][patch] = torch.where(strong, labels[j] + 1,
                                      torch.where(faint, torch.full_like(y[i][patch], VOID),
                                                  y[i][patch]))
    return (x * 255).round().to(torch.uint8), y


# -- PASCAL VOC -------------------------------------------------------------------------------------

def voc_folder(root: str) -> str:
    return os.path.join(root, "VOCdevkit", "VOC2012")


def voc_missing(root: str) -> list[str]:
    folder = voc_folder(root)
    need = [*VOC_DIRS, os.path.join(VOC_DIRS[2], "train.txt"), os.path.join(VOC_DIRS[2], "val.txt")]
    return [p for p in need if not os.path.exists(os.path.join(folder, p))]


def voc_missing_message(root: str) -> str:
    return (f"PASCAL VOC 2012 not found: looked for {voc_folder(root)} (missing "
            f"{', '.join(voc_missing(root))}). Fetch it with `make data-voc` (or set DATA_DIR / "
            f"data.root to the folder that holds VOCdevkit/).")


# -- SBD (train_aug) --------------------------------------------------------------------------

SBD_NEEDS = ("img", "cls", "train.txt", "val.txt")


def sbd_folder(root: str) -> str:
    return os.path.join(root, "sbd")


def sbd_missing(root: str) -> list[str]:
    return [p for p in SBD_NEEDS if not os.path.exists(os.path.join(sbd_folder(root), p))]


def sbd_missing_message(root: str) -> str:
    return (f"SBD (the Semantic Boundaries Dataset, for data.sbd: true) not found: looked for "
            f"{sbd_folder(root)} (missing {', '.join(sbd_missing(root))}). Fetch it with "
            f"`make data-sbd` (a 1.4 GB download, unpacked by torchvision's SBDataset), or set "
            f"data.sbd: false to train on VOC 2012 train alone.")


def image_id(path: str) -> str:
    return os.path.splitext(os.path.basename(path))[0]


def train_aug(root: str, transforms=None):
    """VOC 2012 train ∪ SBD train ∪ SBD val, minus VOC 2012 val, each image once (the first
    source that has it: VOC's own annotation before SBD's)."""
    from torch.utils.data import ConcatDataset, Subset
    from torchvision.datasets import SBDataset, VOCSegmentation
    voc = VOCSegmentation(root, "2012", "train", transforms=transforms)
    val_list = os.path.join(voc_folder(root), VOC_DIRS[2], "val.txt")
    with open(val_list) as f:
        seen = {line.strip() for line in f if line.strip()}          # VOC val: never trained on
    seen.update(image_id(p) for p in voc.images)
    parts = [voc]
    for split in ("train", "val"):
        sbd = SBDataset(sbd_folder(root), split, mode="segmentation", transforms=transforms)
        keep = []
        for i, path in enumerate(sbd.images):
            if image_id(path) not in seen:
                seen.add(image_id(path))
                keep.append(i)
        parts.append(Subset(sbd, keep))
    return ConcatDataset(parts)


def voc_transforms(size: int, train: bool, mean, std, base_size: int = 0):
    from torchvision import tv_tensors
    from torchvision.transforms import v2
    tail = [v2.ToImage(), v2.ToDtype({tv_tensors.Image: torch.float32, "others": None}, scale=True),
            v2.Normalize(mean, std), v2.ToPureTensor()]
    if not train:
        return v2.Compose([AsMask(), v2.Resize((size, size)), *tail])
    base = base_size or size
    return v2.Compose([
        AsMask(), v2.RandomResize(int(0.5 * base), int(2.0 * base)),
        v2.RandomCrop(size, pad_if_needed=True, fill={tv_tensors.Mask: VOID, "others": 0}),
        v2.RandomHorizontalFlip(), *tail])


class AsMask(torch.nn.Module):
    """Wrap the target (a PIL palette image) as a Mask, so geometric transforms resize it by
    nearest neighbour and pad it with the void label."""

    def forward(self, img, target):
        from torchvision import tv_tensors
        return img, tv_tensors.Mask(torch.as_tensor(np.array(target), dtype=torch.long))


def voc_datasets(cfg, root: str, mean, std):
    from torchvision.datasets import VOCSegmentation
    size = cfg.image_size or 512
    augment = voc_transforms(size, cfg.augment, mean, std, cfg.base_size)
    train = (train_aug(root, augment) if cfg.sbd
             else VOCSegmentation(root, "2012", "train", transforms=augment))
    val = VOCSegmentation(root, "2012", "val", transforms=voc_transforms(size, False, mean, std))
    return train, val, size
