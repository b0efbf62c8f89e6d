"""Batch streams that are already on the training device, shared by every dataset family.

Small datasets (digits, CIFAR, synthetic) live whole on the device as tensors, as in KellerJordan's
airbench: no DataLoader, no per-sample Python, augmentation runs batched on the device
(`TensorLoader`). That keeps CPU smoke runs and GPU CIFAR runs from being input-bound. Image
folders and VOC go through torchvision's DataLoader (`DeviceLoader`).

Reproducibility: a train stream's epoch e is shuffled and augmented from (seed, e) alone, drawn on
the CPU, so the same seed gives the same batches on every device.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor


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


def device_loader(ds, batch_size: int, device: torch.device, *, train: bool, seed: int,
                  num_workers: int, sampler=None) -> DeviceLoader:
    """A DataLoader over ds whose batches land on `device`. A training stream is shuffled from
    `seed` (or ordered by `sampler`) and drops a last batch under half a batch (num_batches)."""
    n = len(ds) if sampler is None else len(sampler)
    drop = train and num_batches(n, batch_size, drop_small=True) < -(-n // batch_size)
    return DeviceLoader(torch.utils.data.DataLoader(
        ds, batch_size=batch_size, shuffle=train and sampler is None, sampler=sampler,
        drop_last=drop, num_workers=num_workers, pin_memory=device.type == "cuda",
        persistent_workers=num_workers > 0,
        # seeds the shuffle and the workers' augmentation RNG; with num_workers=0 the
        # augmentation uses torch's global RNG (seeded by the trainer)
        generator=torch.Generator().manual_seed(seed) if train else None), device)
