"""Checkpoints: a run's whole training state while it trains, and its compact model after.

`RunCheckpoints` saves a TrainState (plus the runner's per-structure traces) after every epoch
and every `train.checkpoint_minutes` within an epoch, atomically: the state is written to a
temporary file in the same folder and renamed over the previous checkpoint, so a kill at any
moment leaves the last complete checkpoint loadable. `SharedPretraining` holds the pre-trained
network that pruning runs differing only in their target share. `compact_checkpoint` is the
exported model.
"""

from __future__ import annotations

import os
import tempfile
import time
import warnings
from pathlib import Path

import torch
from torch import nn

from .method.export import hard_architecture
from .method.structure import GatedModel
from .models.registry import model_class
from .train import Checkpoints, TrainState


class RunCheckpoints(Checkpoints):
    """The checkpoint file of one tracked run (`<folder>/<run id>.pt`)."""

    def __init__(self, folder: Path, run_id: str, every_minutes: float = 0.0,
                 extra: dict | None = None):
        self.path = Path(folder) / f"{run_id}.pt"
        self.every_s = 60.0 * every_minutes
        self.extra = extra if extra is not None else {}     # saved alongside (e.g. traces)
        self.last = time.monotonic()

    def due(self) -> bool:
        return self.every_s > 0 and time.monotonic() - self.last >= self.every_s

    def save(self, state: TrainState, position: dict | None = None) -> None:
        payload = {"train": {**state.state_dict(), "position": position}, "extra": self.extra,
                   "saved_at": time.time()}
        atomic_save(payload, self.path)
        self.last = time.monotonic()

    def load(self) -> dict | None:
        """The last checkpoint, or None when there is none."""
        if not self.path.exists():
            return None
        return torch.load(self.path, map_location="cpu", weights_only=False)

    def delete(self) -> None:
        self.path.unlink(missing_ok=True)


class SharedPretraining:
    """The pre-trained network of pruning runs that differ only in `baseline.prune_target`
    (baselines.py), in `<folder>/<key>.pt` while the runs that share it train.

    The runner holds `lock()` from before a run's training until its pre-training is saved (or
    the run ends), so one process pre-trains while another trains something else (`busy()`)
    or waits. `load()` tells `on_load` which run pre-trained the state it returns; the file goes
    (`delete()`) once every run sharing it has finished.
    """

    FORMAT = 1

    def __init__(self, folder: Path, key: str, run_id: str, on_load=None):
        self.path = Path(folder) / f"{key}.pt"
        self.run_id, self.on_load = run_id, on_load
        from filelock import FileLock
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = FileLock(str(self.path.with_suffix(".lock")))

    def busy(self) -> bool:
        """Another process is pre-training (or about to) what this key names."""
        from filelock import Timeout
        try:
            self._lock.acquire(timeout=0)
        except Timeout:
            return True
        self._lock.release()
        return False

    def lock(self) -> None:
        self._lock.acquire()

    def release(self) -> None:
        if self._lock.is_locked:
            self._lock.release(force=True)

    def load(self) -> dict | None:
        if not self.path.exists():
            return None
        payload = torch.load(self.path, map_location="cpu", weights_only=False)
        if payload.get("format") != self.FORMAT:
            return None                           # written by another version: pre-train again
        if self.on_load is not None:
            self.on_load(payload["source_run"])
        self.release()                            # nothing to pre-train: others may load too
        return payload["train"]

    def save(self, state: dict) -> None:
        atomic_save({"format": self.FORMAT, "train": state, "source_run": self.run_id,
                     "saved_at": time.time()}, self.path)
        self.release()                            # the others can fine-tune from it now

    def delete(self) -> None:
        self.path.unlink(missing_ok=True)


def atomic_save(payload: dict, path: Path) -> None:
    """torch.save to a temporary file beside `path`, renamed over it: old or new, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)                      # atomic on POSIX
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def compact_checkpoint(gated: GatedModel, compact: nn.Module) -> dict:
    """What rebuilds an exported model: its class, arguments, widths, removed blocks, weights."""
    keep, removed = hard_architecture(gated)
    return {"class": type(compact).__name__, "arch": gated.arch,
            "sizes": {n: len(i) for n, i in keep.items()}, "removed": sorted(removed),
            "state_dict": compact.state_dict()}


def load_compact(checkpoint: dict | str) -> nn.Module:
    """The exported model from `compact_checkpoint` (a dict or a path to a torch.save of it)."""
    if not isinstance(checkpoint, dict):
        checkpoint = torch.load(checkpoint, map_location="cpu", weights_only=False)
    cls = model_class(checkpoint["class"])
    with warnings.catch_warnings():     # zero-width layers: "initializing zero-element tensors"
        warnings.simplefilter("ignore", UserWarning)
        model = cls(**checkpoint["arch"], gate_channels=False, gate_blocks=False,
                    sizes=checkpoint["sizes"], removed=set(checkpoint["removed"]))
    model.load_state_dict(checkpoint["state_dict"])
    return model.eval()
