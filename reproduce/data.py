"""Datasets as re-iterable streams of batches that are already on the training device.

Small datasets (digits, CIFAR, synthetic) live whole on the device as tensors, as in KellerJordan's
airbench: no DataLoader, no per-sample Python, augmentation runs batched on the device. That keeps
CPU smoke runs and GPU CIFAR runs from being input-bound. ImageNet-style folders go through
torchvision's ImageFolder + DataLoader with the reference transforms.

Reproducibility: a train stream's epoch e is shuffled and augmented from (seed, e) alone, drawn on
the CPU, so the same seed gives the same batches on every device. Data splits (digits) and the
synthetic data use a fixed seed, so changing the run seed never changes which data a run sees.
"""

from __future__ import annotations

import os
import pickle
import sys
from dataclasses import dataclass
from typing import Iterable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from . import distributed
from .config import SMOKE_IMAGE_SIZE, DataConfig, data_root
from .segmentation_data import SEGMENTATION_DATASETS
from .text_data import TEXT_DATASETS

SPLIT_SEED = 0          # digits split and synthetic data: the same for every run seed
SYNTHETIC_NOISE = 1.0   # per-pixel noise std; templates have unit std, so classes overlap little

CIFAR = {
    "cifar10": dict(title="CIFAR-10", folder="cifar-10-batches-py", label_key="labels",
                    train=[f"data_batch_{i}" for i in range(1, 6)], test=["test_batch"],
                    num_classes=10, mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616)),
    "cifar100": dict(title="CIFAR-100", folder="cifar-100-python", label_key="fine_labels",
                     train=["train"], test=["test"],
                     num_classes=100, mean=(0.5071, 0.4865, 0.4409), std=(0.2673, 0.2564, 0.2762)),
}
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class DatasetMissing(FileNotFoundError):
    """The data is not on disk; the message names the path looked at and how to fetch it."""


@dataclass
class DataBundle:
    train: Iterable[tuple[Tensor, Tensor]]  # each `for x, y in train` is one epoch, reshuffled
    val: Iterable[tuple[Tensor, Tensor]]    # fixed order, no augmentation
    num_classes: int
    in_channels: int
    image_size: int                         # spatial side of the model input
    num_train: int
    num_val: int
    name: str


def num_batches(n: int, batch_size: int, drop_small: bool) -> int:
    """Batches per epoch. With drop_small, a last partial batch under half a batch is dropped:
    tiny batches give noisy BatchNorm statistics (and a batch of one breaks BN). The only batch
    of a dataset smaller than one batch is always kept."""
    full, rest = divmod(n, batch_size)
    keep_rest = rest > 0 and (not drop_small or full == 0 or 2 * rest >= batch_size)
    return full + int(keep_rest)


# ---------------------------------------------------------------------------------------------
# batched augmentation on the device

def draw_crop_flip(n: int, pad: int, flip: bool, gen: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
    """Random crop offsets in [0, 2*pad] and flip decisions for n images, drawn on the CPU."""
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    flips = torch.rand(n, generator=gen) < 0.5 if flip else torch.zeros(n, dtype=torch.bool)
    return dy, dx, flips


def crop_flip(x: Tensor, dy: Tensor, dx: Tensor, flips: Tensor, pad: int) -> Tensor:
    """Crop each image of x (N,C,H,W) at (dy, dx) from its zero-padded version, mirroring those
    with flips set. Two gathers, no per-sample loop. Call on raw pixels so the border is black,
    as with torchvision's RandomCrop(padding=pad)."""
    n, c, h, w = x.shape
    if pad:
        x = F.pad(x, (pad, pad, pad, pad))
    rows = dy.to(x.device)[:, None] + torch.arange(h, device=x.device)  # (N, H)
    cols = dx.to(x.device)[:, None] + torch.arange(w, device=x.device)  # (N, W)
    cols = torch.where(flips.to(x.device)[:, None], cols.flip(1), cols)  # a flip reverses columns
    x = x.gather(2, rows[:, None, :, None].expand(n, c, h, x.shape[3]))
    return x.gather(3, cols[:, None, None, :].expand(n, c, h, w))


def _epoch_seed(seed: int, epoch: int) -> int:
    # SeedSequence mixes (seed, epoch) so nearby seeds/epochs give unrelated streams
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])


class TensorLoader:
    """Batches from device-resident raw tensors, normalised on the fly. Each iter() is one epoch;
    with shuffle, epoch e is shuffled (and augmented, if pad or flip) from (seed, e). `epoch`
    counts epochs started; set it to resume a run mid-way with the same data order.

    With `world` > 1 (distributed), rank `rank` reads every world-th sample of the epoch's
    order: training shards are equal (the last n mod world samples of the order are left out,
    so every rank runs as many steps), validation shards cover every sample once."""

    def __init__(self, x: Tensor, y: Tensor, mean: Tensor, std: Tensor, batch_size: int, *,
                 shuffle: bool = False, pad: int = 0, flip: bool = False, seed: int = 0,
                 rank: int = 0, world: int = 1):
        self.x, self.y, self.batch_size = x, y, batch_size
        self.mean = mean.to(x.device, torch.float32).view(1, -1, 1, 1)
        self.std = std.to(x.device, torch.float32).view(1, -1, 1, 1)
        self.shuffle, self.pad, self.flip, self.seed = shuffle, pad, flip, seed
        self.epoch = 0
        n = len(x)
        self.positions = None if world == 1 else \
            torch.arange(rank, n - n % world if shuffle else n, world, device=x.device)

    def __len__(self) -> int:
        n = len(self.x) if self.positions is None else len(self.positions)
        return num_batches(n, self.batch_size, drop_small=self.shuffle)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        n, bs, dev = len(self.x), self.batch_size, self.x.device
        order = aug = None
        if self.shuffle:
            gen = torch.Generator().manual_seed(_epoch_seed(self.seed, self.epoch))
            self.epoch += 1
            order = torch.randperm(n, generator=gen).to(dev)  # drawn first: same order with or without aug
            if self.pad or self.flip:  # one transfer per epoch, not per batch (each one syncs CUDA)
                aug = [t.to(dev) for t in draw_crop_flip(n, self.pad, self.flip, gen)]
        if self.positions is not None:                      # this rank's shard
            order = self.positions if order is None else order[self.positions]
            aug = None if aug is None else [t[self.positions] for t in aug]
        for i in range(len(self)):
            sl = slice(i * bs, (i + 1) * bs)
            idx = order[sl] if order is not None else sl
            xb, yb = self.x[idx], self.y[idx]
            if aug is not None:
                xb = crop_flip(xb, *(t[sl] for t in aug), pad=self.pad)
            yield (xb.float() - self.mean) / self.std, yb


class DeviceLoader:
    """A DataLoader whose batches are moved to `device`. `epoch` counts epochs started (a
    distributed sampler reshuffles from it, the same way on every rank)."""

    def __init__(self, loader: torch.utils.data.DataLoader, device: torch.device):
        self.loader, self.device = loader, device
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        if hasattr(self.loader.sampler, "set_epoch"):
            self.loader.sampler.set_epoch(self.epoch)
            self.epoch += 1
        for x, y in self.loader:
            yield x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)


# ---------------------------------------------------------------------------------------------
# datasets: each returns raw train/val tensors (uint8 pixels, or float for synthetic)

def digits_split(val_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Stratified train/val indices into sklearn's digits, fixed across run seeds."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    y = load_digits().target
    return train_test_split(np.arange(len(y)), test_size=val_fraction, stratify=y,
                            random_state=SPLIT_SEED)


def _digits(cfg: DataConfig) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    from sklearn.datasets import load_digits
    d = load_digits()
    x = torch.from_numpy(d.images.astype(np.uint8)).unsqueeze(1)  # (1797, 1, 8, 8), values 0..16
    y = torch.from_numpy(d.target).long()
    tr, va = (torch.from_numpy(i) for i in digits_split(cfg.val_fraction))
    return x[tr], y[tr], x[va], y[va]


def _digit_scenes(cfg: DataConfig) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Segmentation scenes composed from the digits (segmentation_data.py): the train split's
    digits make the training scenes, the held-out digits the validation scenes."""
    from sklearn.datasets import load_digits
    from .segmentation_data import SCENE_SEED, digit_scenes
    d = load_digits()
    images, targets = torch.from_numpy(d.images), torch.from_numpy(d.target).long()
    tr, va = (torch.from_numpy(i) for i in digits_split(cfg.val_fraction))
    size = cfg.image_size or 32
    return (*digit_scenes(cfg.synthetic_train, size, images[tr], targets[tr], SCENE_SEED),
            *digit_scenes(cfg.synthetic_val, size, images[va], targets[va], SCENE_SEED + 1))


def _segmentation(cfg: DataConfig, device: torch.device, seed: int) -> DataBundle:
    from .segmentation_data import DIGIT_SCENE_CLASSES, VOC_CLASSES, voc_datasets
    if cfg.dataset == "digit_scenes":
        # no augmentation: every scene is already a random composition (crop_flip moves pixels
        # only, not masks)
        xtr, ytr, xva, yva = (t.to(device) for t in _digit_scenes(cfg))
        mean, std = xtr.float().mean(dim=(0, 2, 3)), xtr.float().std(dim=(0, 2, 3))
        train = TensorLoader(xtr, ytr, mean, std, cfg.batch_size, shuffle=True, seed=seed)
        val = TensorLoader(xva, yva, mean, std, cfg.eval_batch_size)
        return DataBundle(train, val, DIGIT_SCENE_CLASSES, 1, xtr.shape[-1], len(xtr), len(xva),
                          cfg.dataset)
    check_available(cfg)
    train, val, size = voc_datasets(cfg, data_root(cfg), IMAGENET_MEAN, IMAGENET_STD)

    def loader(ds, bs: int, shuffle: bool) -> DeviceLoader:
        drop = shuffle and num_batches(len(ds), bs, drop_small=True) < -(-len(ds) // bs)
        return DeviceLoader(torch.utils.data.DataLoader(
            ds, batch_size=bs, shuffle=shuffle, drop_last=drop, num_workers=cfg.num_workers,
            pin_memory=device.type == "cuda", persistent_workers=cfg.num_workers > 0,
            generator=torch.Generator().manual_seed(seed) if shuffle else None), device)

    return DataBundle(loader(train, cfg.batch_size, True), loader(val, cfg.eval_batch_size, False),
                      VOC_CLASSES, 3, size, len(train), len(val), cfg.dataset)


def _synthetic(cfg: DataConfig) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    size, k = cfg.image_size or 8, cfg.num_classes or 4
    gen = torch.Generator().manual_seed(SPLIT_SEED)
    # Smooth templates (upsampled 4x4 noise): a class stays recognisable under small crops.
    templates = F.interpolate(torch.randn(k, 3, 4, 4, generator=gen), size=(size, size),
                              mode="bilinear", align_corners=False)
    templates /= templates.std(dim=(1, 2, 3), keepdim=True)
    n_tr, n = cfg.synthetic_train, cfg.synthetic_train + cfg.synthetic_val
    y = torch.randperm(n, generator=gen) % k  # balanced classes
    x = templates[y] + SYNTHETIC_NOISE * torch.randn(n, 3, size, size, generator=gen)
    return x[:n_tr], y[:n_tr], x[n_tr:], y[n_tr:]


def _cifar_missing(dataset: str, root: str) -> list[str]:
    spec = CIFAR[dataset]
    folder = os.path.join(root, spec["folder"])
    return [f for f in spec["train"] + spec["test"] if not os.path.isfile(os.path.join(folder, f))]


def _cifar(cfg: DataConfig) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    spec, root = CIFAR[cfg.dataset], data_root(cfg)
    folder = os.path.join(root, spec["folder"])
    missing = _cifar_missing(cfg.dataset, root)
    if missing and cfg.download:
        download(cfg.dataset, root)
        missing = _cifar_missing(cfg.dataset, root)
    if missing:
        raise DatasetMissing(
            f"{spec['title']} not found: looked for {folder} (missing {', '.join(missing)}). "
            f"Fetch it with `make data-{cfg.dataset}` (or set DATA_DIR / data.root to where it lives).")

    def read(names: list[str]) -> tuple[Tensor, Tensor]:
        xs, ys = [], []
        for name in names:
            with open(os.path.join(folder, name), "rb") as f:
                d = pickle.load(f, encoding="latin1")  # written by Python 2; latin1 keeps bytes intact
            xs.append(np.asarray(d["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))  # rows: R, G, B planes
            ys.append(np.asarray(d[spec["label_key"]], dtype=np.int64))
        y = torch.from_numpy(np.concatenate(ys))
        if len(y) and (y.min() < 0 or y.max() >= spec["num_classes"]):
            raise ValueError(f"{folder}: labels outside 0..{spec['num_classes'] - 1} in {names}")
        return torch.from_numpy(np.concatenate(xs)), y

    return *read(spec["train"]), *read(spec["test"])


def download(dataset: str, root: str) -> None:
    """Fetch CIFAR-10/100, PASCAL VOC 2012 or SBD into root with torchvision's downloader."""
    if dataset == "sbd":
        from torchvision.datasets import SBDataset
        from .segmentation_data import sbd_folder, sbd_missing
        if sbd_missing(root):
            os.makedirs(sbd_folder(root), exist_ok=True)
            SBDataset(sbd_folder(root), "train", mode="segmentation", download=True)
        return
    if dataset == "voc":
        from torchvision.datasets import VOCSegmentation
        from .segmentation_data import voc_missing
        if voc_missing(root):
            os.makedirs(root, exist_ok=True)
            VOCSegmentation(root, "2012", "trainval", download=True)
        return
    if dataset not in CIFAR:
        raise ValueError(f"cannot download {dataset!r}: only cifar10, cifar100, voc and sbd are "
                         "downloadable; digits and digit_scenes come from scikit-learn, "
                         "pydoc_text from Python itself, synthetic is generated, Penn Treebank is "
                         "placed in <root>/ptb, and an imagefolder tree (<root>/train/<class>/*, "
                         "<root>/val/<class>/*) is laid out by hand")
    from torchvision.datasets import CIFAR10, CIFAR100
    from torchvision.datasets.utils import download_and_extract_archive
    cls = CIFAR10 if dataset == "cifar10" else CIFAR100
    os.makedirs(root, exist_ok=True)
    download_and_extract_archive(cls.url, root, filename=cls.filename, md5=cls.tgz_md5)


# ImageFolder datasets: name -> folder under DATA_DIR when data.root is not set ("": DATA_DIR itself)
IMAGE_FOLDERS = {"imagefolder": "", "imagenet": "imagenet", "imagenet_smoke": "imagenet-smoke"}
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def folder_root(cfg: DataConfig) -> str:
    """Where an ImageFolder dataset lives: data.root, else DATA_DIR/<the dataset's folder>."""
    if cfg.root:
        return cfg.root
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
# random, often nearly equal) and glyphs span 60-95 % of the side (35-90 % before).
SMOKE_TREE_VERSION = 2
SMOKE_VERSION_FILE = "VERSION"
SMOKE_MIN_LUMA_GAP = 96.0        # of 255 (ITU-R BT.601 luma)
SMOKE_GLYPH_SIDE = (0.6, 0.95)   # glyph side as a fraction of the image side
SMOKE_CLASSES = [f"digit_{c}" for c in range(10)]


def _luma(rgb: np.ndarray) -> float:
    return float(rgb @ np.array([0.299, 0.587, 0.114]))


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
    random position on a random background colour, drawn in a random foreground colour at least
    SMOKE_MIN_LUMA_GAP brighter or darker than the background, with pixel noise; so crops, flips
    and resizing see varied, larger images, as on ImageNet, and the digit stays readable. The
    split is the digits' fixed one (data.val_fraction's default) and the images are fixed by
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
            bg, fg = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
            while abs(_luma(bg) - _luma(fg)) < SMOKE_MIN_LUMA_GAP:      # keep the digit visible
                bg, fg = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
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


def _imagefolder(cfg: DataConfig, device: torch.device, seed: int) -> DataBundle:
    from torchvision import datasets, transforms as T
    root = folder_root(cfg)
    if (cfg.dataset == "imagenet_smoke"
            and smoke_imagenet_version(root) != SMOKE_TREE_VERSION):   # missing or older
        make_smoke_imagenet(root, if_missing=True)   # from bundled data: nothing to download
    size = cfg.image_size or (SMOKE_IMAGE_SIZE if cfg.dataset == "imagenet_smoke" else 224)
    check_image_folder(root)
    norm = T.Normalize(IMAGENET_MEAN, IMAGENET_STD)
    # the reference recipe's resize 256 / crop 224, scaled with the image size
    val_tf = T.Compose([T.Resize(int(size * 256 / 224)), T.CenterCrop(size), T.ToTensor(), norm])
    train_tf = (T.Compose([T.RandomResizedCrop(size, scale=(cfg.crop_scale, 1.0)), T.RandomHorizontalFlip(), T.ToTensor(), norm])
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

    def loader(ds: datasets.ImageFolder, bs: int, train: bool) -> DeviceLoader:
        sampler = None
        n = len(ds)
        if world > 1:   # each rank its shard: train reshuffled per epoch, val split without padding
            sampler = (torch.utils.data.DistributedSampler(ds, world, rank, shuffle=True, seed=seed,
                                                           drop_last=True) if train
                       else list(range(rank, len(ds), world)))
            n = len(sampler)
        drop = train and num_batches(n, bs, drop_small=True) < -(-n // bs)
        return DeviceLoader(torch.utils.data.DataLoader(
            ds, batch_size=bs, shuffle=train and sampler is None, sampler=sampler, drop_last=drop,
            num_workers=cfg.num_workers,
            pin_memory=device.type == "cuda", persistent_workers=cfg.num_workers > 0,
            # seeds the shuffle and the workers' augmentation RNG; with num_workers=0 the
            # augmentation uses torch's global RNG (seeded by the trainer)
            generator=torch.Generator().manual_seed(seed) if train else None), device)

    return DataBundle(loader(train, cfg.batch_size, True), loader(val, cfg.eval_batch_size, False),
                      len(train.classes), 3, size, len(train), len(val), cfg.dataset)




def _text(cfg: DataConfig, device: torch.device) -> DataBundle:
    from .text_data import EVAL_BATCH, TokenLoader, text_streams
    check_available(cfg)
    train, val, vocab = text_streams(cfg.dataset, data_root(cfg), cfg.num_classes,
                                     cfg.val_fraction)
    tr = TokenLoader(train, cfg.batch_size, cfg.bptt, device)
    va = TokenLoader(val, EVAL_BATCH, cfg.bptt, device)
    # in_channels / image_size 1: the model's input is one token id per position
    return DataBundle(tr, va, vocab, 1, 1, tr.tokens, va.tokens, cfg.dataset)


def check_available(cfg: DataConfig) -> None:
    """Stop with DatasetMissing (the path looked at, the command that fetches it) before anything
    is trained or tracked; a dataset that downloads on demand (data.download) passes."""
    root = data_root(cfg)
    if cfg.dataset == "voc" and not cfg.download:
        from .segmentation_data import voc_missing, voc_missing_message
        if voc_missing(root):
            raise DatasetMissing(voc_missing_message(root))
    if cfg.dataset == "voc" and cfg.sbd and not cfg.download:
        from .segmentation_data import sbd_missing, sbd_missing_message
        if sbd_missing(root):
            raise DatasetMissing(sbd_missing_message(root))
    if cfg.dataset == "ptb":
        from .text_data import ptb_missing, ptb_missing_message
        if ptb_missing(root):
            raise DatasetMissing(ptb_missing_message(root))
    if cfg.dataset in CIFAR and not cfg.download:
        missing = _cifar_missing(cfg.dataset, root)
        if missing:
            spec = CIFAR[cfg.dataset]
            raise DatasetMissing(
                f"{spec['title']} not found: looked for {os.path.join(root, spec['folder'])} "
                f"(missing {', '.join(missing)}). Fetch it with `make data-{cfg.dataset}` (or set "
                f"DATA_DIR / data.root to where it lives).")
    elif cfg.dataset in IMAGE_FOLDERS and cfg.dataset != "imagenet_smoke":  # that one is generated
        check_image_folder(folder_root(cfg))


def build_data(cfg: DataConfig, device: torch.device | str = "cpu", seed: int = 0) -> DataBundle:
    """The dataset named by cfg as train/val batch streams on `device` (see module docstring)."""
    device = torch.device(device)
    if cfg.dataset in IMAGE_FOLDERS:
        return _imagefolder(cfg, device, seed)
    if cfg.dataset in TEXT_DATASETS:
        return _text(cfg, device)
    if cfg.dataset in SEGMENTATION_DATASETS:
        if cfg.dataset == "voc" and cfg.download:
            download("voc", data_root(cfg))
            if cfg.sbd:
                download("sbd", data_root(cfg))
        return _segmentation(cfg, device, seed)
    if cfg.dataset == "digits":
        xtr, ytr, xva, yva = _digits(cfg)
        num_classes, flip = 10, False  # a mirrored digit is a different (or no) digit
    elif cfg.dataset == "synthetic":
        xtr, ytr, xva, yva = _synthetic(cfg)
        num_classes, flip = cfg.num_classes or 4, True
    elif cfg.dataset in CIFAR:
        xtr, ytr, xva, yva = _cifar(cfg)
        num_classes, flip = CIFAR[cfg.dataset]["num_classes"], True
    else:
        raise ValueError(f"unknown dataset {cfg.dataset!r}; choose one of digits, cifar10, "
                         "cifar100, synthetic, imagefolder, imagenet, imagenet_smoke, ptb, "
                         "pydoc_text, voc, digit_scenes")

    if cfg.dataset in CIFAR:  # the standard constants, in uint8 pixel units
        mean = torch.tensor(CIFAR[cfg.dataset]["mean"]) * 255
        std = torch.tensor(CIFAR[cfg.dataset]["std"]) * 255
    else:  # train-set statistics per channel
        mean = xtr.float().mean(dim=(0, 2, 3))
        std = xtr.float().std(dim=(0, 2, 3))
    size = xtr.shape[-1]
    pad = max(1, size // 8) if cfg.augment else 0  # 4 for 32x32, 1 for 8x8 digits
    flip = flip and cfg.augment
    xtr, ytr, xva, yva = (t.to(device) for t in (xtr, ytr, xva, yva))
    shard = dict(rank=distributed.rank(), world=distributed.world_size())
    train = TensorLoader(xtr, ytr, mean, std, cfg.batch_size, shuffle=True, pad=pad, flip=flip,
                         seed=seed, **shard)
    val = TensorLoader(xva, yva, mean, std, cfg.eval_batch_size, **shard)
    return DataBundle(train, val, num_classes, xtr.shape[1], size, len(xtr), len(xva), cfg.dataset)
