"""The training loop: one run of the method (or of a dense baseline) from a resolved config.

Plain PyTorch, readable top to bottom. `build` makes the run's `TrainState` (model, growth
controller, optimizers, epoch, history: the one object a checkpoint saves); `run_epochs` trains
it through one `Phase` (a stretch of epochs with one LR schedule and fresh optimizers); `train`
is the method's single phase. The `Task` decides the loss and the metrics. Whoever calls `train`
decides what to do with each epoch's numbers through `on_epoch` (the runner sends them to MLflow;
tests just collect them). The pruning baselines (baselines.py) build on these pieces; which
trainer a run uses is chosen by the runner's table, not here.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from torch import nn

from . import contract, distributed
from .config import RunConfig, TrainConfig
from .data import DataBundle
from .launch.devices import physical_gpu
from .method import GrowthController
from .models import create_model
from .tasks import Task

@dataclass
class TrainState:
    """Everything a run is made of while it trains: what a checkpoint saves and a resume loads."""
    model: nn.Module
    controller: GrowthController
    opt_weights: torch.optim.Optimizer | None = None
    opt_masks: torch.optim.Optimizer | None = None
    scaler: torch.amp.GradScaler | None = None   # unused with bf16 autocast; kept for fp16
    epoch: int = 0                     # epochs completed, over every phase (= the tracked step)
    phase: int = 0                     # index of the current phase (the baselines have two)
    phase_start: int = 0               # the epoch the current phase started at
    history: list[dict] = field(default_factory=list)
    extra: dict = field(default_factory=dict)    # what a trainer needs to resume (e.g. prune info)
    # set by load_state_dict, consumed by the loop: optimizer states for the phase being resumed,
    # and where inside an epoch a checkpoint was taken ({"batch": k, "meter": ...})
    pending_optimizers: dict | None = None
    position: dict | None = None

    @property
    def final(self) -> dict:
        return self.history[-1] if self.history else {}

    def state_dict(self) -> dict:
        opt = {k: o.state_dict() for k, o in (("weights", self.opt_weights),
                                                ("masks", self.opt_masks)) if o is not None}
        return {"model": self.model.state_dict(), "controller": self.controller.state_dict(),
                "optimizers": opt, "scaler": self.scaler.state_dict() if self.scaler else None,
                "epoch": self.epoch, "phase": self.phase, "phase_start": self.phase_start,
                "history": list(self.history), "extra": dict(self.extra), "rng": rng_state()}

    def load_state_dict(self, state: dict) -> None:
        """Restore a checkpoint; optimizers are restored when their phase restarts."""
        self.model.load_state_dict(state["model"])
        self.controller.load_state_dict(state["controller"])
        self.pending_optimizers = state["optimizers"]
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.epoch, self.phase = state["epoch"], state["phase"]
        self.phase_start = state["phase_start"]
        self.history, self.extra = list(state["history"]), dict(state["extra"])
        self.position = state.get("position")
        set_rng_state(state["rng"])


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": np.random.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@dataclass
class Phase:
    """A stretch of epochs with one LR schedule and fresh optimizers.

    The method trains in one phase; the pruning baselines pre-train, prune, then fine-tune.
    `mask_lr` 0 freezes the mask logits (no mask optimizer: a pruned net's fixed masks);
    `regularizer()` is added to the loss (e.g. network slimming's L1 on BN scales);
    `extra_stats` are merged into every epoch's stats. `recalibrate_bn` training batches
    re-estimate BatchNorm statistics for the hard architecture before each evaluation.
    """
    schedule: TrainConfig
    mask_lr: float = 0.0
    mask_momentum: float = 0.9
    recalibrate_bn: int = 0
    regularizer: Callable[[], torch.Tensor] | None = None
    extra_stats: dict = field(default_factory=dict)
    name: str = ""


# on_epoch(step, stats, controller): step 0 is the seed before training, step e follows epoch e
EpochCallback = Callable[[int, dict, GrowthController], None]


class Checkpoints:
    """Where the loop saves its state: after every epoch, and within an epoch when `due()`.
    The runner's implementation writes atomically beside the tracking store (runner.py)."""

    def due(self) -> bool:
        return False

    def save(self, state: TrainState, position: dict | None = None) -> None:
        """`position` is None at the end of an epoch, else {"batch": k, "meter": ...}."""


def pick_device(name: str) -> torch.device:
    """`auto`: a GPU where there is one (under torchrun each process its own), else the CPU."""
    if name == "auto":     # under torchrun, each process its own GPU
        return torch.device("cuda", distributed.local_rank()) if torch.cuda.is_available() \
            else torch.device("cpu")
    return torch.device(name)


def device_label(device: torch.device) -> str:
    """What a run's wall-clock times were measured on (tracked as the `device` tag)."""
    if device.type == "cuda":        # the machine's GPU number, as nvidia-smi shows it
        index = device.index if device.index is not None else torch.cuda.current_device()
        return f"{torch.cuda.get_device_name(device)} (GPU {physical_gpu(index)})"
    return f"{device.type} ({threads_label(torch.get_num_threads())})"


def threads_label(n: int) -> str:
    return f"{n} thread" if n == 1 else f"{n} threads"


def use_amp(tc: TrainConfig, device: torch.device) -> bool:
    """Whether a phase computes in bf16 autocast: when `train.amp` asks and it runs on CUDA."""
    return tc.amp and device.type == "cuda"


def autocast(device_type: str, amp: bool):
    """The forward's precision context: bf16 autocast when `amp`, else a no-op."""
    return torch.autocast(device_type, torch.bfloat16, enabled=amp)


def build(cfg: RunConfig, data: DataBundle, device: torch.device) -> TrainState:
    """The run's model and growth controller, seeded as the config says (no optimizers yet)."""
    torch.manual_seed(cfg.seed)
    gated = cfg.method != "dense"       # the dense baseline is the model without gates
    model = create_model(cfg.model.name, num_classes=data.num_classes, in_channels=data.in_channels,
                         width_multiplier=cfg.model.width_multiplier,
                         gate_channels=gated and cfg.model.gate_channels,
                         gate_blocks=gated and cfg.model.gate_blocks,
                         **({"zero_init_residual": True} if cfg.model.zero_init_residual else {}))
    model.to(device)
    if cfg.train.channels_last:
        model.to(memory_format=torch.channels_last)
    controller = GrowthController(model, (data.in_channels, data.image_size, data.image_size),
                                  epochs=cfg.train.epochs, gates=cfg.gates,
                                  temperature=cfg.temperature, budget=cfg.budget, rng_seed=cfg.seed,
                                  execution=cfg.train.execution if cfg.method == "grow"
                                  else "masked",
                                  channel_multiple=cfg.train.channel_multiple)
    return TrainState(model, controller)


def lr_factor(tc: TrainConfig, progress: float) -> float:
    """LR multiplier at `progress` epochs (fractional) into a phase scheduled by `tc`."""
    if tc.warmup_epochs and progress < tc.warmup_epochs:
        return (progress + 1e-3) / tc.warmup_epochs
    if tc.lr_schedule == "constant":
        return 1.0
    if tc.lr_schedule == "exponential":
        start = round(tc.milestones[0] * tc.epochs) if tc.milestones else 0
        return tc.lr_gamma ** max(0, math.floor(progress) - start + 1)
    if tc.lr_schedule == "step":
        return tc.lr_gamma ** sum(progress >= m * tc.epochs for m in tc.milestones)
    span = max(1e-8, tc.epochs - tc.warmup_epochs)
    if tc.lr_schedule == "poly":
        return max(0.0, 1 - (progress - tc.warmup_epochs) / span) ** tc.lr_power
    return 0.5 * (1 + math.cos(math.pi * min(1.0, (progress - tc.warmup_epochs) / span)))


@torch.no_grad()
def evaluate(model: nn.Module, batches, task: Task, amp: bool = False) -> dict[str, float]:
    """The task's validation metrics with hard gates (`val/acc`, `val/loss`, ... for classification)."""
    model.eval()
    reset_state(model)
    meter = task.meter("val")
    for x, y in batches:
        with autocast(x.device.type, amp):
            out = model(x)
        meter.update(out, y)
    meter.all_reduce()              # each rank saw its shard of the validation set
    return meter.compute()


def reset_state(model: nn.Module) -> None:
    """Start a pass over a corpus: a recurrent model forgets the hidden state it carries from one
    window to the next (models without state have nothing to reset)."""
    reset = getattr(getattr(model, "module", model), "reset_state", None)   # DDP wraps models
    if reset is not None:
        reset()


def train(cfg: RunConfig, data: DataBundle, device: torch.device, task: Task,
          on_epoch: EpochCallback | None = None, progress: bool = True, *,
          checkpoints: Checkpoints | None = None, resume: dict | None = None) -> TrainState:
    """The method (or the dense baseline): one phase of `cfg.train.epochs` epochs.

    `resume` is a checkpoint saved through `checkpoints`: training continues from it exactly
    (on CPU the resumed run's numbers equal an uninterrupted run's)."""
    state = build(cfg, data, device)
    if resume is not None:
        state.load_state_dict(resume)
    elif on_epoch is not None:     # step 0: the seed architecture, before any training
        on_epoch(0, state.controller.architecture_stats(), state.controller)
    phase = Phase(cfg.train, mask_lr=cfg.gates.mask_lr, mask_momentum=cfg.gates.mask_momentum,
                  recalibrate_bn=cfg.gates.bn_recalibrate if cfg.method == "grow" else
                  cfg.train.dense_bn_recalibrate if cfg.method == "dense" else 0)
    run_epochs(state, phase, data, task, device, on_epoch, progress, label=_label(cfg),
               checkpoints=checkpoints)
    return state


def start_phase(state: TrainState, phase: Phase) -> None:
    """Optimizers for a phase: SGD on the weights, and on the mask logits unless frozen; fresh,
    or restored from the checkpoint being resumed."""
    tc = phase.schedule
    weights: list = state.controller.weight_parameters()
    if tc.head_lr_scale != 1.0:     # two groups: the classifier's lr is lr × head_lr_scale
        head = {id(p) for p in head_parameters(state.model)}
        weights = [{"params": [p for p in weights if id(p) not in head]},
                   {"params": [p for p in weights if id(p) in head], "lr_scale": tc.head_lr_scale}]
    state.opt_weights = torch.optim.SGD(
        weights, lr=tc.lr, momentum=tc.momentum,
        nesterov=tc.nesterov and tc.momentum > 0, weight_decay=tc.weight_decay)
    masks = state.controller.mask_parameters()
    state.opt_masks = torch.optim.SGD(masks, lr=phase.mask_lr, momentum=phase.mask_momentum) \
        if masks and phase.mask_lr > 0 else None
    saved, state.pending_optimizers = state.pending_optimizers, None
    for key, opt in (("weights", state.opt_weights), ("masks", state.opt_masks)):
        if saved and opt is not None and key in saved:
            opt.load_state_dict(saved[key])


def head_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The weights of the model's classifier: the modules of its sites with role "head"."""
    names = {site.name for site in model.sites() if site.role == "head"}
    if not names:
        raise ValueError(f"{type(model).__name__} declares no head site (train.head_lr_scale)")
    return [p for name in sorted(names) for p in model.get_submodule(name).parameters()]


def train_step(net: nn.Module, controller: GrowthController, optimizers, x: torch.Tensor,
               y: torch.Tensor, loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
               samples: int, *, amp: bool = False,
               regularizer: Callable[[], torch.Tensor] | None = None,
               clip: tuple[list, float] | None = None,
               replay: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One iteration of the method: sample the gates (or `replay` given samples), forward and
    loss, plus the budget penalty and the phase's regularizer, backward, the controller's
    gradient completion (restructured execution), gradient clipping (`clip`: parameters, max
    norm), the optimizers' steps (`optimizers`: weights, then masks; None: frozen), then the
    controller's per-iteration accounting of `samples` samples. Returns the output and the loss."""
    controller.sample(replay)
    with autocast(x.device.type, amp):
        out = net(x)
        loss = loss_fn(out, y)
    total = loss + controller.penalty()
    if regularizer is not None:
        total = total + regularizer()
    optimizers = [opt for opt in optimizers if opt is not None]
    for opt in optimizers:
        opt.zero_grad(set_to_none=True)
    total.backward()
    controller.after_backward()
    if clip is not None:
        torch.nn.utils.clip_grad_norm_(*clip)
    for opt in optimizers:
        opt.step()
    controller.after_step(samples)
    return out, loss


def run_epochs(state: TrainState, phase: Phase, data: DataBundle, task: Task,
               device: torch.device, on_epoch: EpochCallback | None = None,
               progress: bool = True, label: str = "", *,
               checkpoints: Checkpoints | None = None) -> None:
    """Train the epochs of one phase; epoch e's stats go to on_epoch and to state.history.

    A state restored from a checkpoint continues where it stopped: at its epoch within this
    phase, and inside that epoch after the batches already trained."""
    tc = phase.schedule
    model, controller = state.model, state.controller
    net = distributed.wrap(model, device)      # what runs forward; the controller keeps `model`
    world = distributed.world_size()           # training cost counts the global batch
    amp = use_amp(tc, device)
    resuming = state.pending_optimizers is not None
    if not resuming:
        state.phase_start = state.epoch
    start_phase(state, phase)
    opt_w, opt_m = state.opt_weights, state.opt_masks
    steps_per_epoch = max(1, len(data.train))
    checkpoints = checkpoints or Checkpoints()
    clip = (controller.weight_parameters(), tc.grad_clip) if tc.grad_clip > 0 else None

    bar = _progress(range(state.epoch - state.phase_start, tc.epochs), progress,
                    f"{label}{phase.name}", done=state.epoch - state.phase_start, total=tc.epochs)
    for epoch in bar:
        position, state.position = state.position, None
        if position is None:
            controller.start_epoch()   # (a mid-epoch checkpoint was taken after it)
        if hasattr(data.train, "epoch"):
            data.train.epoch = state.epoch          # the data order of this epoch, on resume too
        model.train()
        reset_state(model)     # (a resumed epoch restarts its carried state from zeros)
        start, cpu_start = _clock(device)
        meter = task.meter("train")
        skip = 0
        if position is not None:
            meter.load_state_dict(position["meter"])
            skip = position["batch"]
        for i, (x, y) in enumerate(data.train):
            if i < skip:
                continue
            factor = lr_factor(tc, epoch + i / steps_per_epoch)
            for opt, base in ((opt_w, tc.lr), (opt_m, phase.mask_lr)):
                if opt is not None:
                    for group in opt.param_groups:
                        group["lr"] = base * factor * group.get("lr_scale", 1.0)
            if tc.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            out, loss = train_step(net, controller, (opt_w, opt_m), x, y, task.loss,
                                   task.samples(y) * world, amp=amp, regularizer=phase.regularizer,
                                   clip=clip)
            meter.update(out, y, loss)
            if checkpoints.due():
                checkpoints.save(state, {"batch": i + 1, "meter": meter.state_dict()})
        meter.all_reduce()
        train_stats = meter.compute()
        if not math.isfinite(train_stats.get(contract.TRAIN_LOSS, 0.0)):
            raise FloatingPointError(f"training loss is not finite in epoch {epoch}; "
                                     f"lower train.lr or budget.lambda_base")
        controller.recalibrate_bn(data.train, phase.recalibrate_bn)   # BN of the evaluated net
        distributed.average_batchnorm_stats(model)       # (on every rank the same)
        with controller.hard_architecture():   # restructured: only what is on is computed
            val_stats = evaluate(model, data.val, task, amp)
        stats = {**val_stats, **train_stats, contract.LR: tc.lr * lr_factor(tc, epoch + 1 - 1e-9)}
        stats.update(epoch_times(device, start, cpu_start, state.history))
        stats.update(controller.end_epoch())
        stats.update(phase.extra_stats)
        state.epoch += 1
        state.history.append(stats)
        if on_epoch is not None:
            on_epoch(state.epoch, stats, controller)   # step = epochs completed
        checkpoints.save(state)
        if hasattr(bar, "set_postfix"):
            bar.set_postfix(metric=f"{stats[task.main_metric]:.1f}",
                            macs=f"{stats[contract.USAGE]:.2f}",
                            lam=f"{stats[contract.LAMBDA]:+.3f}", refresh=False)


def _clock(device: torch.device) -> tuple[float, float]:
    """(wall clock, process CPU time) now; on a GPU after the work queued so far has run, so an
    epoch's time is the time its own work took."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter(), time.process_time()


def epoch_times(device: torch.device, start: float, cpu_start: float,
                history: list[dict]) -> dict[str, float]:
    """The epoch's wall clock since `start` (and on CPU its process CPU time since `cpu_start`),
    and the totals over the run's earlier epochs (`history`) and this one.

    The wall clock is the time a user waits; on a machine shared with other work it also counts
    the time other processes held the cores. The CPU time of a CPU run counts only this
    process's own work (all its threads; data-loading worker processes not), so it is the
    measure to compare across runs on a shared machine. On a GPU the device is synchronised at
    both ends of the epoch and the wall clock is the measure (the host's CPU time mostly waits
    for the device)."""
    wall, cpu = _clock(device)
    out = {contract.EPOCH_TIME: wall - start}
    out[contract.TRAIN_TIME_TOTAL] = out[contract.EPOCH_TIME] + sum(
        h.get(contract.EPOCH_TIME, 0.0) for h in history)
    if device.type == "cpu":
        out[contract.EPOCH_CPU_TIME] = cpu - cpu_start
        out[contract.TRAIN_CPU_TIME_TOTAL] = out[contract.EPOCH_CPU_TIME] + sum(
            h.get(contract.EPOCH_CPU_TIME, 0.0) for h in history)
    return out


def _label(cfg: RunConfig) -> str:
    return f"{cfg.model.name}/{cfg.variant}/s{cfg.seed}"


def _progress(it, enabled: bool, desc: str, done: int = 0, total: int | None = None):
    if not enabled:
        return it
    from tqdm.auto import tqdm
    return tqdm(it, desc=desc, unit="epoch", dynamic_ncols=True, initial=done, total=total)
