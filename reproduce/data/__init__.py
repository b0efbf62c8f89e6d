"""Datasets by name, as re-iterable streams of batches already on the training device.

    data = build_data(cfg.data, device, seed=cfg.seed)   # DataBundle: train, val, num_classes, ...
    for x, y in data.train: ...                           # one epoch, reshuffled from (seed, epoch)

Every dataset is declared once, next to its reader, with `register_dataset` (registry.py: its
task, its check, its download, its builder, its defaults). One file per family registers its
datasets when this package is imported:

  tensor.py        digits, synthetic, cifar10, cifar100: whole on the device (loaders.py)
  imagefolder.py   imagefolder, imagenet, imagenet_smoke: torchvision ImageFolder trees
  text.py          ptb, pydoc_text: word-level corpora for language modelling
  segmentation.py  voc, digit_scenes: per-pixel labels (and the SBD download)

A dataset of one's own is one file that calls `register_dataset` (a tensor dataset builds its
streams with `tensor.tensor_bundle`), imported before the config is resolved; the config's
choices, `python -m reproduce data`, the task and every message naming datasets follow it.
"""

from __future__ import annotations

import torch

from ..config import DataConfig
# importing the families registers their datasets, in this order (that of available_datasets())
from . import tensor, imagefolder, text, segmentation  # noqa: F401, I001
from .loaders import DataBundle, DeviceLoader, TensorLoader, num_batches
from .registry import (Dataset, DatasetDefaults, DatasetMissing, available_datasets,
                       available_downloads, dataset, dataset_exists, not_downloadable,
                       own_download, register_dataset, register_download)

__all__ = ["DataBundle", "Dataset", "DatasetDefaults", "DatasetMissing", "DeviceLoader",
           "TensorLoader", "available_datasets", "available_downloads", "build_data",
           "check_available", "dataset", "dataset_exists", "download", "missing", "num_batches",
           "register_dataset", "register_download"]


def missing(cfg: DataConfig) -> str | None:
    """What of cfg's dataset is not on disk (the path looked at and the command that fetches it),
    or None when nothing is."""
    spec = dataset(cfg.dataset)
    return spec.check(cfg) if spec.check is not None else None


def check_available(cfg: DataConfig) -> None:
    """Stop with DatasetMissing (the path looked at, the command that fetches it) before anything
    is trained or tracked; a dataset that downloads on demand (data.download) passes."""
    if cfg.download and dataset(cfg.dataset).download is not None:
        return
    message = missing(cfg)
    if message:
        raise DatasetMissing(message)


def build_data(cfg: DataConfig, device: torch.device | str = "cpu", seed: int = 0) -> DataBundle:
    """The dataset named by cfg as train/val batch streams on `device`; with data.download, what
    is missing is fetched first."""
    spec = dataset(cfg.dataset)
    if cfg.download and spec.download is not None and missing(cfg):
        spec.download(cfg)
    message = missing(cfg)
    if message:
        raise DatasetMissing(message)
    return spec.build(cfg, torch.device(device), seed)


def download(name: str, root: str) -> str:
    """Fetch a dataset (or a download of its own, e.g. SBD) into root; returns where it is."""
    extra = own_download(name)
    if extra is not None:
        extra.fetch(root)
        return extra.folder(root)
    if not dataset_exists(name) or dataset(name).download is None:
        raise not_downloadable(name)
    dataset(name).download(DataConfig(dataset=name, root=root))
    return root
