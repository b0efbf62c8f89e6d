"""Pruning baselines, trained under the method's tracking and cost accounting.

Both baselines train the full network, prune it once, and fine-tune what is left:

  l1_norm   Li et al. 2017, "Pruning Filters for Efficient ConvNets": in every prunable layer remove
            the filters with the smallest L1 norm (sum of |weights| of the conv writing the channel).
            Li et al. choose per-layer rates by sensitivity analysis; here one uniform per-layer
            ratio r is found by bisection so that the pruned network's MACs hit
            `baseline.prune_target` of the dense model's; a layer of n filters keeps
            floor((1 − r)·n), at least one (kept_channels).
  slimming  Liu et al. 2017, "Learning Efficient Convolutional Networks through Network Slimming":
            pre-train with an L1 penalty λ·Σ|γ| on the BatchNorm scales of the prunable layers, then
            remove every channel whose |γ| is under one global threshold, chosen by bisection so
            that the MACs hit the target. Each layer keeps at least its largest-|γ| channel.

A pruned network is the gated model with every gate's logits at ±1 and sampling mode "hard"
(g = 1[s > 0] in training too). The mask logits get no optimizer while fine-tuning, so closed
channels stay closed and output exactly zero (the gate sits after BN). Pre-training is the same
model with every gate open, i.e. the dense network. CostModel, export, architecture summaries and
the tracking contract therefore work unchanged, and the training cost counts what was really
trained: dense MACs during pre-training, the pruned network's MACs during fine-tuning.

Scope (`baseline.scope`): `inner` prunes only channel gates written by a single layer (a ResNet
block's inner channels `layer<k>.<j>.gate1`, as Li et al. prune ResNets; every conv of VGG);
`all` also prunes the residual streams `layer<k>.gate` (scored over every layer writing the
stream); `auto` is `inner` for residual networks and `all` otherwise.

Shared pre-training: runs that differ only in `baseline.prune_target` (l1-50 and l1-30 of one
seed) pre-train the same dense network, so the trainer takes a `shared` store (the runner's
checkpoint.SharedPretraining; anything with `load() -> state | None` and `save(state)`): the first
run saves its state after pre-training, the others load it, report its pre-training epochs as
their own steps (same stats, same training cost) and go on to prune and fine-tune. On CPU a run
that loads the state ends with exactly the numbers of one that pre-trains itself (tested).

Steps reported to on_epoch: 0 = before training, 1..P pre-training (`phase` 0), P+1..P+F
fine-tuning (`phase` 1), with the same keys as the method's epochs plus `phase` and `prune/*`.
"""

from __future__ import annotations

import copy
import math
import warnings
from dataclasses import replace

import torch
from torch import Tensor, nn

from . import contract
from .config import ConfigError, RunConfig, config_hash
from .data import DataBundle
from .method import ChannelGate, CostModel, GatedModel, Site
from .tasks import Task
from .train import Phase, TrainState, build, evaluate, run_epochs, use_amp

LOGIT_ON, LOGIT_OFF = 1.0, -1.0


# -- what can be pruned ------------------------------------------------------------------------

def prunable_gates(model: GatedModel, scope: str = "auto") -> dict[str, list[Site]]:
    """Channel gates in scope -> the sites (conv + BN) writing their channels."""
    writers: dict[str, list[Site]] = {}
    for site in model.sites():
        if site.out_gate is not None:
            writers.setdefault(site.out_gate, []).append(site)
    modules = dict(model.named_modules())
    channel = {n: s for n, s in writers.items() if isinstance(modules.get(n), ChannelGate)}
    if scope == "auto":
        scope = "inner" if any(s.role == "inner" for s in model.sites()) else "all"
    if scope == "inner":
        return {n: s for n, s in channel.items() if len(s) == 1}
    if scope == "all":
        return channel
    raise ValueError(f"unknown pruning scope {scope!r}; choose auto, inner or all")


def l1_scores(model: nn.Module, gates: dict[str, list[Site]]) -> dict[str, Tensor]:
    """Per channel: the L1 norm of the filter writing it (summed over every layer writing it)."""
    modules = dict(model.named_modules())
    out = {}
    with torch.no_grad():
        for gate, sites in gates.items():
            out[gate] = sum(modules[s.name].weight.detach().abs().flatten(1).sum(1).float().cpu()
                            for s in sites)
    return out


def bn_scales(model: nn.Module, gates: dict[str, list[Site]]) -> list[nn.Parameter]:
    """The BatchNorm scales γ right before each prunable gate."""
    modules = dict(model.named_modules())
    missing = [s.name for sites in gates.values() for s in sites if s.bn is None]
    if missing:
        raise ConfigError(f"network slimming needs a BatchNorm after every pruned layer; "
                          f"{missing[0]} has none")
    return [modules[s.bn].weight for sites in gates.values() for s in sites]


def slimming_scores(model: nn.Module, gates: dict[str, list[Site]]) -> dict[str, Tensor]:
    """Per channel: |γ| of the BN after the layer writing it (mean over every writer)."""
    modules = dict(model.named_modules())
    with torch.no_grad():
        return {g: sum(modules[s.bn].weight.detach().abs().float().cpu() for s in sites) / len(sites)
                for g, sites in gates.items()}


def slimming_regularizer(model: nn.Module, gates: dict[str, list[Site]], strength: float):
    """λ·Σ|γ| over the prunable layers' BN scales (its gradient is λ·sign(γ))."""
    scales = bn_scales(model, gates)

    def penalty() -> Tensor:
        return strength * sum(g.abs().sum() for g in scales)
    return penalty


# -- masks ---------------------------------------------------------------------------------------

def top_k_mask(scores: Tensor, keep: int) -> Tensor:
    """Boolean mask keeping the `keep` largest scores (ties: the lower index is kept)."""
    keep = max(0, min(scores.numel(), keep))
    order = torch.sort(scores, descending=True, stable=True).indices
    mask = torch.zeros(scores.numel(), dtype=torch.bool)
    mask[order[:keep]] = True
    return mask


def kept_channels(n: int, ratio: float) -> int:
    """Channels a layer of n keeps at pruning ratio `ratio`: floor((1 − ratio)·n), at least one.
    The floor, in this very float expression, is that of the reference code of Li et al.'s
    criterion (Liu et al. 2019, `num_keep = int(out_channels * (1 - prune_prob))`) and of
    Torch-Pruning's per-layer ratio, so a ratio keeps the same count in all three."""
    return max(1, min(n, int(n * (1.0 - ratio))))


def ratio_masks(scores: dict[str, Tensor], ratio: float | dict[str, float]) -> dict[str, Tensor]:
    """Keep the kept_channels(n, ratio) largest-score channels of every layer; `ratio` is one
    ratio for every layer or one per gate."""
    out = {}
    for gate, s in scores.items():
        r = ratio[gate] if isinstance(ratio, dict) else ratio
        out[gate] = top_k_mask(s, kept_channels(s.numel(), r))
    return out


def global_candidates(scores: dict[str, Tensor]) -> list[tuple[float, str, int]]:
    """Every channel a global threshold may remove, smallest score first. The largest-score
    channel of each layer is never a candidate, so every layer keeps at least one."""
    cands = []
    for gate, s in scores.items():
        protected = int(top_k_mask(s, 1).nonzero()[0]) if s.numel() else -1
        cands += [(float(v), gate, i) for i, v in enumerate(s.tolist()) if i != protected]
    cands.sort(key=lambda c: (c[0], c[1], c[2]))
    return cands


def threshold_masks(scores: dict[str, Tensor], cands: list[tuple[float, str, int]],
                    k: int) -> dict[str, Tensor]:
    """Remove the k globally smallest candidates."""
    out = {g: torch.ones(s.numel(), dtype=torch.bool) for g, s in scores.items()}
    for _, gate, i in cands[:k]:
        out[gate][i] = False
    return out


def macs_with(costs: CostModel, masks: dict[str, Tensor]) -> float:
    """Hard MACs of the model with `masks` applied on top of its current hard architecture."""
    state = costs.hard_state()
    state.update({g: m.to(torch.float32) for g, m in masks.items()})
    return float(costs.count(state)[0])


def bisect_ratio(costs: CostModel, scores: dict[str, Tensor], target: float,
                 iterations: int = 40) -> tuple[float, dict[str, Tensor]]:
    """The uniform per-layer ratio whose MACs are closest to target × dense MACs."""
    goal = target * costs.dense_macs
    lo, hi = 0.0, 1.0
    if macs_with(costs, ratio_masks(scores, hi)) > goal:
        warnings.warn(f"pruning cannot reach {target:.3f} of dense MACs within its scope; "
                      f"pruning every layer down to one channel", stacklevel=2)
        return hi, ratio_masks(scores, hi)
    for _ in range(iterations):          # invariant: macs(lo) > goal >= macs(hi)
        mid = 0.5 * (lo + hi)
        if macs_with(costs, ratio_masks(scores, mid)) > goal:
            lo = mid
        else:
            hi = mid
    best = min((lo, hi), key=lambda r: abs(macs_with(costs, ratio_masks(scores, r)) - goal))
    return best, ratio_masks(scores, best)


def bisect_threshold(costs: CostModel, scores: dict[str, Tensor],
                     target: float) -> tuple[float, dict[str, Tensor]]:
    """The global score threshold whose MACs are closest to target × dense MACs.

    Returns (threshold, masks): channels with a score <= threshold are removed (the largest of
    each layer excepted). A threshold of -inf removes nothing.
    """
    goal = target * costs.dense_macs
    cands = global_candidates(scores)
    lo, hi = 0, len(cands)               # number of candidates removed
    if macs_with(costs, threshold_masks(scores, cands, hi)) > goal:
        warnings.warn(f"pruning cannot reach {target:.3f} of dense MACs within its scope; "
                      f"pruning every layer down to one channel", stacklevel=2)
        lo = hi
    while lo < hi:                       # smallest k with macs(k) <= goal
        mid = (lo + hi) // 2
        if macs_with(costs, threshold_masks(scores, cands, mid)) > goal:
            lo = mid + 1
        else:
            hi = mid
    k = lo
    if k > 0:
        over = abs(macs_with(costs, threshold_masks(scores, cands, k - 1)) - goal)
        under = abs(macs_with(costs, threshold_masks(scores, cands, k)) - goal)
        if over < under:
            k -= 1
    threshold = cands[k - 1][0] if k > 0 else -math.inf
    return threshold, threshold_masks(scores, cands, k)


def choose_masks(model: nn.Module, costs: CostModel, gates: dict[str, list[Site]], criterion: str,
                 target: float) -> tuple[dict[str, Tensor], dict[str, float]]:
    """Masks (True = keep) of the prunable gates and a summary of how they were chosen."""
    if criterion == "l1_norm":
        ratio, masks = bisect_ratio(costs, l1_scores(model, gates), target)
        info = {"prune/layer_ratio": ratio}
    elif criterion == "slimming":
        threshold, masks = bisect_threshold(costs, slimming_scores(model, gates), target)
        info = {"prune/threshold": threshold if math.isfinite(threshold) else 0.0}
    else:
        raise ValueError(f"unknown pruning criterion {criterion!r}; choose l1_norm or slimming")
    kept = sum(int(m.sum()) for m in masks.values())
    total = sum(m.numel() for m in masks.values())
    info.update({"prune/target": target, "prune/usage": macs_with(costs, masks) / costs.dense_macs,
                 "prune/channels_kept": kept / max(1, total)})
    return masks, info


@torch.no_grad()
def apply_masks(model: nn.Module, masks: dict[str, Tensor]) -> None:
    """Set each gate's logits to +1 (keep) / -1 (removed)."""
    modules = dict(model.named_modules())
    for gate, keep in masks.items():
        logits = modules[gate].logits
        logits.copy_(torch.where(keep.to(logits.device), LOGIT_ON, LOGIT_OFF).to(logits.dtype))


# -- training ------------------------------------------------------------------------------------

def internal_config(cfg: RunConfig) -> RunConfig:
    """The gated full network with fixed masks: every gate open, sampling hard, no penalty."""
    inner = copy.deepcopy(cfg)
    inner.model.gate_channels = True
    inner.gates = replace(inner.gates, sampling="hard", seed_fraction=1.0, seed_blocks="all",
                          s_on=LOGIT_ON)
    # λ stays 0 (no sparsity penalty); budget/usage = hard MACs / dense
    inner.budget = replace(inner.budget, lambda_base=0.0, metric="macs")
    # β is unused by hard gates
    inner.temperature = replace(inner.temperature, beta_final=inner.temperature.beta_0)
    inner.train.epochs = max(1, cfg.baseline.pretrain_epochs + cfg.baseline.finetune_epochs)
    return inner


def phase_schedule(inner: RunConfig, epochs: int, lr: float, warmup: int | None = None):
    """The schedule of one phase: `epochs` epochs at `lr`, the run's LR schedule shape."""
    schedule = copy.deepcopy(inner.train)
    schedule.epochs, schedule.lr = epochs, lr
    if warmup is not None:
        schedule.warmup_epochs = warmup
    return schedule


def pretraining_key(cfg: RunConfig) -> str:
    """What decides a pruning run's pre-training: its whole identity but `baseline.prune_target`
    and its name (the seed, the schedules, the criterion and its regulariser all count). Runs
    with the same key pre-train the same dense network."""
    common = copy.deepcopy(cfg)
    common.baseline.prune_target, common.variant = 1.0, "pruning"
    return config_hash(common)


def train_pruning_baseline(cfg: RunConfig, data: DataBundle, device: torch.device, task: Task,
                           on_epoch=None, progress: bool = True, *, checkpoints=None,
                           resume: dict | None = None, shared=None) -> TrainState:
    """Pre-train (or load the shared pre-training, see the module doc), prune, fine-tune."""
    b = cfg.baseline
    inner = internal_config(cfg)
    state = build(inner, data, device)
    model, controller = state.model, state.controller
    gates = prunable_gates(model, b.scope)
    if not gates:
        raise ConfigError(f"baseline.scope = {b.scope!r}: {cfg.model.name} has no prunable channel "
                          f"gates in that scope; use scope: all")
    pretrained = None
    if resume is not None:
        state.load_state_dict(resume)
    else:
        if on_epoch is not None:
            on_epoch(0, {**controller.architecture_stats(), contract.PHASE: 0.0}, controller)
        pretrained = shared.load() if shared is not None else None
        if pretrained is not None:
            state.load_state_dict(pretrained)     # its RNG state too: fine-tuning goes on as if
            for step, stats in enumerate(state.history, 1):     # it had pre-trained here
                if on_epoch is not None:
                    on_epoch(step, stats, controller)
    label = f"{cfg.model.name}/{cfg.variant}/s{cfg.seed}"

    if state.phase == 0:
        regularizer = None
        if b.criterion == "slimming" and b.slimming_l1 > 0:
            regularizer = slimming_regularizer(model, gates, b.slimming_l1)
        pretrain = Phase(phase_schedule(inner, b.pretrain_epochs, cfg.train.lr),
                         regularizer=regularizer, extra_stats={contract.PHASE: 0.0},
                         name=" pretrain")
        run_epochs(state, pretrain, data, task, device, on_epoch, progress, label,
                   checkpoints=checkpoints)
        if shared is not None and pretrained is None:
            # fine-tuning starts fresh optimizers: the pre-training ones are not needed
            shared.save({**state.state_dict(), "optimizers": {}})
        masks, info = choose_masks(model, controller.costs, gates, b.criterion, b.prune_target)
        apply_masks(model, masks)
        info["prune/val_acc_before_finetune"] = \
            evaluate(model, data.val, task, use_amp(cfg.train, device))[task.main_metric]
        state.phase, state.extra["prune_info"] = 1, info
    finetune = Phase(phase_schedule(inner, b.finetune_epochs, b.finetune_lr, warmup=0),
                     extra_stats={contract.PHASE: 1.0, **state.extra["prune_info"]},
                     name=" finetune")
    run_epochs(state, finetune, data, task, device, on_epoch, progress, label,
               checkpoints=checkpoints)
    return state

__all__ = ["apply_masks", "bisect_ratio", "bisect_threshold", "choose_masks", "kept_channels",
           "l1_scores", "prunable_gates", "pretraining_key", "ratio_masks", "slimming_regularizer",
           "slimming_scores", "threshold_masks", "train_pruning_baseline"]
