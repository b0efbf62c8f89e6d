"""The experiment schema: every knob of a run, its default, and why.

A run is fully described by one `RunConfig`. Experiment files (experiments/*.yaml) only override
fields of it; the resolved config is what gets hashed, tracked and shown to the user, so nothing
that changes a result hides in code. Unknown keys and invalid values stop with a message naming
the key, the file and the accepted values.

Defaults marked [ours] are this suite's choices where the paper's value is unknown (see
docs/METHOD.md). The method's vocabularies and ranges are defined once, in reproduce/method/options.py;
this schema takes them from there and adds what belongs to a run (data, model, schedule, baselines).
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


def choice(*options: str) -> dict:
    return {"choices": options}


def choices_of(metadata) -> tuple[str, ...]:
    """A field's accepted values: its "choices" metadata, a tuple, or a function returning them
    (read when a value is checked, from a registry filled after this module is imported)."""
    options = metadata.get("choices") or ()
    return tuple(options() if callable(options) else options)


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
    root: str = ""
    download: bool = False          # fetch CIFAR / VOC when missing (make data-cifar10 sets it)
    batch_size: int = 128
    eval_batch_size: int = 512
    augment: bool = True            # random crop + horizontal flip (CIFAR); ±1 px shifts, no flip (digits)
    # image folders: smallest share of the image's area a RandomResizedCrop keeps (torchvision's
    # and the reference recipe's 0.08); imagenet_smoke's profile keeps 0.5 (smaller crops cut
    # the glyph)
    crop_scale: float = 0.08
    # image folders: random horizontal flips in training (the reference recipe's); digits are not
    # mirror-symmetric, so imagenet_smoke's profile turns them off
    hflip: bool = True
    val_fraction: float = 0.2       # digits, pydoc_text: held-out share of the data
    num_workers: int = 0            # image folders only; tensor datasets live on the device
    synthetic_train: int = 512      # synthetic, digit_scenes: generated training images
    synthetic_val: int = 128        # synthetic, digit_scenes: generated validation images
    # synthetic, image folders, digit_scenes, voc (crop and evaluation size); 0 = the dataset's
    # own (image folders: the model's input size, imagenet_smoke 64, digit_scenes 32, voc 512),
    # filled in for image folders when the config is resolved so the tracked config states it
    image_size: int = 0
    # voc training: the random resize draws the image's shorter side from [0.5, 2.0] × base_size
    # before the crop of image_size (torchvision's segmentation reference: 520, crop 480);
    # 0 = image_size
    base_size: int = 0
    # voc: train on "train_aug", VOC 2012 train + SBD's train and val (Hariharan et al. 2011,
    # DATA_DIR/sbd, `make data-sbd`) without the VOC 2012 val images, each image once: 10,582
    sbd: bool = False
    # synthetic/image folders: classes; ptb/pydoc_text: vocabulary size (the most frequent words,
    # + <unk>, <eos>); 0 = the dataset's own (ptb: its 10k words, pydoc_text: 2000)
    num_classes: int = 0
    bptt: int = 35                  # ptb/pydoc_text: truncated-BPTT window in tokens [Zaremba 2014]


@dataclass
class ModelConfig:
    name: str = "resnet20"          # see `python -m reproduce list models`
    width_multiplier: float = 1.0   # uniform width scaling of every gated layer
    gate_channels: bool = True      # channel gates on every prunable conv output
    gate_blocks: bool = False       # block gates on residual blocks (layer growing)
    # ResNet-50: the last BN of every residual branch starts at weight 0, so every block starts as
    # the identity (torchvision's zero_init_residual, Goyal et al. 2017); off in torchvision's
    # reference recipe, on in the ImageNet smoke profile (docs/METHOD.md)
    zero_init_residual: bool = False


@dataclass
class GateConfig:
    sampling: str = field(default="bernoulli", metadata=choice(*M.SAMPLING_MODES))  # hard: fixed masks
    # Seed architecture [ours]: a fraction of each channel group and one block per stage start on.
    seed_fraction: float = 0.25     # 1.0 with seed_blocks=all is "prune from the full network"
    # one_per_stage (layer growing's seed), <n>_per_stage (e.g. 2_per_stage) or all (checked
    # by the method: M.seed_blocks_per_stage)
    seed_blocks: str = "one_per_stage"
    seed_selection: str = field(default="first", metadata=choice(*M.SEED_SELECTIONS))
    # initial logit of seed structures [ours]: with β_0 = 5 the seed starts at p = σ(2.5) = 0.92,
    # reliably on yet not saturated. s_on = 3 (p ≈ 1 - 3e-7) left no gradient to move the seed:
    # pruning from the full network (seed_fraction 1) never pruned (Figure 4 smoke run)
    s_on: float = 0.5
    s_off: float = -0.1             # initial logit of the rest; near 0 lets sampling explore early
    # non-seed logits start at s_off − spread·U(0,1): with 0 they cross 0 together and the usage
    # jumps by whole gates; a spread makes channels grow one after another [ours]
    s_off_spread: float = 0.5
    min_channels: int = 1           # channels every channel gate keeps on (0 allows zero-width layers)
    # bernoulli sampling: q is drawn at iterations 0, k, 2k, ... of the run and the same sampled
    # sub-network trains in between (the paper's "periodically restructured"; its period is not
    # known [ours]); 1 = a new sub-network every iteration. With train.execution: restructured a
    # period keeps the computed shapes, so the kernels prepared for them are reused
    resample_every: int = 1
    mask_lr: float = 0.1            # mask logits: own SGD, no weight decay, same LR schedule
    mask_momentum: float = 0.9
    # Batches of training data run forward (train mode, hard gates, no gradient) before each
    # evaluation to re-estimate BN statistics for the hard architecture; 0 = off. Running stats
    # gathered under sampled gates do not match the hard net that is evaluated. Counted in the
    # training cost (forward MACs only) [ours]
    bn_recalibrate: int = 4


@dataclass
class TemperatureConfig:
    schedule: str = field(default="global", metadata=choice(*M.SCHEDULES))
    # [ancestor: 1] β_0 = 5 [ours]: non-seed channels start at p = σ(5·s_off) ≈ 0.1-0.4 instead of
    # ≈ 0.4-0.5, so fewer random channels are sampled in; the separate schedules need it most
    beta_0: float = 5.0
    beta_final: float = 200.0       # [ancestor] β reaches 200 ...
    decay: float = 0.9              # separate_decayed: β_i ← max(β_0, δ·β_i) while inactive [ours]
    # ... after this fraction of the epochs, and stays (1 = in the last epoch) [ours] 0.5: short
    # schedules otherwise spend most epochs training noisy sub-networks (p far from 0/1); the
    # grown architecture then trains hard for the second half
    ramp_fraction: float = 0.5


@dataclass
class BudgetConfig:
    metric: str = field(default="macs", metadata=choice(*M.BUDGET_METRICS))
    target: float = 0.5             # τ: fraction of the dense model's MACs (or params)
    lambda_base: float = 0.05       # [ours] effective range 0.03-0.1 with mean-normalised costs
    usage: str = field(default="hard", metadata=choice(*M.USAGES))
    cost: str = field(default="macs", metadata=choice(*M.COSTS))
    normalize: str = field(default="mean", metadata=choice(*M.NORMALIZATIONS))
    # Under budget (λ < 0) a cost-weighted push grows the most expensive channels first (the
    # objective's own gradient, λ·c_i·∂p_i); `uniform` pushes every structure alike and lets the
    # task loss decide what grows. Over budget pruning is always cost-weighted. [ours: cost]
    # `uniform` left the shared high-resolution streams narrow (ResNet-56 at 0.5 MACs: 97.83 %
    # against 98.56 % with `cost`, five seeds; docs/METHOD.md)
    growth_push: str = field(default="cost", metadata=choice(*M.GROWTH_PUSHES))


@dataclass
class BaselineConfig:
    """Pruning baselines: train dense, prune once, fine-tune (all epochs count as training cost)."""
    criterion: str = field(default="l1_norm", metadata=choice("l1_norm", "slimming"))
    pretrain_epochs: int = 30       # dense training before pruning
    finetune_epochs: int = 10       # after pruning (the main train.epochs is not used)
    finetune_lr: float = 0.01       # fine-tuning LR, same schedule shape as train.lr_schedule
    prune_target: float = 0.5       # keep this fraction of the dense model's MACs
    slimming_l1: float = 1e-4       # network slimming: L1 on BN scales during pre-training
    scope: str = field(default="auto", metadata=choice("auto", "inner", "all"))  # auto: inner for ResNets
    # runs of one experiment that differ only in prune_target pre-train one dense network and
    # each prune and fine-tune it (the practice of Li et al. and Liu et al.); every run still
    # logs and counts the pre-training. Not part of a run's identity: on CPU the pruned runs'
    # numbers are the same either way (tests/test_baselines.py)
    share_pretraining: bool = True


@dataclass
class AutoGrowConfig:
    """The AutoGrow-style baseline (method: autogrow; reproduce/autogrow.py): depth grown on a
    fixed schedule (Wen et al. 2020's periodic policy) until validation accuracy stops improving,
    then `train.epochs` more epochs with the run's LR schedule. Only autogrow runs read (and hash)
    this section."""
    interval: int = 3               # K: epochs at constant train.lr between growth steps [AutoGrow]
    patience: int = 1               # P: growth steps without improvement before growth stops [ours]
    min_delta: float = 0.05         # τ: val accuracy gain (points) that counts as improving [ours]


@dataclass
class TrainConfig:
    epochs: int = 30
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 1e-4      # [ancestor]
    # exponential: × lr_gamma per epoch from the epoch at the first milestone on (Zaremba's LSTM
    # recipe: 1/1.2 after 6 of 39 epochs)
    # poly: lr · (1 − t/T)^lr_power per iteration after the warm-up (torchvision's segmentation
    # reference, power 0.9)
    lr_schedule: str = field(default="cosine", metadata=choice("cosine", "step", "constant",
                                                               "exponential", "poly"))
    lr_power: float = 0.9
    milestones: list[float] = field(default_factory=lambda: [0.5, 0.75])  # step: fractions of epochs
    lr_gamma: float = 0.1
    # the classifier's (the model's "head" site) learning rate as a multiple of lr; 1 = one lr
    # for every weight (every recipe but the ImageNet smoke profile's: docs/METHOD.md)
    head_lr_scale: float = 1.0
    warmup_epochs: int = 0
    label_smoothing: float = 0.0
    device: str = "auto"            # auto = cuda when available, else cpu
    threads: int = 0                # CPU threads for torch; 0 = torch's default
    checkpoint_minutes: float = 10.0  # also checkpoint within an epoch this often (0: epoch ends only)
    channels_last: bool = False
    amp: bool = False               # bf16 autocast on CUDA
    # clip the weights' gradient to this global L2 norm before each step (0: off); the LSTM
    # recipe clips at 5 [Zaremba et al. 2014]
    grad_clip: float = 0.0
    # masked: closed channels/blocks are computed and multiplied by 0; restructured: only the
    # sampled sub-network is computed (same mathematics; method/execution.py)
    execution: str = field(default="masked", metadata=choice(*M.EXECUTION_MODES))


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
    temperature: TemperatureConfig = field(default_factory=TemperatureConfig)
    budget: BudgetConfig = field(default_factory=BudgetConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    baseline: BaselineConfig = field(default_factory=BaselineConfig)
    autogrow: AutoGrowConfig = field(default_factory=AutoGrowConfig)


# Fields that do not change a run's result: left out of its identity hash.
NON_IDENTITY = {"data.root", "data.download", "data.num_workers", "data.eval_batch_size",
                "train.device", "train.threads", "train.checkpoint_minutes",
                "baseline.share_pretraining"}
# Fields added after runs were tracked, with the value that does what the suite did before they
# existed: left out of a run's identity while at that value, so runs tracked earlier keep their
# hashes. Changing one of these defaults means taking it out of this table (and new pins).
LATER_FIELDS = {"data.base_size": 0, "data.sbd": False, "train.lr_power": 0.9,
                "data.crop_scale": 0.08, "gates.resample_every": 1, "data.hflip": True,
                "model.zero_init_residual": False, "train.head_lr_scale": 1.0}
# Fields only the method itself reads (method: grow; the baselines keep λ = 0 or have no gates):
# every other run hashes them at the value its tracked runs were made with, so changing such a
# default retrains the growing runs and leaves the baselines' identities (and results) alone.
GROW_ONLY = {"budget.growth_push": "uniform"}
# Sections read by one trainer only: part of a run's identity only when it uses that trainer
# (so adding such a section left every other run's identity, and tracked runs, as they were).
TRAINER_SECTIONS = {"autogrow": "autogrow"}


def _check_value(path: str, f: dataclasses.Field, value: Any, typ: Any) -> Any:
    origin = get_origin(typ)
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path}: expected a list, got {value!r}")
        (item,) = get_args(typ)
        return [_coerce(f"{path}[{i}]", v, item) for i, v in enumerate(value)]
    value = _coerce(path, value, typ)
    options = choices_of(f.metadata)
    if options and value not in options:
        raise ConfigError(f"{path}: unknown value {value!r}; choose one of {', '.join(options)}")
    return value


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


def _merge(obj: Any, overrides: dict, prefix: str = "") -> None:
    """Apply a nested dict of overrides onto a dataclass in place, validating every key."""
    if not isinstance(overrides, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {overrides!r}")
    hints = get_type_hints(type(obj))
    by_name = {f.name: f for f in fields(obj)}
    for key, value in overrides.items():
        path = prefix + str(key)
        if key not in by_name:
            raise ConfigError(f"unknown key {path!r}; valid keys here: {', '.join(by_name)}")
        current = getattr(obj, key)
        if is_dataclass(current):
            _merge(current, value, path + ".")
        else:
            setattr(obj, key, _check_value(path, by_name[key], value, hints[key]))


def _check_ranges(cfg: RunConfig) -> None:
    rules = [
        ("train.epochs", cfg.train.epochs >= 1, ">= 1"),
        ("train.lr", cfg.train.lr > 0, "positive"),
        ("data.batch_size", cfg.data.batch_size >= 1, ">= 1"),
        ("data.eval_batch_size", cfg.data.eval_batch_size >= 1, ">= 1"),
        ("data.synthetic_train", cfg.data.synthetic_train >= 1, ">= 1"),
        ("data.synthetic_val", cfg.data.synthetic_val >= 1, ">= 1"),
        ("data.bptt", cfg.data.bptt >= 1, ">= 1"),
        ("data.base_size", cfg.data.base_size >= 0, ">= 0"),
        ("train.lr_power", cfg.train.lr_power > 0, "positive"),
        ("train.grad_clip", cfg.train.grad_clip >= 0, ">= 0"),
        ("train.head_lr_scale", cfg.train.head_lr_scale > 0, "positive"),
        ("baseline.prune_target", 0.0 < cfg.baseline.prune_target <= 1.0, "in (0, 1]"),
        ("baseline.pretrain_epochs", cfg.baseline.pretrain_epochs >= 0, ">= 0"),
        ("baseline.finetune_epochs", cfg.baseline.finetune_epochs >= 1, ">= 1"),
        ("baseline.finetune_lr", cfg.baseline.finetune_lr > 0, "positive"),
        ("baseline.slimming_l1", cfg.baseline.slimming_l1 >= 0, ">= 0"),
        ("data.val_fraction", 0.0 < cfg.data.val_fraction < 1.0, "in (0, 1)"),
        ("data.crop_scale", 0.0 < cfg.data.crop_scale <= 1.0, "in (0, 1]"),
        ("model.width_multiplier", cfg.model.width_multiplier > 0, "positive"),
        ("gates.mask_lr", cfg.gates.mask_lr >= 0, ">= 0"),
        ("train.checkpoint_minutes", cfg.train.checkpoint_minutes >= 0, ">= 0"),
        ("gates.bn_recalibrate", cfg.gates.bn_recalibrate >= 0, ">= 0"),
        ("autogrow.interval", cfg.autogrow.interval >= 1, ">= 1"),
        ("autogrow.patience", cfg.autogrow.patience >= 1, ">= 1"),
        ("autogrow.min_delta", cfg.autogrow.min_delta >= 0, ">= 0"),
    ]
    for path, ok, expected in rules:
        if not ok:
            section, key = path.split(".")
            raise ConfigError(f"{path} = {getattr(getattr(cfg, section), key)!r}: must be {expected}")
    if cfg.data.sbd and cfg.data.dataset != "voc":
        raise ConfigError(f"data.sbd = true: SBD adds training images to PASCAL VOC, but "
                          f"data.dataset is {cfg.data.dataset!r}; set data.dataset: voc or "
                          f"data.sbd: false")
    try:                              # the method checks its own options
        method_options(cfg)
    except M.OptionError as e:
        raise ConfigError(str(e)) from None


def method_options(cfg: RunConfig) -> tuple[M.GateOptions, M.TemperatureOptions, M.BudgetOptions]:
    """The run's method options, as the method itself takes them."""
    return (M.from_fields(M.GateOptions, cfg.gates),
            M.from_fields(M.TemperatureOptions, cfg.temperature),
            M.from_fields(M.BudgetOptions, cfg.budget))


def resolve(*layers: dict, source: str = "config") -> RunConfig:
    """Defaults, then each layer of overrides in order; validated. `source` names the origin."""
    cfg = RunConfig()
    for layer in layers:
        try:
            _merge(cfg, layer or {})
        except ConfigError as e:
            raise ConfigError(f"{source}: {e}") from None
    try:
        _check_ranges(cfg)
    except ConfigError as e:
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


def config_hash(cfg: RunConfig) -> str:
    """Identity of a run: everything that can change its result, canonically serialised."""
    unused = {section for section, method in TRAINER_SECTIONS.items() if cfg.method != method}
    flat = {k: v for k, v in flatten(to_dict(cfg)).items()
            if k not in NON_IDENTITY and k.split(".")[0] not in unused
            and not (k in LATER_FIELDS and v == LATER_FIELDS[k])}
    if cfg.method != "grow":
        flat.update((k, v) for k, v in GROW_ONLY.items() if k in flat)
    blob = json.dumps(flat, sort_keys=True, separators=(",", ":"))
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
