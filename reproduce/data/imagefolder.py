"""Image classification from ImageFolder trees (root/{train,val}/<class>/*), read by torchvision's
ImageFolder and DataLoader with the reference transforms (RandomResizedCrop + flip for training;
resize to 256/224 of the side and centre crop for validation), normalised with ImageNet's
constants.

  imagefolder     any such tree: data.root, else DATA_DIR itself.
  imagenet        ILSVRC-2012 laid out the same way: data.root, else DATA_DIR/imagenet.
  imagenet_smoke  ImageNet-style digits generated from scikit-learn's digits on first use
                  (DATA_DIR/imagenet-smoke, 64 px): the smoke profile's stand-in for ImageNet.

The crop side (data.image_size) is stated in the resolved config: the model's input side
(224 for the ImageNet models, 32 for the CIFAR ones), 64 for imagenet_smoke. Another tree is
one call: `register_image_folder(name, folder, source)`.
"""

from __future__ import annotations

import os
import sys
from typing import Callable

import numpy as np
import torch

from .. import distributed
from ..config import DataConfig, data_root
from .loaders import DataBundle, device_loader
from .registry import (IMAGENET_MEAN, IMAGENET_STD, DatasetDefaults, DatasetMissing, dataset,
                       register_dataset)
from .tensor import SPLIT_SEED, digits_split

# ImageFolder datasets: name -> folder under DATA_DIR when data.root is not set ("": DATA_DIR itself)
IMAGE_FOLDERS: dict[str, str] = {}
SMOKE_IMAGE_SIZE = 64               # side of the generated ImageNet-style digits (imagenet_smoke)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def folder_root(cfg: DataConfig) -> str:
    """Where an ImageFolder dataset lives: data.root, else DATA_DIR/<the dataset's folder>."""
    if cfg.root:
        return cfg.root
    if cfg.dataset not in IMAGE_FOLDERS:
        raise ValueError(f"{cfg.dataset!r} is not an image folder dataset; these are: "
                         f"{', '.join(IMAGE_FOLDERS)}")
    return os.path.join(data_root(cfg), IMAGE_FOLDERS[cfg.dataset])


def _layout_help(root: str) -> str:
    return (f"Lay it out as {root}/train/<class>/*.JPEG and {root}/val/<class>/*.JPEG (one folder "
            "per class, the same class folders in both), or set DATA_DIR / data.root to such a tree.")


def check_image_folder(root: str) -> None:
    """Stop with DatasetMissing unless root holds train/<class>/ and val/<class>/ folders."""
    for split in ("train", "val"):
        if not os.path.isdir(os.path.join(root, split)):
            raise DatasetMissing(f"image folder not found: looked for {os.path.join(root, split)}. "
                                 f"{_layout_help(root)}")
    val = os.path.join(root, "val")
    flat = [e.name for e in os.scandir(val)
            if e.is_file() and e.name.lower().endswith(IMAGE_EXTENSIONS)]
    if flat:
        raise DatasetMissing(
            f"{val} holds {len(flat)} images directly (e.g. {sorted(flat)[0]}): the raw ImageNet "
            "validation download is flat, and ImageFolder needs one folder per class. Sort it into "
            "val/<wnid>/ folders with the usual valprep.sh (from the PyTorch ImageNet example: "
            "https://github.com/pytorch/examples/tree/main/imagenet), or let torchvision do it: "
            "put ILSVRC2012_img_val.tar and ILSVRC2012_devkit_t12.tar.gz in a folder R and run "
            "`python -c \"import torchvision; torchvision.datasets.ImageNet('R', split='val')\"` "
            "(it writes R/val/<wnid>/), then point data.root or DATA_DIR/imagenet at a tree with "
            "those val folders beside train/.")


def describe_image_folder(root: str) -> dict:
    """Classes and image counts of an ImageFolder tree (what `data check` reports)."""
    check_image_folder(root)
    out: dict = {"root": root}
    for split in ("train", "val"):
        base = os.path.join(root, split)
        classes = sorted(e.name for e in os.scandir(base) if e.is_dir())
        counts = {c: sum(1 for _, _, files in os.walk(os.path.join(base, c)) for f in files
                         if f.lower().endswith(IMAGE_EXTENSIONS)) for c in classes}
        out[split] = {"classes": len(classes), "images": sum(counts.values()),
                      "empty_classes": [c for c, n in counts.items() if n == 0],
                      "class_names": classes}
    out["same_classes"] = out["train"]["class_names"] == out["val"]["class_names"]
    return out


# Version of the generator below, written with the tree (SMOKE_VERSION_FILE): a tree written by
# another version (or by one before the file existed) is rewritten on use. 2: foreground and
# background differ by at least SMOKE_MIN_LUMA_GAP in luminance (version 1 drew both colours at
# random, often nearly equal) and glyphs span 60-95 % of the side (35-90 % before). 3: the two
# colours are grey levels (random, either polarity, the same gap) under one shared colour cast, so
# the digit is lighter or darker than its background in every channel; version 2 drew each
# colour's hue at random, and no dense network learned that tree in the smoke budget
# (docs/METHOD.md, "The ImageNet-style smoke tree"). 4: one level dark (0 to SMOKE_LEVEL_SPREAD),
# the other light (255 - SMOKE_LEVEL_SPREAD to 255), either polarity; version 3 drew both levels
# anywhere in [0, 255] at least 96 apart, and the background's brightness, varying over the whole
# range, slowed the ImageNet models' learning about fourfold (docs/METHOD.md).
SMOKE_TREE_VERSION = 4
SMOKE_VERSION_FILE = "VERSION"
SMOKE_LEVEL_SPREAD = 48.0        # of 255: how far each grey level may lie from its end of the range
SMOKE_MIN_LUMA_GAP = 255.0 - 2 * SMOKE_LEVEL_SPREAD    # so the two levels differ by at least this
SMOKE_CAST = 0.25                # each channel scaled by a factor in [1 - SMOKE_CAST, 1], per image
SMOKE_GLYPH_SIDE = (0.6, 0.95)   # glyph side as a fraction of the image side
SMOKE_CLASSES = [f"digit_{c}" for c in range(10)]


def smoke_imagenet_version(root: str) -> int | None:
    """The generator version that wrote the tree at root (None: no version file, i.e. version 1
    or not a generated tree)."""
    try:
        with open(os.path.join(root, SMOKE_VERSION_FILE)) as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _is_generated_smoke_tree(root: str) -> bool:
    """Whether root looks like a tree this module wrote (only digit_0..digit_9 class folders in
    train and val): only such a tree is ever replaced automatically."""
    for split in ("train", "val"):
        base = os.path.join(root, split)
        if not os.path.isdir(base) or sorted(e.name for e in os.scandir(base)) != SMOKE_CLASSES:
            return False
    return set(os.listdir(root)) <= {"train", "val", SMOKE_VERSION_FILE}


def make_smoke_imagenet(root: str, size: int = SMOKE_IMAGE_SIZE, val_fraction: float = 0.2,
                        per_class: int | None = None, if_missing: bool = False) -> dict | None:
    """An ImageNet-style ImageFolder tree from scikit-learn's digits (no download).

    Each 8×8 digit becomes a size×size RGB image: scaled to 60-95 % of the side, placed at a
    random position, dark on light or light on dark (each grey level within SMOKE_LEVEL_SPREAD of
    its end of the range, so at least SMOKE_MIN_LUMA_GAP apart), both under one random colour
    cast (each channel scaled by up to SMOKE_CAST), with pixel noise; so crops and resizing see
    varied, larger images, as on ImageNet, and the digit stays readable. The digit is lighter or
    darker than its background in every channel: independent random hues (version 2) made the
    tree far harder to learn than the digits are, and so did grey levels anywhere in the range
    (version 3; docs/METHOD.md). The split is the digits' fixed one (data.val_fraction's default) and the images are fixed by
    SPLIT_SEED, so the tree is the same wherever it is made. `per_class` caps the images per
    class and split (tests). The tree holds a VERSION file with SMOKE_TREE_VERSION.

    One process writes at a time (a lock file beside the tree): runs started together, e.g. by
    `JOBS=2`, would otherwise write the same tree at once and one could replace it under the
    other. With `if_missing`, a tree of the current version already there (or written meanwhile
    by another process) is kept and None returned; a generated tree of an older version is
    rewritten (with a note on stderr), and a tree that is not a generated one stops with
    DatasetMissing rather than being replaced.
    """
    from filelock import FileLock

    os.makedirs(os.path.dirname(os.path.abspath(root)), exist_ok=True)
    with FileLock(root.rstrip("/") + ".lock"):
        if if_missing and os.path.isdir(root):
            found = smoke_imagenet_version(root)
            if found == SMOKE_TREE_VERSION:
                return None
            if not _is_generated_smoke_tree(root):
                raise DatasetMissing(
                    f"{root} is not an ImageNet-style digits tree of version {SMOKE_TREE_VERSION} "
                    f"(no {SMOKE_VERSION_FILE} file saying so, and not only digit_0..digit_9 "
                    "folders, so it is left as it is). Move it away, or rewrite it with "
                    "`make data-imagenet-smoke` / `python -m reproduce data make-smoke-imagenet`.")
            print(f"{root} was written by version {found or 1} of the ImageNet-style digits "
                  f"generator; rewriting it with version {SMOKE_TREE_VERSION}", file=sys.stderr)
        return _write_smoke_imagenet(root, size, val_fraction, per_class)


def _write_smoke_imagenet(root: str, size: int, val_fraction: float,
                          per_class: int | None) -> dict:
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = np.random.default_rng(SPLIT_SEED)
    tmp = root.rstrip("/") + ".partial"
    if os.path.isdir(tmp):                # left by an interrupted write
        import shutil
        shutil.rmtree(tmp)
    splits = dict(zip(("train", "val"), digits_split(val_fraction)))
    if per_class is not None:
        splits = {k: np.concatenate([idx[digits.target[idx] == c][:per_class] for c in range(10)])
                  for k, idx in splits.items()}
    lo, hi = SMOKE_GLYPH_SIDE
    for split, indices in splits.items():
        for c in range(10):
            os.makedirs(os.path.join(tmp, split, f"digit_{c}"), exist_ok=True)
        for i in sorted(indices.tolist()):
            ink = digits.images[i] / 16.0                                # 8x8 in [0, 1]
            side = int(rng.integers(int(lo * size), int(hi * size) + 1))
            glyph = np.asarray(Image.fromarray((ink * 255).astype(np.uint8)).resize(
                (side, side), Image.BILINEAR), dtype=np.float32)[..., None] / 255.0
            dark = rng.uniform(0, SMOKE_LEVEL_SPREAD)
            light = rng.uniform(255 - SMOKE_LEVEL_SPREAD, 255)
            bg, fg = (dark, light) if rng.random() < 0.5 else (light, dark)
            cast = 1 - SMOKE_CAST * rng.uniform(0, 1, 3)                # one hue for both
            bg, fg = bg * cast, fg * cast
            img = np.broadcast_to(bg, (size, size, 3)).copy()
            y0, x0 = rng.integers(0, size - side + 1, 2)
            img[y0:y0 + side, x0:x0 + side] = glyph * fg + (1 - glyph) * bg
            img += rng.normal(0, 8, img.shape)
            Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(
                os.path.join(tmp, split, f"digit_{digits.target[i]}", f"{i:04d}.png"))
    with open(os.path.join(tmp, SMOKE_VERSION_FILE), "w") as f:
        f.write(f"{SMOKE_TREE_VERSION}\n")
    if os.path.isdir(root):
        import shutil
        shutil.rmtree(root)
    os.replace(tmp, root)                 # a half-written tree never looks complete
    return {split: len(idx) for split, idx in splits.items()}


def build_image_folder(cfg: DataConfig, device: torch.device, seed: int) -> DataBundle:
    from torchvision import datasets, transforms as T
    root = folder_root(cfg)
    if cfg.dataset in GENERATORS:
        GENERATORS[cfg.dataset](root)
    defaults = dataset(cfg.dataset).defaults
    size = cfg.image_size or defaults.image_size
    check_image_folder(root)
    norm = T.Normalize(defaults.mean, defaults.std)
    # the reference recipe's resize 256 / crop 224, scaled with the image size
    val_tf = T.Compose([T.Resize(int(size * 256 / 224)), T.CenterCrop(size), T.ToTensor(), norm])
    flip = [T.RandomHorizontalFlip()] if cfg.hflip else []
    train_tf = (T.Compose([T.RandomResizedCrop(size, scale=(cfg.crop_scale, 1.0)), *flip,
                           T.ToTensor(), norm])
                if cfg.augment else val_tf)
    try:
        train = datasets.ImageFolder(os.path.join(root, "train"), train_tf)
        val = datasets.ImageFolder(os.path.join(root, "val"), val_tf)
    except FileNotFoundError as e:  # no class folders / no images
        raise DatasetMissing(f"{e}. {_layout_help(root)}") from None
    # ImageFolder numbers classes per split by sorted folder name: differing folders shift labels.
    if train.classes != val.classes:
        raise ValueError(f"{root}: train has {len(train.classes)} class folders, val has "
                         f"{len(val.classes)}, and they must be the same names")
    if cfg.num_classes and cfg.num_classes != len(train.classes):
        raise ValueError(f"data.num_classes = {cfg.num_classes} but {root}/train has "
                         f"{len(train.classes)} class folders")

    rank, world = distributed.rank(), distributed.world_size()

    def loader(ds, bs: int, train: bool):
        sampler = None
        if world > 1:   # each rank its shard: train reshuffled per epoch, val split without padding
            sampler = (torch.utils.data.DistributedSampler(ds, world, rank, shuffle=True, seed=seed,
                                                           drop_last=True) if train
                       else list(range(rank, len(ds), world)))
        return device_loader(ds, bs, device, train=train, seed=seed, sampler=sampler,
                             num_workers=cfg.num_workers)

    return DataBundle(loader(train, cfg.batch_size, True), loader(val, cfg.eval_batch_size, False),
                      len(train.classes), 3, size, len(train), len(val), cfg.dataset)


def check_folder(cfg: DataConfig) -> str | None:
    try:
        check_image_folder(folder_root(cfg))
    except DatasetMissing as e:
        return str(e)
    return None


def describe(cfg: DataConfig) -> dict:
    return describe_image_folder(folder_root(cfg))


def ensure_smoke_imagenet(root: str) -> None:
    if smoke_imagenet_version(root) != SMOKE_TREE_VERSION:          # missing or older
        make_smoke_imagenet(root, if_missing=True)   # from bundled data: nothing to download


# the crop side 0 stands for: the model's input side, stated in the resolved config (224 when
# the data is built without a resolved config)
IMAGENET = DatasetDefaults(image_size=224, image_size_in_config=True, image_size_from_model=True,
                           mean=IMAGENET_MEAN, std=IMAGENET_STD)
# trees written on first use: name -> generate(root), which writes the tree unless it is there
GENERATORS: dict[str, Callable[[str], None]] = {}


def register_image_folder(name: str, folder: str, source: str,
                          defaults: DatasetDefaults = IMAGENET,
                          generate: Callable[[str], None] | None = None) -> None:
    """An ImageFolder tree as a classification dataset, at DATA_DIR/<folder> unless data.root
    says otherwise. A tree with `generate` is written on first use, so nothing is checked."""
    IMAGE_FOLDERS[name] = folder
    if generate is not None:
        GENERATORS[name] = generate
    register_dataset(name, task="classification", build=build_image_folder,
                     check=None if generate else check_folder, describe=describe,
                     defaults=defaults, source=source)


register_image_folder("imagefolder", "", "laid out by hand as <root>/train/<class>/*, "
                      "<root>/val/<class>/* (data.root, else DATA_DIR)")
register_image_folder("imagenet", "imagenet", "ILSVRC-2012 laid out by hand as "
                      "DATA_DIR/imagenet/{train,val}/<wnid>/* (README: Data)")
register_image_folder("imagenet_smoke", "imagenet-smoke", "generated from scikit-learn's digits "
                      "on first use (make data-imagenet-smoke)",
                      DatasetDefaults(image_size=SMOKE_IMAGE_SIZE, image_size_in_config=True,
                                      mean=IMAGENET_MEAN, std=IMAGENET_STD),
                      generate=ensure_smoke_imagenet)
