"""Every model is built by name: `create_model("resnet20", num_classes=10, in_channels=3)`.

Experiment files say `model: {name: resnet20}` and nothing more. Basic3ResNet takes any depth per
stage in its name, e.g. `basic3resnet-2-4-3` (AutoGrow's notation; ResNet-20 = basic3resnet-3-3-3).
"""

from __future__ import annotations

import re
from typing import Callable

from torch import nn

from .resnet_cifar import ResNetCIFAR
from .vgg_cifar import CONFIGS as VGG_CONFIGS, VGGCIFAR

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}
_PATTERNS: list[tuple[str, re.Pattern, Callable[..., Callable[..., nn.Module]]]] = []


def register(name: str, builder: Callable[..., nn.Module]) -> None:
    _REGISTRY[name] = builder


for _n in (3, 5, 7, 9, 18):
    register(f"resnet{6 * _n + 2}", lambda n=_n, **kw: ResNetCIFAR(depths=(n, n, n), **kw))
for _name, _stages in VGG_CONFIGS.items():
    register(_name, lambda s=_stages, **kw: VGGCIFAR(stages=s, **kw))

_PATTERNS.append(("basic3resnet-A-B-C", re.compile(r"basic3resnet-(\d+)-(\d+)-(\d+)$"),
                  lambda *d: (lambda **kw: ResNetCIFAR(depths=tuple(map(int, d)), **kw))))


def _builder(name: str) -> Callable[..., nn.Module] | None:
    if name in _REGISTRY:
        return _REGISTRY[name]
    for _, pattern, make in _PATTERNS:
        m = pattern.match(name)
        if m and all(int(d) >= 1 for d in m.groups()):
            return make(*m.groups())
    return None


def available_models() -> list[str]:
    return sorted(_REGISTRY) + [p for p, _, _ in _PATTERNS]


def model_exists(name: str) -> bool:
    return _builder(name) is not None


def create_model(name: str, *, num_classes: int = 10, in_channels: int = 3,
                 width_multiplier: float = 1.0, gate_channels: bool = True,
                 gate_blocks: bool = False) -> nn.Module:
    builder = _builder(name)
    if builder is None:
        raise KeyError(f"unknown model {name!r}; choose one of {', '.join(available_models())}")
    return builder(num_classes=num_classes, in_channels=in_channels,
                   width_multiplier=width_multiplier, gate_channels=gate_channels,
                   gate_blocks=gate_blocks)


_CLASSES = {"ResNetCIFAR": ResNetCIFAR, "VGGCIFAR": VGGCIFAR}


def compact_checkpoint(gated: nn.Module, compact: nn.Module) -> dict:
    """What rebuilds an exported model without the gated one: class, arguments and weights."""
    from ..method.export import hard_architecture

    keep, removed = hard_architecture(gated)
    return {"class": type(compact).__name__, "arch": gated.arch,
            "sizes": {n: len(i) for n, i in keep.items()}, "removed": sorted(removed),
            "state_dict": compact.state_dict()}


def load_compact(checkpoint: dict | str) -> nn.Module:
    """The exported model from `compact_checkpoint` (a dict or a path to a torch.save of it)."""
    import torch

    if not isinstance(checkpoint, dict):
        checkpoint = torch.load(checkpoint, map_location="cpu", weights_only=False)
    import warnings

    cls = _CLASSES[checkpoint["class"]]
    with warnings.catch_warnings():     # zero-width layers: "initializing zero-element tensors"
        warnings.simplefilter("ignore", UserWarning)
        model = cls(**checkpoint["arch"], gate_channels=False, sizes=checkpoint["sizes"],
                    removed=set(checkpoint["removed"]))
    model.load_state_dict(checkpoint["state_dict"])
    return model.eval()
