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

from ..config import DataConfig, data_root
from .loaders import DataBundle, TensorLoader, device_loader
from .registry import (IMAGENET_MEAN, IMAGENET_STD, DatasetDefaults, dataset, register_dataset,
                       register_download)
from .tensor import digits_split

VOID = 255
SCENE_SEED = 0
VOC = DatasetDefaults(image_size=512, num_classes=21, mean=IMAGENET_MEAN, std=IMAGENET_STD)
DIGIT_SCENES = DatasetDefaults(image_size=32, num_classes=11)
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


def _digit_scenes(cfg: DataConfig) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The train split's digits make the training scenes, the held-out digits the validation
    scenes."""
    from sklearn.datasets import load_digits
    d = load_digits()
    images, targets = torch.from_numpy(d.images), torch.from_numpy(d.target).long()
    tr, va = (torch.from_numpy(i) for i in digits_split(cfg.val_fraction))
    size = cfg.image_size or DIGIT_SCENES.image_size
    return (*digit_scenes(cfg.synthetic_train, size, images[tr], targets[tr], SCENE_SEED),
            *digit_scenes(cfg.synthetic_val, size, images[va], targets[va], SCENE_SEED + 1))


def build_digit_scenes(cfg: DataConfig, device: torch.device, seed: int) -> DataBundle:
    # no augmentation: every scene is already a random composition (crop_flip moves pixels
    # only, not masks)
    xtr, ytr, xva, yva = (t.to(device) for t in _digit_scenes(cfg))
    mean, std = xtr.float().mean(dim=(0, 2, 3)), xtr.float().std(dim=(0, 2, 3))
    train = TensorLoader(xtr, ytr, mean, std, cfg.batch_size, shuffle=True, seed=seed)
    val = TensorLoader(xva, yva, mean, std, cfg.eval_batch_size)
    return DataBundle(train, val, DIGIT_SCENES.num_classes, 1, xtr.shape[-1], len(xtr), len(xva),
                      cfg.dataset)


# -- PASCAL VOC -------------------------------------------------------------------------------------

def voc_folder(root: str) -> str:
    return os.path.join(root, "VOCdevkit", "VOC2012")


def voc_missing(root: str) -> list[str]:
    folder = voc_folder(root)
    need = [*VOC_DIRS, os.path.join(VOC_DIRS[2], "train.txt"), os.path.join(VOC_DIRS[2], "val.txt")]
    return [p for p in need if not os.path.exists(os.path.join(folder, p))]


def fetch_voc(root: str) -> None:
    """PASCAL VOC 2012 into root (VOCdevkit/VOC2012) with torchvision's downloader."""
    from torchvision.datasets import VOCSegmentation
    if voc_missing(root):
        os.makedirs(root, exist_ok=True)
        VOCSegmentation(root, "2012", "trainval", download=True)


# -- SBD (train_aug) --------------------------------------------------------------------------

SBD_NEEDS = ("img", "cls", "train.txt", "val.txt")


def sbd_folder(root: str) -> str:
    return os.path.join(root, "sbd")


def sbd_missing(root: str) -> list[str]:
    return [p for p in SBD_NEEDS if not os.path.exists(os.path.join(sbd_folder(root), p))]


def fetch_sbd(root: str) -> None:
    """SBD into root/sbd, unpacked by torchvision's SBDataset."""
    from torchvision.datasets import SBDataset
    if sbd_missing(root):
        os.makedirs(sbd_folder(root), exist_ok=True)
        SBDataset(sbd_folder(root), "train", mode="segmentation", download=True)


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


def voc_datasets(cfg: DataConfig, root: str, mean, std):
    from torchvision.datasets import VOCSegmentation
    size = cfg.image_size or VOC.image_size
    augment = voc_transforms(size, cfg.augment, mean, std, cfg.base_size)
    train = (train_aug(root, augment) if cfg.sbd
             else VOCSegmentation(root, "2012", "train", transforms=augment))
    val = VOCSegmentation(root, "2012", "val", transforms=voc_transforms(size, False, mean, std))
    return train, val, size


def check_voc(cfg: DataConfig) -> str | None:
    root = data_root(cfg)
    if voc_missing(root):
        return (f"PASCAL VOC 2012 not found: looked for {voc_folder(root)} (missing "
                f"{', '.join(voc_missing(root))}). Fetch it with `make data-voc` (or set DATA_DIR "
                f"/ data.root to the folder that holds VOCdevkit/).")
    if cfg.sbd and sbd_missing(root):
        return (f"SBD (the Semantic Boundaries Dataset, for data.sbd: true) not found: looked for "
                f"{sbd_folder(root)} (missing {', '.join(sbd_missing(root))}). Fetch it with "
                f"`make data-sbd` (a 1.4 GB download, unpacked by torchvision's SBDataset), or set "
                f"data.sbd: false to train on VOC 2012 train alone.")
    return None


def download_voc(cfg: DataConfig) -> None:
    fetch_voc(data_root(cfg))
    if cfg.sbd:
        fetch_sbd(data_root(cfg))


def build_voc(cfg: DataConfig, device: torch.device, seed: int) -> DataBundle:
    defaults = dataset(cfg.dataset).defaults
    train_set, val_set, size = voc_datasets(cfg, data_root(cfg), defaults.mean, defaults.std)
    streams = dict(device=device, seed=seed, num_workers=cfg.num_workers)
    return DataBundle(device_loader(train_set, cfg.batch_size, train=True, **streams),
                      device_loader(val_set, cfg.eval_batch_size, train=False, **streams),
                      defaults.num_classes, 3, size, len(train_set), len(val_set), cfg.dataset)


register_dataset("voc", task="segmentation", build=build_voc, check=check_voc,
                 download=download_voc, defaults=VOC,
                 source="downloaded into DATA_DIR/VOCdevkit (make data-voc; SBD: make data-sbd)")
register_download("sbd", fetch_sbd, folder=sbd_folder)
register_dataset("digit_scenes", task="segmentation", build=build_digit_scenes,
                 defaults=DIGIT_SCENES,
                 source="generated from scikit-learn's digits (no download)")
