"""The GPU-hours of every paper-profile figure and table, from bench/gpu_check.py's measurements.

Each analysis module's EXPERIMENTS, resolved with the suite's planner for profile paper; every
run's epochs (pre-training and fine-tuning for the pruning baselines) × its epoch time, from the
measured rows: models and datasets measured directly, others scaled by dense MACs (each run's
`basis` says which). Imports neither MLflow nor Optuna.
"""

from __future__ import annotations

import ast
import math
from pathlib import Path

import torch

import analysis  # (its package only: the list of figure/table modules)
from reproduce.config import RunConfig
from reproduce.experiments import plan
from reproduce.method import CostModel
from reproduce.models import create_model, default_cfg

PROFILE = "paper"
# training-set sizes of the datasets not generated here (their published sizes), per epoch
TRAIN_SIZES = {"cifar10": 50_000, "cifar100": 50_000, "imagenet": 1_281_167,
               "ptb": 929_589}          # ptb: tokens
VOC_TRAIN, VOC_TRAIN_AUG = 1_464, 10_582   # data.sbd false / true


_PLANS: dict[str, list] = {}


def paper_plan(experiment: str) -> list:
    """Every run of an experiment file for the paper profile (planned once)."""
    if experiment not in _PLANS:
        _PLANS[experiment] = plan(experiment, PROFILE)
    return _PLANS[experiment]


# -- GPU-hours of the paper targets -------------------------------------------------------------

def target_experiments() -> dict[str, list[str]]:
    """Every figure and table (analysis.targets()) with its EXPERIMENTS, read from the module's
    source: importing the modules would import their plotting and the tracking store's client."""
    out = {}
    for name, module in analysis.targets().items():
        path = Path(analysis.__file__).parent / f"{module.rsplit('.', 1)[1]}.py"
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "EXPERIMENTS"
                                                    for t in node.targets):
                out[name] = list(ast.literal_eval(node.value))
        if name not in out:
            raise ValueError(f"{path} declares no EXPERIMENTS list")
    return out


_MACS: dict[tuple, float] = {}


def dense_macs(cfg: RunConfig, size: int) -> float:
    """MACs per image (per token for a language model) of the run's dense model."""
    name = cfg.model.name
    defaults = default_cfg(name)
    key = (name, cfg.model.width_multiplier, size)
    if key not in _MACS:
        def count(device: str) -> float:
            with torch.device(device):
                net = create_model(name, num_classes=cfg.data.num_classes or defaults.num_classes,
                                   in_channels=defaults.input_size[0],
                                   width_multiplier=cfg.model.width_multiplier,
                                   gate_channels=False)
            return float(CostModel(net, (defaults.input_size[0], size, size)).dense_macs)
        try:                   # shapes only: the probe's forward pass on the meta device is free
            _MACS[key] = count("meta")
        except (NotImplementedError, RuntimeError):
            _MACS[key] = count("cpu")
    return _MACS[key]


def run_size(cfg: RunConfig) -> tuple[int, int, str]:
    """(training samples per epoch, input side, unit) of a run's dataset."""
    d = cfg.data.dataset
    if d in ("cifar10", "cifar100"):
        return TRAIN_SIZES[d], 32, "images"
    if d == "imagenet":
        return TRAIN_SIZES[d], cfg.data.image_size or 224, "images"
    if d == "voc":
        return (VOC_TRAIN_AUG if cfg.data.sbd else VOC_TRAIN), cfg.data.image_size or 480, "images"
    if d == "ptb":
        return TRAIN_SIZES[d], 1, "tokens"
    raise ValueError(f"no training-set size for dataset {d!r} (add it to TRAIN_SIZES)")


def run_epochs_of(cfg: RunConfig) -> tuple[int, str]:
    if cfg.method == "prune":
        return cfg.baseline.pretrain_epochs + cfg.baseline.finetune_epochs, \
            "pre-training + fine-tuning, both at the dense rate"
    if cfg.method == "autogrow":
        return cfg.train.epochs, "train.epochs only (its growth phase ends at run time)"
    return cfg.train.epochs, ""


def run_mode(cfg: RunConfig, measured: set[str]) -> str:
    if cfg.method != "grow":
        return "dense"
    if cfg.train.execution == "restructured" and cfg.gates.sampling in ("bernoulli", "hard"):
        ks = [int(m.rsplit("-", 1)[1]) for m in measured if m.startswith("restructured-")]
        if ks:
            k = min(ks, key=lambda k: (abs(math.log(k) - math.log(cfg.gates.resample_every)), k))
            return f"restructured-{k}"
    return "masked"


def estimate(cifar: list[dict], imagenet: list[dict], log) -> dict:
    """GPU-hours of every paper-profile target from the measured seconds per training sample."""
    # (model, mode, precision) -> (seconds per training image, epoch-end seconds per epoch)
    rate: dict[tuple, tuple[float, float]] = {}
    for r in cifar:
        rate[(r["model"], r["mode"], r["precision"])] = (r["step_s"] / r["batch"], r["epoch_end_s"])
    for r in imagenet:
        rate[(r["model"], r["mode"], r["precision"])] = (1 / r["images_per_s"], 0.0)
    sizes = {"resnet20": 32, "resnet56": 32, "vgg16": 32, "resnet50": None, "mobilenet_v1": None}
    refs: dict[str, float] = {}                 # measured model -> dense MACs per image
    for r in cifar + imagenet:
        if r["model"] not in refs:
            cfg = RunConfig()
            cfg.model.name = r["model"]
            refs[r["model"]] = dense_macs(cfg, sizes[r["model"]] or r["image_size"])

    def seconds_per_epoch(cfg: RunConfig) -> tuple[float, str, str, str]:
        n, size, unit = run_size(cfg)
        name = cfg.model.name
        if name in refs and cfg.model.width_multiplier == 1.0:
            ref, ratio = name, 1.0
            basis = "measured"
        else:
            macs = dense_macs(cfg, size)
            ref = name if name in refs else min(
                refs, key=lambda m: abs(math.log(refs[m]) - math.log(max(macs, 1.0))))
            ratio = macs / refs[ref]
            if unit == "images":               # a smaller image model is not assumed faster
                ratio = max(1.0, ratio)
            basis = f"{ref} × {ratio:.2f} (MACs per {unit[:-1]})"
        modes = {m for (mm, m, _) in rate if mm == ref}
        mode = run_mode(cfg, modes)
        precisions = [p for (mm, m, p) in rate if mm == ref and m == mode]
        want = "bf16-cl" if cfg.train.amp else "fp32"
        precision = want if want in precisions else precisions[0]
        per_sample, end = rate[(ref, mode, precision)]
        return per_sample * ratio * n + end, basis, mode, precision

    targets = target_experiments()
    runs: dict[str, dict] = {}
    out_targets = {}
    for name, experiments in targets.items():
        hashes = []
        for e in experiments:
            for p in paper_plan(e):
                if p.hash not in runs:
                    epochs, note = run_epochs_of(p.cfg)
                    epoch_s, basis, mode, precision = seconds_per_epoch(p.cfg)
                    runs[p.hash] = {"hash": p.hash, "experiment": e, "model": p.cfg.model.name,
                                    "variant": p.cfg.variant, "seed": p.cfg.seed,
                                    "method": p.cfg.method, "dataset": p.cfg.data.dataset,
                                    "epochs": epochs, "mode": mode, "precision": precision,
                                    "basis": basis, "note": note, "epoch_s": epoch_s,
                                    "gpu_hours": epochs * epoch_s / 3600}
                if p.hash not in hashes:
                    hashes.append(p.hash)
        out_targets[name] = {"experiments": experiments, "runs": len(hashes),
                             "gpu_hours": sum(runs[h]["gpu_hours"] for h in hashes)}
    total = sum(r["gpu_hours"] for r in runs.values())
    log(f"  {len(out_targets)} targets, {len(runs)} distinct runs: {total:.1f} GPU-hours")
    return {"profile": PROFILE, "targets": out_targets, "runs": list(runs.values()),
            "distinct_runs": len(runs), "total_gpu_hours": total,
            "notes": ["a run shared by several targets counts in each target's hours and once in "
                      "the total",
                      "growing runs at every budget are timed at budget 0.5",
                      "ImageNet runs: training steps only (no input pipeline, no validation)",
                      "basis: 'measured' or the measured model scaled by dense MACs"]}
