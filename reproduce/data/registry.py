"""One registry of datasets, declared where each dataset is defined (as models/registry.py does
it for models).

    register_dataset("cifar10", task="classification", build=build_cifar, check=cifar_missing,
                     download=fetch_cifar, source="downloaded (make data-cifar10)",
                     defaults=DatasetDefaults(num_classes=10, mean=CIFAR10_MEAN, std=CIFAR10_STD))

    dataset("cifar10").task                 # "classification": tasks.task_class reads it
    available_datasets()                    # config choices, the CLI, error messages

A declaration says everything the rest of the suite asks of a dataset:
  task      the name of the task it trains (tasks.TASKS: classification, language_modelling,
            segmentation); the loop never guesses it from the dataset's name.
  build     build(cfg: DataConfig, device, seed) -> DataBundle, called once check passed.
  check     check(cfg) -> None when the data is there, else a message naming the path looked at
            and the command that fetches it (None: nothing to check, e.g. generated data).
  download  download(cfg) fetches what check misses (None: nothing downloads it).
  describe  describe(cfg) -> dict, a report of the data on disk (`python -m reproduce data check`).
  defaults  what 0 means in data.image_size and data.num_classes, and the normalisation.
  source    one line on where the data comes from (listings and error messages).
Downloads that are not datasets of their own (SBD, VOC's extra training images) register with
`register_download`.

This module imports nothing of the suite: config reads it at validation time (the dataset
choices, the image-size default), tasks reads the task, models read the normalisation, and
none of them thereby imports a dataset's code. Importing it loads reproduce.data (its package),
which registers the built-in families.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

# Normalisation constants (per RGB channel, of pixels in [0, 1]): the usual published ones.
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class DatasetMissing(FileNotFoundError):
    """The data is not on disk; the message names the path looked at and how to fetch it."""


@dataclass(frozen=True)
class DatasetDefaults:
    """What a dataset does unless the config says otherwise."""
    # the side data.image_size 0 stands for (0: the data's own, fixed size)
    image_size: int = 0
    # image folders: the resolved config states the side (so the tracked config shows it), the
    # model's input side when image_size_from_model, else image_size
    image_size_in_config: bool = False
    image_size_from_model: bool = False
    # what data.num_classes 0 stands for (classes, or a text dataset's vocabulary size);
    # 0: counted from the data (image folders' class folders, every word of a corpus)
    num_classes: int = 0
    # normalisation per channel of pixels in [0, 1]; None: the training set's own statistics
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None


@dataclass(frozen=True)
class Dataset:
    name: str
    task: str
    build: Callable[..., Any]
    check: Callable[[Any], str | None] | None = None
    download: Callable[[Any], None] | None = None
    describe: Callable[[Any], dict] | None = None
    defaults: DatasetDefaults = DatasetDefaults()
    source: str = ""


@dataclass(frozen=True)
class Download:
    """A download that is not a dataset of its own: fetch(root) fetches into root what is
    missing, folder(root) is where it lands."""
    name: str
    fetch: Callable[[str], None]
    folder: Callable[[str], str]


_DATASETS: dict[str, Dataset] = {}
_DOWNLOADS: dict[str, Download] = {}


def register_dataset(name: str, *, task: str, build: Callable[..., Any],
                     check: Callable[[Any], str | None] | None = None,
                     download: Callable[[Any], None] | None = None,
                     describe: Callable[[Any], dict] | None = None,
                     defaults: DatasetDefaults = DatasetDefaults(), source: str = "") -> Dataset:
    """Declare a dataset (see the module docstring); `data.dataset: <name>` then trains on it."""
    if name in _DATASETS:
        raise ValueError(f"dataset {name!r} is registered twice")
    if not name or not task:
        raise ValueError(f"a dataset needs a name and a task, got {name!r} and {task!r}")
    _DATASETS[name] = entry = Dataset(name, task, build, check, download, describe, defaults,
                                      source)
    return entry


def register_download(name: str, fetch: Callable[[str], None],
                      folder: Callable[[str], str] = lambda root: root) -> Download:
    """Declare a download that is not a dataset of its own (e.g. SBD, added to VOC's training)."""
    if name in _DOWNLOADS or name in _DATASETS:
        raise ValueError(f"download {name!r} is registered twice")
    _DOWNLOADS[name] = entry = Download(name, fetch, folder)
    return entry


def available_datasets() -> list[str]:
    """Every registered dataset, in the order of registration."""
    return list(_DATASETS)


def available_downloads() -> list[str]:
    """What `python -m reproduce data NAME` fetches: the datasets that download, then the
    downloads of their own."""
    return [d.name for d in _DATASETS.values() if d.download is not None] + list(_DOWNLOADS)


def dataset_exists(name: str) -> bool:
    return name in _DATASETS


def dataset(name: str) -> Dataset:
    """The declaration of a dataset; an unknown name stops with the known ones."""
    if name not in _DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(_DATASETS)}")
    return _DATASETS[name]


def own_download(name: str) -> Download | None:
    """The download of its own named `name` (None: there is none of that name)."""
    return _DOWNLOADS.get(name)


def not_downloadable(name: str) -> ValueError:
    """The error for a name nothing downloads: what can be downloaded, and how every other
    dataset is obtained."""
    names = available_downloads()
    listed = ", ".join(names[:-1]) + f" and {names[-1]}" if len(names) > 1 else "".join(names)
    others = "; ".join(f"{d.name}: {d.source}" for d in _DATASETS.values() if d.download is None)
    return ValueError(f"cannot download {name!r}: only {listed} are downloadable; the others are "
                      f"obtained as follows ({others})")
