"""The training loop: one run of the method (or of a dense baseline) from a resolved config.

Plain PyTorch. Whoever calls `train` decides what to do with each epoch's numbers through the
`on_epoch` callback (the runner sends them to MLflow; tests just collect them). `run_epochs` is
the epoch loop itself; the pruning baselines (reproduce/baselines.py) reuse it for their
pre-training and fine-tuning phases.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .config import RunConfig
from .data import DataBundle, build_data
from .method import GrowthController
from .models import create_model


@dataclass
class TrainResult:
    model: nn.Module
    controller: GrowthController
    history: list[dict] = field(default_factory=list)

    @property
    def final(self) -> dict:
        return self.history[-1] if self.history else {}


# on_epoch(step, stats, controller): step 0 is the seed before training, step e follows epoch e
EpochCallback = Callable[[int, dict, GrowthController], None]


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def build(cfg: RunConfig, data: DataBundle, device: torch.device) -> tuple[nn.Module, GrowthController]:
    """The gated model and its growth controller, seeded as the config says."""
    torch.manual_seed(cfg.seed)
    gated = cfg.method != "dense"       # the dense baseline is the model without gates
    model = create_model(cfg.model.name, num_classes=data.num_classes, in_channels=data.in_channels,
                         width_multiplier=cfg.model.width_multiplier,
                         gate_channels=gated and cfg.model.gate_channels,
                         gate_blocks=gated and cfg.model.gate_blocks)
    model.to(device)
    if cfg.train.channels_last:
        model.to(memory_format=torch.channels_last)
    g, t, b = cfg.gates, cfg.temperature, cfg.budget
    controller = GrowthController(
        model, (data.in_channels, data.image_size, data.image_size), epochs=cfg.train.epochs,
        sampling=g.sampling, seed_fraction=g.seed_fraction, seed_blocks=g.seed_blocks,
        seed_selection=g.seed_selection, s_on=g.s_on, s_off=g.s_off, min_channels=g.min_channels,
        temperature=t.schedule, beta_0=t.beta_0, beta_final=t.beta_final, beta_decay=t.decay,
        budget=b.metric, target=b.target, lambda_base=b.lambda_base, usage=b.usage, cost=b.cost,
        normalize=b.normalize, growth_push=b.growth_push, seed=cfg.seed)
    return model, controller


def lr_factor(cfg: RunConfig, progress: float) -> float:
    """LR multiplier at `progress` epochs (fractional) into training."""
    tc = cfg.train
    if tc.warmup_epochs and progress < tc.warmup_epochs:
        return (progress + 1e-3) / tc.warmup_epochs
    if tc.lr_schedule == "constant":
        return 1.0
    if tc.lr_schedule == "step":
        return tc.lr_gamma ** sum(progress >= m * tc.epochs for m in tc.milestones)
    span = max(1e-8, tc.epochs - tc.warmup_epochs)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, (progress - tc.warmup_epochs) / span)))


@torch.no_grad()
def evaluate(model: nn.Module, batches, amp: bool = False) -> tuple[float, float]:
    """(top-1 %, mean loss) with hard gates."""
    model.eval()
    correct = total = 0
    loss_sum = 0.0
    for x, y in batches:
        with torch.autocast(x.device.type, torch.bfloat16, enabled=amp):
            out = model(x)
        loss_sum += float(F.cross_entropy(out.float(), y, reduction="sum"))
        correct += int((out.argmax(1) == y).sum())
        total += y.numel()
    return 100.0 * correct / max(1, total), loss_sum / max(1, total)


def train(cfg: RunConfig, data: DataBundle | None = None, on_epoch: EpochCallback | None = None,
          progress: bool = True) -> TrainResult:
    device = pick_device(cfg.train.device)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    data = data or build_data(cfg.data, device, seed=cfg.seed)
    if cfg.method == "prune":
        from .baselines import train_pruning_baseline
        return train_pruning_baseline(cfg, data, device, on_epoch, progress)
    model, controller = build(cfg, data, device)
    result = TrainResult(model, controller)
    if on_epoch is not None:       # step 0: the seed architecture, before any training
        on_epoch(0, controller.architecture_stats(), controller)
    run_epochs(cfg, model, controller, data, device, result, on_epoch, progress)
    return result


def run_epochs(cfg: RunConfig, model: nn.Module, controller: GrowthController, data: DataBundle,
               device: torch.device, result: TrainResult, on_epoch: EpochCallback | None = None,
               progress: bool = True, *, train_masks: bool = True, first_step: int = 1,
               regularizer: Callable[[], torch.Tensor] | None = None,
               extra_stats: dict | None = None, desc: str = "") -> None:
    """Train `cfg.train.epochs` epochs at `cfg.train.lr` with cfg's LR schedule (fresh optimizers).

    The method and the baselines share this loop. train_masks=False freezes the mask logits (no
    mask optimizer: a pruned net's fixed masks). `regularizer()` is added to the loss (e.g.
    network slimming's L1 on BN scales). Epoch e's stats go to on_epoch(first_step + e, ...) with
    `extra_stats` merged in, and to result.history.
    """
    tc = cfg.train
    amp = tc.amp and device.type == "cuda"
    opt_w = torch.optim.SGD(controller.weight_parameters(), lr=tc.lr, momentum=tc.momentum,
                            nesterov=tc.nesterov and tc.momentum > 0, weight_decay=tc.weight_decay)
    masks = controller.mask_parameters()
    opt_m = torch.optim.SGD(masks, lr=cfg.gates.mask_lr, momentum=cfg.gates.mask_momentum) \
        if train_masks and masks and cfg.gates.mask_lr > 0 else None
    steps_per_epoch = max(1, len(data.train))

    bar = _progress(range(tc.epochs), progress, cfg, desc)
    for epoch in bar:
        controller.start_epoch()
        model.train()
        start = time.perf_counter()
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device)
        seen = 0
        for i, (x, y) in enumerate(data.train):
            factor = lr_factor(cfg, epoch + i / steps_per_epoch)
            for opt, base in ((opt_w, tc.lr), (opt_m, cfg.gates.mask_lr)):
                if opt is not None:
                    for group in opt.param_groups:
                        group["lr"] = base * factor
            if tc.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            controller.sample()
            with torch.autocast(device.type, torch.bfloat16, enabled=amp):
                out = model(x)
                loss = F.cross_entropy(out.float(), y, label_smoothing=tc.label_smoothing)
            total = loss + controller.penalty()
            if regularizer is not None:
                total = total + regularizer()
            opt_w.zero_grad(set_to_none=True)
            if opt_m is not None:
                opt_m.zero_grad(set_to_none=True)
            total.backward()
            opt_w.step()
            if opt_m is not None:
                opt_m.step()
            controller.after_step(y.numel())
            loss_sum += loss.detach() * y.numel()
            correct += (out.detach().argmax(1) == y).sum()
            seen += y.numel()
        if not math.isfinite(float(loss_sum)):
            raise FloatingPointError(f"training loss is not finite in epoch {epoch}; "
                                     f"lower train.lr or budget.lambda_base")
        val_acc, val_loss = evaluate(model, data.val, amp)
        stats = {"val/acc": val_acc, "val/loss": val_loss,
                 "train/loss": float(loss_sum) / max(1, seen),
                 "train/acc": 100.0 * float(correct) / max(1, seen),
                 "lr": tc.lr * lr_factor(cfg, epoch + 1 - 1e-9),
                 "time/epoch_s": time.perf_counter() - start}
        stats.update(controller.end_epoch())
        if extra_stats:
            stats.update(extra_stats)
        result.history.append(stats)
        if on_epoch is not None:
            on_epoch(first_step + epoch, stats, controller)   # step = epochs completed
        if hasattr(bar, "set_postfix"):
            bar.set_postfix(acc=f"{val_acc:.1f}", macs=f"{stats['budget/usage']:.2f}",
                            lam=f"{stats['budget/lambda']:+.3f}", refresh=False)


def _progress(it, enabled: bool, cfg: RunConfig, desc: str = ""):
    if not enabled:
        return it
    from tqdm.auto import tqdm
    return tqdm(it, desc=f"{cfg.model.name}/{cfg.variant}/s{cfg.seed}{desc}", unit="epoch",
                dynamic_ncols=True)
