"""One registry of model constructors, as timm's `create_model` does it.

    @register_model("resnet20", input_size=(3, 32, 32))
    def resnet20(**kwargs): return ResNetCIFAR(depths=(3, 3, 3), **kwargs)

    model = create_model("resnet20", num_classes=10)      # per-model defaults fill the rest
    default_cfg("resnet20").input_size                     # (3, 32, 32)

Families parametrised by name (`basic3resnet-2-4-3`, AutoGrow's notation) register a pattern.
Every constructor accepts the shared keyword arguments num_classes, in_channels,
width_multiplier, gate_channels and gate_blocks, plus its own (forwarded as given).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Callable

from ..data.registry import CIFAR10_MEAN as CIFAR_MEAN, CIFAR10_STD as CIFAR_STD
from ..data.registry import IMAGENET_MEAN, IMAGENET_STD
from ..method.structure import GatedModel


@dataclass(frozen=True)
class ModelDefaults:
    """What a model expects unless told otherwise (the resolved config states what was used)."""
    input_size: tuple[int, int, int] = (3, 32, 32)
    num_classes: int = 10
    mean: tuple[float, ...] = CIFAR_MEAN
    std: tuple[float, ...] = CIFAR_STD
    family: str = ""
    extra: dict = field(default_factory=dict)


@dataclass(frozen=True)
class _Entry:
    name: str
    builder: Callable[..., GatedModel]
    defaults: ModelDefaults


_MODELS: dict[str, _Entry] = {}
_PATTERNS: list[tuple[str, re.Pattern, Callable[..., Callable[..., GatedModel]], ModelDefaults]] = []
_CLASSES: dict[str, type] = {}       # class name -> class, to rebuild exported models


def register_model(name: str, **defaults) -> Callable:
    """Decorator: register `builder(**kwargs) -> GatedModel` under `name` with its defaults."""
    def wrap(builder: Callable[..., GatedModel]) -> Callable[..., GatedModel]:
        if name in _MODELS:
            raise ValueError(f"model {name!r} is registered twice")
        _MODELS[name] = _Entry(name, builder, ModelDefaults(**defaults))
        return builder
    return wrap


def register_pattern(label: str, pattern: str, **defaults) -> Callable:
    """Decorator: `make(*groups) -> builder` for every name matching `pattern`."""
    def wrap(make: Callable[..., Callable[..., GatedModel]]):
        _PATTERNS.append((label, re.compile(pattern), make, ModelDefaults(**defaults)))
        return make
    return wrap


def register_class(cls: type) -> type:
    """Class decorator: the class can be rebuilt from a compact checkpoint by its name."""
    _CLASSES[cls.__name__] = cls
    return cls


def model_class(name: str) -> type:
    if name not in _CLASSES:
        raise KeyError(f"no registered model class {name!r}; known: {', '.join(sorted(_CLASSES))}")
    return _CLASSES[name]


def _entry(name: str) -> _Entry | None:
    if name in _MODELS:
        return _MODELS[name]
    for _, pattern, make, defaults in _PATTERNS:
        m = pattern.match(name)
        if m and all(int(d) >= 1 for d in m.groups()):
            return _Entry(name, make(*m.groups()), defaults)
    return None


def available_models() -> list[str]:
    return sorted(_MODELS) + [label for label, *_ in _PATTERNS]


def model_exists(name: str) -> bool:
    return _entry(name) is not None


def default_cfg(name: str) -> ModelDefaults:
    entry = _entry(name)
    if entry is None:
        raise KeyError(f"unknown model {name!r}; choose one of {', '.join(available_models())}")
    return entry.defaults


def create_model(name: str, **kwargs) -> GatedModel:
    """Build a registered model; num_classes and in_channels default to the model's own."""
    entry = _entry(name)
    if entry is None:
        raise KeyError(f"unknown model {name!r}; choose one of {', '.join(available_models())}")
    kwargs.setdefault("num_classes", entry.defaults.num_classes)
    kwargs.setdefault("in_channels", entry.defaults.input_size[0])
    return entry.builder(**kwargs)


def with_input(defaults: ModelDefaults, channels: int, size: int) -> ModelDefaults:
    return replace(defaults, input_size=(channels, size, size))
