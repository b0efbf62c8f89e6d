"""An AutoGrow-style layer-growing baseline, trained under the method's tracking and cost accounting.

AutoGrow (Wen et al. 2020) starts from a shallow seed (one sub-module per stage), stacks new,
randomly initialised sub-modules periodically while training at a constant large learning rate,
and stops growing once growth no longer improves validation accuracy; the grown net then trains
on with a decaying learning rate. This module implements that growth policy (not AutoGrow's
code) on the suite's block-gated models:

  1. seed: `gates.seed_blocks` blocks per stage on (default one_per_stage), every other block
     closed (a closed residual block is the identity, a closed plain sub-module passes its input
     through);
  2. growth step: train `autogrow.interval` (K) epochs at the constant `train.lr`; then, while
     growing, open the next closed block of every stage not yet at its maximum depth (the
     model's name gives the maximum, e.g. basic3resnet-8-8-8), with freshly initialised weights
     (He-normal convs, unit BN: AutoGrow's Gaussian initialisation);
  3. stopping: after each interval the validation accuracy is compared with the best one after
     earlier intervals; an interval that does not beat it by `autogrow.min_delta` points is a
     strike, and `autogrow.patience` (P) strikes in a row stop growth; growth also ends as soon
     as every stage is at its maximum depth. The blocks added by unsuccessful steps are kept
     (they have trained);
  4. then `train.epochs` epochs with the run's LR schedule, fresh optimizers.
Every growth step adds one block to every growing stage at once (AutoGrow's periodic policy
grows all sub-networks together), so stages stop together unless one reaches its maximum.
Not implemented: AutoGrow's convergent policy (grow only once the current net has converged)
and its other initialisers (zero, Adam-based).

A grown network is the gated model with block gates at ±1, no channel gates, and sampling mode
"hard" (g = 1[s > 0] in training too), with no mask optimizer: CostModel, export, architecture
summaries and `blocks/stage<k>` work unchanged, and the training cost counts what was really
trained (the blocks open in each iteration). Closed blocks are still computed and multiplied by
zero in masked execution; they cost nothing in the accounting, as for the method.

Steps reported to on_epoch: 0 = the seed before training, then every epoch, with the method's
keys plus `phase` (0 growing, 1 training on) and `autogrow/step` (growth steps taken so far).
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field, replace

import torch

from . import contract
from .config import ConfigError, RunConfig
from .data import DataBundle
from .method import GatedModel, gates_of
from .models.layers import initialise
from .tasks import MAXIMIZE, Task
from .train import Phase, TrainState, build, run_epochs

LOGIT_ON, LOGIT_OFF = 1.0, -1.0


@dataclass
class GrowthPolicy:
    """When to grow and when to stop: one block per growing stage each step, P strikes stop.

    `observe(metric)` is called after each interval with the validation metric (higher is
    better; the trainer negates a metric to be minimised, so min_delta is then in its units) and
    returns whether to grow now.
    """
    patience: int
    min_delta: float
    best: float | None = None
    strikes: int = 0
    stopped: bool = False
    history: list[float] = field(default_factory=list)

    def observe(self, metric: float) -> bool:
        self.history.append(metric)
        if self.stopped:
            return False
        if self.best is None or metric >= self.best + self.min_delta:
            self.best, self.strikes = metric, 0
        else:
            self.best = max(self.best, metric)
            self.strikes += 1
            if self.strikes >= self.patience:
                self.stopped = True
                return False
        return True


def closed_blocks_by_stage(model: GatedModel) -> dict[int, list[str]]:
    """Per stage, the block gates still closed, in network order (the next to open first)."""
    gates = dict(gates_of(model))
    out: dict[int, list[str]] = {}
    for block in model.blocks():
        out.setdefault(block.stage, [])
        if block.gate is not None and not bool(gates[block.gate].hard().item()):
            out[block.stage].append(block.name)
    return out


@torch.no_grad()
def open_block(model: GatedModel, block_name: str) -> None:
    """Open one block: its gate's logit to +1 and fresh weights (AutoGrow's random init)."""
    modules = dict(model.named_modules())
    block = modules[block_name]
    initialise(block)
    gate = next(b.gate for b in model.blocks() if b.name == block_name)
    modules[gate].logits.fill_(LOGIT_ON)


def grow_step(model: GatedModel) -> list[str]:
    """Open the next closed block of every stage that has one; returns the blocks opened."""
    opened = []
    for stage, closed in sorted(closed_blocks_by_stage(model).items()):
        if closed:
            open_block(model, closed[0])
            opened.append(closed[0])
    return opened


def internal_config(cfg: RunConfig) -> RunConfig:
    """The block-gated network with fixed masks: seed blocks open, sampling hard, no penalty."""
    inner = copy.deepcopy(cfg)
    inner.model.gate_channels, inner.model.gate_blocks = False, True
    inner.gates = replace(inner.gates, sampling="hard", s_on=LOGIT_ON, s_off=LOGIT_OFF)
    # λ stays 0 (no sparsity penalty); budget/usage = hard MACs / dense
    inner.budget = replace(inner.budget, lambda_base=0.0, metric="macs")
    # β is unused by hard gates
    inner.temperature = replace(inner.temperature, beta_final=inner.temperature.beta_0)
    return inner


def growth_schedule(cfg: RunConfig):
    """One growth interval: K epochs at the constant train.lr (AutoGrow grows at a large,
    constant learning rate so that no shallow net converges before it grows)."""
    schedule = copy.deepcopy(cfg.train)
    schedule.epochs = cfg.autogrow.interval
    schedule.lr_schedule, schedule.warmup_epochs = "constant", 0
    return schedule


def train_autogrow(cfg: RunConfig, data: DataBundle, device: torch.device, task: Task,
                   on_epoch=None, progress: bool = True, *, checkpoints=None,
                   resume: dict | None = None) -> TrainState:
    inner = internal_config(cfg)
    state = build(inner, data, device)
    model, controller = state.model, state.controller
    if not model.removable_blocks():
        raise ConfigError(f"method autogrow: {cfg.model.name} has no removable blocks to grow; "
                          f"use basic3resnet-A-B-C or plain3net-A-B-C (A-B-C = maximum depth)")
    policy = GrowthPolicy(cfg.autogrow.patience, cfg.autogrow.min_delta)
    steps = 0
    if resume is not None:            # the growth policy and step count travel in the checkpoint
        state.load_state_dict(resume)
        policy, steps = GrowthPolicy(**state.extra["policy"]), state.extra["steps"]
    elif on_epoch is not None:
        on_epoch(0, {**controller.architecture_stats(), contract.PHASE: 0.0,
                     contract.GROWTH_STEP: 0.0}, controller)
    label = f"{cfg.model.name}/{cfg.variant}/s{cfg.seed}"
    while state.phase == 0:
        state.extra.update(policy=dataclasses.asdict(policy), steps=steps)
        interval = Phase(growth_schedule(inner), name=f" grow {steps}",
                         extra_stats={contract.PHASE: 0.0, contract.GROWTH_STEP: float(steps)})
        run_epochs(state, interval, data, task, device, on_epoch, progress, label,
                   checkpoints=checkpoints)
        if not policy.observe(state.final[task.main_metric] * task_sign(task)):
            break
        if not grow_step(model):
            break
        steps += 1
        if not any(closed_blocks_by_stage(model).values()):   # every stage at its maximum
            break
    state.phase, state.extra["steps"] = 1, steps
    final = Phase(copy.deepcopy(inner.train), name=" train on",
                  extra_stats={contract.PHASE: 1.0, contract.GROWTH_STEP: float(steps)})
    run_epochs(state, final, data, task, device, on_epoch, progress, label,
               checkpoints=checkpoints)
    return state


def task_sign(task: Task) -> float:
    """+1 when the task's main metric grows with quality (accuracy), −1 when it shrinks."""
    return 1.0 if task.direction(task.main_metric) == MAXIMIZE else -1.0


__all__ = ["GrowthPolicy", "closed_blocks_by_stage", "grow_step", "internal_config", "open_block",
           "train_autogrow"]
