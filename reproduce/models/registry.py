"""One registry of model constructors, as timm's `create_model` does it.

    @register_model("resnet20", input_size=(3, 32, 32))
    def resnet20(**kwargs) -> ResNetCIFAR:
        return ResNetCIFAR(depths=(3, 3, 3), **kwargs)

    model = create_model("resnet20", num_classes=10)      # per-model defaults fill the rest
    default_cfg("resnet20").input_size                     # (3, 32, 32)

Families parametrised by name (`basic3resnet-2-4-3`, AutoGrow's notation) register a pattern
whose builder takes the name's groups first. A builder's return annotation is the class it
builds: the registry keeps it, so that a compact checkpoint, which names its class, rebuilds
its model (`model_class`), and so that tests can take one name per class (`builds`).
Every constructor accepts the shared keyword arguments num_classes, in_channels,
width_multiplier, gate_channels and gate_blocks, plus its own (forwarded as given).
"""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass
from functools import partial
from typing import Callable

from ..data.registry import CIFAR10_MEAN as CIFAR_MEAN, CIFAR10_STD as CIFAR_STD
from ..data.registry import IMAGENET_MEAN, IMAGENET_STD
from ..method.structure import GatedModel


@dataclass(frozen=True)
class ModelDefaults:
    """What a model expects unless told otherwise (the resolved config states what was used)."""
    input_size: tuple[int, int, int] = (3, 32, 32)   # channels, height, width
    num_classes: int = 10
    # the smallest input side it is meant for (tests build every model there): 8 px for the
    # CIFAR-sized networks (the embedded digits), 32 px for the ImageNet ones (their last stage
    # at 1×1); a language model's input is tokens
    min_size: int = 8


@dataclass(frozen=True)
class _Entry:
    name: str
    builder: Callable[..., GatedModel]
    defaults: ModelDefaults
    cls: type


@dataclass(frozen=True)
class _Pattern:
    label: str
    pattern: re.Pattern
    builder: Callable[..., GatedModel]
    defaults: ModelDefaults
    cls: type
    example: str


_MODELS: dict[str, _Entry] = {}
_PATTERNS: list[_Pattern] = []
_CLASSES: dict[str, type] = {}       # class name -> class, to rebuild exported models


def _built_class(builder: Callable) -> type:
    """The class `builder` returns (its return annotation), known from then on by its name."""
    cls = inspect.get_annotations(builder, eval_str=True).get("return")
    if not (isinstance(cls, type) and issubclass(cls, GatedModel)):
        raise TypeError(f"model builder {builder.__qualname__}: annotate its return type with the "
                        f"GatedModel class it builds (got {cls!r})")
    if _CLASSES.setdefault(cls.__name__, cls) is not cls:
        raise ValueError(f"two model classes are named {cls.__name__!r}")
    return cls


def register_model(name: str, **defaults) -> Callable:
    """Decorator: register `builder(**kwargs) -> Class` under `name` with its defaults."""
    def wrap(builder: Callable[..., GatedModel]) -> Callable[..., GatedModel]:
        if name in _MODELS:
            raise ValueError(f"model {name!r} is registered twice")
        _MODELS[name] = _Entry(name, builder, ModelDefaults(**defaults), _built_class(builder))
        return builder
    return wrap


def register_pattern(label: str, pattern: str, example: str, **defaults) -> Callable:
    """Decorator: `builder(*groups, **kwargs) -> Class` for every name matching `pattern`;
    `example` is one such name."""
    def wrap(builder: Callable[..., GatedModel]) -> Callable[..., GatedModel]:
        regex = re.compile(pattern)
        if not regex.match(example):
            raise ValueError(f"model pattern {label!r}: its example {example!r} does not match")
        _PATTERNS.append(_Pattern(label, regex, builder, ModelDefaults(**defaults),
                                  _built_class(builder), example))
        return builder
    return wrap


def model_class(name: str) -> type:
    """A model class by its name (what a compact checkpoint records)."""
    if name not in _CLASSES:
        raise KeyError(f"no registered model class {name!r}; known: {', '.join(sorted(_CLASSES))}")
    return _CLASSES[name]


def _entry(name: str) -> _Entry | None:
    if name in _MODELS:
        return _MODELS[name]
    for p in _PATTERNS:
        m = p.pattern.match(name)
        if m and all(int(d) >= 1 for d in m.groups()):
            return _Entry(name, partial(p.builder, *m.groups()), p.defaults, p.cls)
    return None


def _known(name: str) -> _Entry:
    entry = _entry(name)
    if entry is None:
        raise KeyError(f"unknown model {name!r}; choose one of {', '.join(available_models())}")
    return entry


def available_models() -> list[str]:
    """Every registered name, and every pattern by its label (`basic3resnet-A-B-C`)."""
    return sorted(_MODELS) + [p.label for p in _PATTERNS]


def example_models() -> list[str]:
    """A name `create_model` accepts for every registration: the registered names, in the
    order they were registered, then every pattern's example."""
    return list(_MODELS) + [p.example for p in _PATTERNS]


def model_exists(name: str) -> bool:
    return _entry(name) is not None


def default_cfg(name: str) -> ModelDefaults:
    return _known(name).defaults


def builds(name: str) -> type:
    """The class `create_model(name)` returns."""
    return _known(name).cls


def create_model(name: str, **kwargs) -> GatedModel:
    """Build a registered model; num_classes and in_channels default to the model's own."""
    entry = _known(name)
    kwargs.setdefault("num_classes", entry.defaults.num_classes)
    kwargs.setdefault("in_channels", entry.defaults.input_size[0])
    return entry.builder(**kwargs)
