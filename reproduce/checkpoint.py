"""Compact checkpoints: an exported model saved so that it rebuilds without the gated one."""

from __future__ import annotations

import warnings

import torch
from torch import nn

from .method.export import hard_architecture
from .method.structure import GatedModel
from .models.registry import model_class


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
