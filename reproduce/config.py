"""The experiment schema: every knob of a run, its default, and why.

A run is fully described by one `RunConfig`. Experiment files (experiments/*.yaml) only override
fields of it; the resolved config is what gets hashed, tracked and shown to the user, so nothing
that changes a result hides in code. Unknown keys and invalid values stop with a message naming
the key, the file and the accepted values.

Defaults marked [ours] are this suite's choices where the paper's value is unknown (see
docs/METHOD.md). The method's knobs are declared once, in reproduce/method/options.py: the
`gates`, `temperature` and `budget` sections are the method's own (frozen) option dataclasses,
plus the few gate fields only a run has. This schema adds what belongs to a run (data, model,
schedule, baselines).

Every field says in its metadata what it accepts (`choices`, `check`) and how it counts for a
run's identity (`identity`, `added_later`, `read_by`, `others_at`, `read_with`; method/options.py explains
them); every section checks its fields when it is built, and `config_hash` reads the rest.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any, get_args, get_origin, get_type_hints

from .errors import ConfigError
from .method import options as M
from .method.options import (at_least, check_fields, choice, choices_of, fraction,  # noqa: F401
                             positive, rule)


def _datasets() -> list[str]:
    # the data registry imports this module's DataConfig; it is read at validation time
    from .data.registry import available_datasets
    return available_datasets()


@dataclass
class DataConfig:
    # any registered dataset: `python -m reproduce data list` (reproduce/data/registry.py)
    dataset: str = field(default="digits", metadata={"choices": _datasets})
    # "" means $DATA_DIR (else ./data); imagenet: $DATA_DIR/imagenet, imagenet_smoke (ImageNet-style
    # digits, generated on first use): $DATA_DIR/imagenet-smoke
    root: str = field(default="", metadata={"identity": False})
    # fetch CIFAR / VOC when missing (make data-cifar10 sets it)
    download: bool = field(default=False, metadata={"identity": False})
    batch_size: int = field(default=128, metadata=at_least(1))
    eval_batch_size: int = field(default=512, metadata=at_least(1, identity=False))
    augment: bool = True            # random crop + horizontal flip (CIFAR); ±1 px shifts, no flip (digits)
    # image folders: smallest share of the image's area a RandomResizedCrop keeps (torchvision's
    # and the reference recipe's 0.08); imagenet_smoke's profile keeps 0.5 (smaller crops cut
    # the glyph)
    crop_scale: float = field(default=0.08, metadata=fraction(added_later=0.08))
    # image folders: random horizontal flips in training (the reference recipe's); digits are not
    # mirror-symmetric, so imagenet_smoke's profile turns them off
    hflip: bool = field(default=True, metadata={"added_later": True})
    # digits, pydoc_text: held-out share of the data
    val_fraction: float = field(default=0.2, metadata=rule(lambda v: 0.0 < v < 1.0, "in (0, 1)"))
    # image folders only; tensor datasets live on the device
    num_workers: int = field(default=0, metadata={"identity": False})
    # synthetic, digit_scenes: generated training and validation images
    synthetic_train: int = field(default=512, metadata=at_least(1))
    synthetic_val: int = field(default=128, metadata=at_least(1))
    # synthetic, image folders, digit_scenes, voc (crop and evaluation size), digits (resampled
    # to this side); 0 = the dataset's own (image folders: the model's input size,
    # imagenet_smoke 64, digit_scenes 32, voc 512, digits 8), filled in for image folders when
    # the config is resolved so the tracked config states it
    image_size: int = field(default=0, metadata=at_least(0))
    # voc training: the random resize draws the image's shorter side from [0.5, 2.0] × base_size
    # before the crop of image_size (torchvision's segmentation reference: 520, crop 480);
    # 0 = image_size
    base_size: int = field(default=0, metadata=at_least(0, added_later=0))
    # voc: train on "train_aug", VOC 2012 train + SBD's train and val (Hariharan et al. 2011,
    # DATA_DIR/sbd, `make data-sbd`) without the VOC 2012 val images, each image once: 10,582
    sbd: bool = field(default=False, metadata={"added_later": False})
    # synthetic/image folders: classes; ptb/pydoc_text: vocabulary size (the most frequent words,
    # + <unk>, <eos>); 0 = the dataset's own (ptb: its 10k words, pydoc_text: 2000)
    num_classes: int = 0
    # ptb/pydoc_text: truncated-BPTT window in tokens [Zaremba 2014]
    bptt: int = field(default=35, metadata=at_least(1))

    def __post_init__(self):
        check_fields(self, "data")
        if self.sbd and self.dataset != "voc":
            raise ConfigError(f"data.sbd = true: SBD adds training images to PASCAL VOC, but "
                              f"data.dataset is {self.dataset!r}; set data.dataset: voc or "
                              f"data.sbd: false")


@dataclass
class ModelConfig:
    name: str = "resnet20"          # see `python -m reproduce list models`
    # uniform width scaling of every gated layer
    width_multiplier: float = field(default=1.0, metadata=positive())
    gate_channels: bool = True      # channel gates on every prunable conv output
    gate_blocks: bool = False       # block gates on residual blocks (layer growing)
    # ResNet-50: the last BN of every residual branch starts at weight 0, so every block starts as
    # the identity (torchvision's zero_init_residual, Goyal et al. 2017); off in torchvision's
    # reference recipe and in every profile here (docs/METHOD.md, the ImageNet-style smoke tree)
    zero_init_residual: bool = field(default=False, metadata={"added_later": False})

    def __post_init__(self):
        check_fields(self, "model")


@dataclass(frozen=True)
class GateConfig(M.GateOptions):
    """The method's gate options (method/options.py), and how a run trains the gates' logits."""
    # mask logits: own SGD, no weight decay, same LR schedule
    mask_lr: float = field(default=0.1, metadata=at_least(0))
    mask_momentum: float = 0.9
    # Batches of training data run forward (train mode, hard gates, no gradient) before each
    # evaluation to re-estimate BN statistics for the hard architecture; 0 = off. Running stats
    # gathered under sampled gates do not match the hard net that is evaluated. Counted in the
    # training cost (forward MACs only) [ours]
    bn_recalibrate: int = field(default=4, metadata=at_least(0))


@dataclass
class BaselineConfig:
    """Pruning baselines: train dense, prune once, fine-tune (all epochs count as training cost)."""
    criterion: str = field(default="l1_norm", metadata=choice("l1_norm", "slimming"))
    # dense training before pruning
    pretrain_epochs: int = field(default=30, metadata=at_least(0))
    # after pruning (the main train.epochs is not used)
    finetune_epochs: int = field(default=10, metadata=at_least(1))
    # fine-tuning LR, same schedule shape as train.lr_schedule
    finetune_lr: float = field(default=0.01, metadata=positive())
    # keep this fraction of the dense model's MACs
    prune_target: float = field(default=0.5, metadata=fraction())
    # network slimming: L1 on BN scales during pre-training
    slimming_l1: float = field(default=1e-4, metadata=at_least(0))
    scope: str = field(default="auto", metadata=choice("auto", "inner", "all"))  # auto: inner for ResNets
    # runs of one experiment that differ only in prune_target pre-train one dense network and
    # each prune and fine-tune it (the practice of Li et al. and Liu et al.); every run still
    # logs and counts the pre-training. Not part of a run's identity: on CPU the pruned runs'
    # numbers are the same either way (tests/test_baselines.py)
    share_pretraining: bool = field(default=True, metadata={"identity": False})

    def __post_init__(self):
        check_fields(self, "baseline")


@dataclass
class AutoGrowConfig:
    """The AutoGrow-style baseline (method: autogrow; reproduce/autogrow.py): depth grown on a
    fixed schedule (Wen et al. 2020's periodic policy) until validation accuracy stops improving,
    then `train.epochs` more epochs with the run's LR schedule. Only autogrow runs read (and hash)
    this section."""
    # K: epochs at constant train.lr between growth steps [AutoGrow]
    interval: int = field(default=3, metadata=at_least(1))
    # P: growth steps without improvement before growth stops [ours]
    patience: int = field(default=1, metadata=at_least(1))
    # τ: val accuracy gain (points) that counts as improving [ours]
    min_delta: float = field(default=0.05, metadata=at_least(0))

    def __post_init__(self):
        check_fields(self, "autogrow")


@dataclass
class TrainConfig:
    epochs: int = field(default=30, metadata=at_least(1))
    lr: float = field(default=0.1, metadata=positive())
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 1e-4      # [ancestor]
    # exponential: × lr_gamma per epoch from the epoch at the first milestone on (Zaremba's LSTM
    # recipe: 1/1.2 after 6 of 39 epochs)
    # poly: lr · (1 − t/T)^lr_power per iteration after the warm-up (torchvision's segmentation
    # reference, power 0.9)
    lr_schedule: str = field(default="cosine", metadata=choice("cosine", "step", "constant",
                                                               "exponential", "poly"))
    lr_power: float = field(default=0.9, metadata=positive(added_later=0.9))
    milestones: list[float] = field(default_factory=lambda: [0.5, 0.75])  # step: fractions of epochs
    lr_gamma: float = 0.1
    # the classifier's (the model's "head" site) learning rate as a multiple of lr; 1 = one lr
    # for every weight (every profile but smoke-imagenet's 0.03: docs/METHOD.md, the
    # ImageNet-style smoke tree)
    head_lr_scale: float = field(default=1.0, metadata=positive(added_later=1.0))
    warmup_epochs: int = 0
    label_smoothing: float = 0.0
    # auto = cuda when available, else cpu
    device: str = field(default="auto", metadata={"identity": False})
    # CPU threads for torch; 0 = torch's default
    threads: int = field(default=0, metadata={"identity": False})
    # also checkpoint within an epoch this often (0: epoch ends only)
    checkpoint_minutes: float = field(default=10.0, metadata=at_least(0, identity=False))
    channels_last: bool = False
    amp: bool = False               # bf16 autocast on CUDA
    # clip the weights' gradient to this global L2 norm before each step (0: off); the LSTM
    # recipe clips at 5 [Zaremba et al. 2014]
    grad_clip: float = field(default=0.0, metadata=at_least(0))
    # dense runs (and uniform-width baselines): batches of training data run forward before each
    # evaluation to re-estimate BN statistics, as gates.bn_recalibrate does for growing runs;
    # 0 = off. In a short run BN's running averages (momentum 0.1) lag weights that still move
    # fast, and the evaluated network is far worse than the trained one (smoke-imagenet sets it:
    # docs/METHOD.md, the ImageNet-style smoke tree). Counted in the training cost [ours]
    dense_bn_recalibrate: int = field(default=0, metadata=at_least(0, added_later=0,
                                                                   read_by="dense"))
    # masked: closed channels/blocks are computed and multiplied by 0; restructured: only the
    # sampled sub-network is computed (same mathematics; method/execution.py); auto:
    # restructured where the model and sampling allow it, else masked. Read by growing runs
    # (the other methods train masked, and keep the identity they had when masked was the
    # default); growing runs tracked with the old default (masked) retrain: the two executions
    # agree per step to float rounding, not over a whole run (docs/METHOD.md)
    execution: str = field(default="auto", metadata=choice(*M.EXECUTION_MODES, read_by="grow",
                                                          others_at="masked"))
    # restructured (and auto): each gate's active channels rounded up to a multiple of this (its
    # closed channels computed and multiplied by 0, as masked): few layer shapes, whose CPU
    # kernels are prepared once (method/execution.py); part of identity only where it is read
    channel_multiple: int = field(default=8, metadata=at_least(
        1, read_by="grow", read_with="train.execution!=masked"))

    def __post_init__(self):
        check_fields(self, "train")


@dataclass
class RunConfig:
    variant: str = "grow"           # a name for this run inside its experiment
    seed: int = 0
    # grow: the method; dense: the model without gates (baselines, incl. uniform width via
    # model.width_multiplier); prune: a pruning baseline configured in `baseline`; autogrow: the
    # AutoGrow-style layer-growing baseline configured in `autogrow`
    method: str = field(default="grow", metadata=choice("grow", "dense", "prune", "autogrow"))
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    gates: GateConfig = field(default_factory=GateConfig)
    temperature: M.TemperatureOptions = field(default_factory=M.TemperatureOptions)
    budget: M.BudgetOptions = field(default_factory=M.BudgetOptions)
    train: TrainConfig = field(default_factory=TrainConfig)
    baseline: BaselineConfig = field(default_factory=BaselineConfig)
    autogrow: AutoGrowConfig = field(default_factory=AutoGrowConfig,
                                     metadata={"read_by": "autogrow"})

    def __post_init__(self):
        check_fields(self, "")


def _check_value(path: str, value: Any, typ: Any) -> Any:
    if get_origin(typ) is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path}: expected a list, got {value!r}")
        (item,) = get_args(typ)
        return [_coerce(f"{path}[{i}]", v, item) for i, v in enumerate(value)]
    return _coerce(path, value, typ)


def _coerce(path: str, value: Any, typ: Any) -> Any:
    if typ is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ConfigError(f"{path}: expected true or false, got {value!r}")
    if typ is int:
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise ConfigError(f"{path}: expected an integer, got {value!r}")
        try:
            return int(value)
        except ValueError:
            raise ConfigError(f"{path}: expected an integer, got {value!r}") from None
    if typ is float:
        if isinstance(value, bool):
            raise ConfigError(f"{path}: expected a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{path}: expected a number, got {value!r}") from None
    if typ is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"{path}: expected a string, got {value!r}")
        return str(value)
    return value


def _merge(tree: dict, overrides: Any, cls: type, prefix: str = "") -> None:
    """Fold a nested dict of overrides into `tree` (the nested values set so far for the dataclass
    `cls`), checking every key and each value's type; values are checked when sections are built."""
    if not isinstance(overrides, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {overrides!r}")
    hints = get_type_hints(cls)
    names = [f.name for f in fields(cls)]
    for key, value in overrides.items():
        path = prefix + str(key)
        if key not in names:
            raise ConfigError(f"unknown key {path!r}; valid keys here: {', '.join(names)}")
        if is_dataclass(hints[key]):
            _merge(tree.setdefault(key, {}), value, hints[key], path + ".")
        else:
            tree[key] = _check_value(path, value, hints[key])


def _build(cls: type, tree: dict) -> Any:
    """The dataclass `cls` from the merged values (its defaults elsewhere), each section built once
    and checking itself."""
    hints = get_type_hints(cls)
    values = {}
    for f in fields(cls):
        if is_dataclass(hints[f.name]):
            values[f.name] = _build(hints[f.name], tree.get(f.name, {}))
        elif f.name in tree:
            values[f.name] = tree[f.name]
    return cls(**values)


def resolve(*layers: dict, source: str = "config") -> RunConfig:
    """Defaults, then each layer of overrides in order; validated. `source` names the origin."""
    tree: dict = {}
    try:
        for layer in layers:
            _merge(tree, layer or {}, RunConfig)
        cfg = _build(RunConfig, tree)
    except (ConfigError, M.OptionError) as e:
        raise ConfigError(f"{source}: {e}") from None
    from .models import available_models, model_exists
    if not model_exists(cfg.model.name):
        raise ConfigError(f"{source}: model.name: unknown model {cfg.model.name!r}; "
                          f"choose one of {', '.join(available_models())}")
    from .data.registry import dataset
    defaults = dataset(cfg.data.dataset).defaults   # image folders state their crop side
    if defaults.image_size_in_config and not cfg.data.image_size:
        from .models import default_cfg
        cfg.data.image_size = (default_cfg(cfg.model.name).input_size[-1]
                               if defaults.image_size_from_model else defaults.image_size)
    return cfg


def to_dict(cfg: RunConfig) -> dict:
    return dataclasses.asdict(cfg)


def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def unflatten(flat: dict[str, Any]) -> dict:
    out: dict = {}
    for key, value in flat.items():
        node = out
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return out


# what a section's metadata may say of all its fields (method/options.py explains each)
SECTION_IDENTITY_KEYS = ("identity", "read_by", "others_at", "read_with")


def _flag(cfg: Any, path: str) -> bool:
    """Whether the field at `path` is set (`path=value`, `path!=value`: whether it has, or has
    not, that value)."""
    path, sep, wanted = path.partition("=")
    negated = path.endswith("!")
    for name in path.removesuffix("!").split("."):
        cfg = getattr(cfg, name)
    if not sep:
        return bool(cfg)
    return (str(cfg) == wanted) != negated


def identity(cfg: RunConfig) -> dict[str, Any]:
    """What a run's identity is made of: its flattened fields, as their metadata says."""
    out: dict[str, Any] = {}

    def visit(obj: Any, prefix: str, outer: dict) -> None:
        for f in fields(obj):
            meta, value = {**outer, **f.metadata}, getattr(obj, f.name)
            if is_dataclass(value):
                visit(value, f"{prefix}{f.name}.",
                      {k: v for k, v in meta.items() if k in SECTION_IDENTITY_KEYS})
                continue
            if meta.get("identity", True) is False:
                continue
            if "read_by" in meta and cfg.method != meta["read_by"]:
                if "others_at" not in meta:
                    continue
                value = meta["others_at"]
            if "read_with" in meta and not _flag(cfg, meta["read_with"]):
                continue
            if "added_later" in meta and value == meta["added_later"]:
                continue
            out[prefix + f.name] = value

    visit(cfg, "", {})
    return out


def config_hash(cfg: RunConfig) -> str:
    """Identity of a run: everything that can change its result, canonically serialised."""
    blob = json.dumps(identity(cfg), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def parse_overrides(items: list[str]) -> dict:
    """`key.sub=value` strings (CLI --set) into a nested dict; values parsed as YAML scalars."""
    import yaml
    flat = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected key=value, e.g. budget.target=0.3")
        key, value = item.split("=", 1)
        flat[key.strip()] = yaml.safe_load(value)
    return unflatten(flat)


def data_root(cfg: DataConfig) -> str:
    return cfg.root or os.environ.get("DATA_DIR") or "data"
