"""Image classification datasets that live whole on the device as tensors.

  digits     scikit-learn's bundled handwritten digits (8×8, 10 classes, no download); a fixed
             stratified split holds out data.val_fraction. data.image_size resamples them
             (bilinear) to another side, e.g. 32, CIFAR's: to time runs at the paper's input size
             (at 8×8 a CPU step is mostly per-op overhead; bench/README.md).
  synthetic  generated: one smooth template per class plus pixel noise (data.image_size 8,
             data.num_classes 4 unless set); for tests and timing.
  cifar10,   the python-format batches of CIFAR-10/100 (`make data-cifar10`, `make data-cifar100`),
  cifar100   normalised with the usual published constants.

Each reader returns raw train/val tensors (uint8 pixels, or float for synthetic); `tensor_bundle`
turns them into device-resident streams, normalised and augmented (random crop with padding 1/8
of the side, horizontal flip where a mirrored image is the same class) on the device. Data
splits (digits) and the synthetic data use a fixed seed, so changing the run seed never changes
which data a run sees.
"""

from __future__ import annotations

import os
import pickle

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .. import distributed
from ..config import DataConfig, data_root
from .loaders import DataBundle, TensorLoader
from .registry import (CIFAR10_MEAN, CIFAR10_STD, CIFAR100_MEAN, CIFAR100_STD, DatasetDefaults,
                       register_dataset)

SPLIT_SEED = 0          # digits split and synthetic data: the same for every run seed
SYNTHETIC_NOISE = 1.0   # per-pixel noise std; templates have unit std, so classes overlap little

CIFAR = {
    "cifar10": dict(title="CIFAR-10", folder="cifar-10-batches-py", label_key="labels",
                    train=[f"data_batch_{i}" for i in range(1, 6)], test=["test_batch"],
                    num_classes=10, mean=CIFAR10_MEAN, std=CIFAR10_STD),
    "cifar100": dict(title="CIFAR-100", folder="cifar-100-python", label_key="fine_labels",
                     train=["train"], test=["test"],
                     num_classes=100, mean=CIFAR100_MEAN, std=CIFAR100_STD),
}

Tensors = tuple[Tensor, Tensor, Tensor, Tensor]     # train images, labels, val images, labels


def tensor_bundle(cfg: DataConfig, device: torch.device, seed: int, tensors: Tensors,
                  num_classes: int, flip: bool, mean: tuple[float, ...] | None = None,
                  std: tuple[float, ...] | None = None) -> DataBundle:
    """Device-resident streams over raw (N, C, H, W) images. Normalised with mean/std (of pixels
    in [0, 1], applied to uint8 pixel units) or else the training set's own statistics per
    channel; with data.augment, random crops padded by 1/8 of the side (at least 1 px) and, if
    `flip`, horizontal flips. Sharded over distributed ranks."""
    xtr, ytr, xva, yva = tensors
    if mean is not None:  # the standard constants, in uint8 pixel units
        mean_t, std_t = torch.tensor(mean) * 255, torch.tensor(std) * 255
    else:  # train-set statistics per channel
        mean_t, std_t = xtr.float().mean(dim=(0, 2, 3)), xtr.float().std(dim=(0, 2, 3))
    size = xtr.shape[-1]
    pad = max(1, size // 8) if cfg.augment else 0  # 4 for 32x32, 1 for 8x8 digits
    flip = flip and cfg.augment
    xtr, ytr, xva, yva = (t.to(device) for t in (xtr, ytr, xva, yva))
    shard = dict(rank=distributed.rank(), world=distributed.world_size())
    train = TensorLoader(xtr, ytr, mean_t, std_t, cfg.batch_size, shuffle=True, pad=pad,
                         flip=flip, seed=seed, **shard)
    val = TensorLoader(xva, yva, mean_t, std_t, cfg.eval_batch_size, **shard)
    return DataBundle(train, val, num_classes, xtr.shape[1], size, len(xtr), len(xva), cfg.dataset)


# -- digits ------------------------------------------------------------------------------------

def digits_split(val_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Stratified train/val indices into sklearn's digits, fixed across run seeds."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    y = load_digits().target
    return train_test_split(np.arange(len(y)), test_size=val_fraction, stratify=y,
                            random_state=SPLIT_SEED)


def _digits(cfg: DataConfig) -> Tensors:
    from sklearn.datasets import load_digits
    d = load_digits()
    x = torch.from_numpy(d.images.astype(np.uint8)).unsqueeze(1)  # (1797, 1, 8, 8), values 0..16
    y = torch.from_numpy(d.target).long()
    tr, va = (torch.from_numpy(i) for i in digits_split(cfg.val_fraction))
    if cfg.image_size and cfg.image_size != x.shape[-1]:
        x = F.interpolate(x.float(), size=(cfg.image_size, cfg.image_size), mode="bilinear",
                          align_corners=False)
    return x[tr], y[tr], x[va], y[va]


def build_digits(cfg: DataConfig, device: torch.device, seed: int) -> DataBundle:
    # no flip: a mirrored digit is a different (or no) digit
    return tensor_bundle(cfg, device, seed, _digits(cfg), 10, flip=False)


# -- synthetic ---------------------------------------------------------------------------------

SYNTHETIC = DatasetDefaults(image_size=8, num_classes=4)


def _synthetic(cfg: DataConfig) -> Tensors:
    size, k = cfg.image_size or SYNTHETIC.image_size, cfg.num_classes or SYNTHETIC.num_classes
    gen = torch.Generator().manual_seed(SPLIT_SEED)
    # Smooth templates (upsampled 4x4 noise): a class stays recognisable under small crops.
    templates = F.interpolate(torch.randn(k, 3, 4, 4, generator=gen), size=(size, size),
                              mode="bilinear", align_corners=False)
    templates /= templates.std(dim=(1, 2, 3), keepdim=True)
    n_tr, n = cfg.synthetic_train, cfg.synthetic_train + cfg.synthetic_val
    y = torch.randperm(n, generator=gen) % k  # balanced classes
    x = templates[y] + SYNTHETIC_NOISE * torch.randn(n, 3, size, size, generator=gen)
    return x[:n_tr], y[:n_tr], x[n_tr:], y[n_tr:]


def build_synthetic(cfg: DataConfig, device: torch.device, seed: int) -> DataBundle:
    return tensor_bundle(cfg, device, seed, _synthetic(cfg),
                         cfg.num_classes or SYNTHETIC.num_classes, flip=True)


# -- CIFAR-10/100 ------------------------------------------------------------------------------

def cifar_missing(dataset: str, root: str) -> list[str]:
    spec = CIFAR[dataset]
    folder = os.path.join(root, spec["folder"])
    return [f for f in spec["train"] + spec["test"] if not os.path.isfile(os.path.join(folder, f))]


def check_cifar(cfg: DataConfig) -> str | None:
    root = data_root(cfg)
    missing = cifar_missing(cfg.dataset, root)
    if not missing:
        return None
    spec = CIFAR[cfg.dataset]
    return (f"{spec['title']} not found: looked for {os.path.join(root, spec['folder'])} "
            f"(missing {', '.join(missing)}). Fetch it with `make data-{cfg.dataset}` (or set "
            f"DATA_DIR / data.root to where it lives).")


def download_cifar(cfg: DataConfig) -> None:
    """Fetch CIFAR-10/100 into the data root with torchvision's downloader."""
    from torchvision.datasets import CIFAR10, CIFAR100
    from torchvision.datasets.utils import download_and_extract_archive
    cls = CIFAR10 if cfg.dataset == "cifar10" else CIFAR100
    root = data_root(cfg)
    os.makedirs(root, exist_ok=True)
    download_and_extract_archive(cls.url, root, filename=cls.filename, md5=cls.tgz_md5)


def _cifar(cfg: DataConfig) -> Tensors:
    spec = CIFAR[cfg.dataset]
    folder = os.path.join(data_root(cfg), spec["folder"])

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


def build_cifar(cfg: DataConfig, device: torch.device, seed: int) -> DataBundle:
    spec = CIFAR[cfg.dataset]
    return tensor_bundle(cfg, device, seed, _cifar(cfg), spec["num_classes"], flip=True,
                         mean=spec["mean"], std=spec["std"])


register_dataset("digits", task="classification", build=build_digits,
                 defaults=DatasetDefaults(num_classes=10),
                 source="scikit-learn's bundled handwritten digits (no download)")
for _name, _spec in CIFAR.items():
    register_dataset(_name, task="classification", build=build_cifar, check=check_cifar,
                     download=download_cifar,
                     defaults=DatasetDefaults(num_classes=_spec["num_classes"], mean=_spec["mean"],
                                              std=_spec["std"]),
                     source=f"downloaded into DATA_DIR/{_spec['folder']} (make data-{_name})")
register_dataset("synthetic", task="classification", build=build_synthetic, defaults=SYNTHETIC,
                 source="generated (class templates plus noise)")
