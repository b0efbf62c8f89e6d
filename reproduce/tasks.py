"""Tasks: what a run optimises and how it is measured, apart from the training loop.

A task owns its loss, its metrics (names and whether higher is better) and its main metric. The
loop, the runner, the search and the figures ask the task, so segmentation (mIoU) or language
modelling (perplexity) plug in as new tasks without touching any of them.

    task = task_for(cfg, data)
    loss = task.loss(model(x), y)
    meter = task.meter("train"); meter.update(out, y, loss); meter.compute()  # {"train/acc": ...}
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from . import contract
from .data.registry import dataset

MAXIMIZE, MINIMIZE = "maximize", "minimize"


class Meter:
    """Accumulates a task's metrics over batches on the device; one host sync in `compute`.
    `state_dict`/`load_state_dict` carry a partial epoch across a checkpoint."""

    def update(self, out: Tensor, y: Tensor, loss: Tensor | None = None) -> None:
        raise NotImplementedError

    def compute(self) -> dict[str, float]:
        raise NotImplementedError

    def all_reduce(self) -> None:
        """Sum the accumulated counts over distributed ranks (a no-op in one process)."""

    def state_dict(self) -> dict:
        return dict(vars(self))

    def load_state_dict(self, state: dict) -> None:
        vars(self).update(state)


class Task:
    name: str = ""
    main_metric: str = ""                  # e.g. val/acc: what tables, searches and demos report
    directions: dict[str, str] = {}        # metric -> maximize | minimize

    def loss(self, out: Tensor, y: Tensor) -> Tensor:
        raise NotImplementedError

    def meter(self, split: str) -> Meter:
        """Metrics of one pass over `split` ("train" or "val"), named `<split>/<metric>`."""
        raise NotImplementedError

    def samples(self, y: Tensor) -> int:
        """How many samples a batch holds (what training cost is multiplied by)."""
        return int(y.shape[0])

    def direction(self, metric: str) -> str:
        return self.directions[metric]


class _ClassificationMeter(Meter):
    def __init__(self, split: str, topk: int, label_smoothing: float):
        self.split, self.topk, self.label_smoothing = split, topk, label_smoothing
        self.loss_sum = self.correct = self.correct_k = None
        self.seen = 0

    def update(self, out: Tensor, y: Tensor, loss: Tensor | None = None) -> None:
        out = out.detach().float()
        if loss is None:
            loss = F.cross_entropy(out, y, label_smoothing=self.label_smoothing)
        n = y.numel()
        top = out.topk(min(self.topk, out.shape[1]), dim=1).indices
        hits = top == y[:, None]
        batch = (loss.detach().float() * n, hits[:, 0].sum(), hits.any(1).sum())
        if self.loss_sum is None:
            self.loss_sum, self.correct, self.correct_k = batch
        else:
            self.loss_sum = self.loss_sum + batch[0]
            self.correct = self.correct + batch[1]
            self.correct_k = self.correct_k + batch[2]
        self.seen += n

    def all_reduce(self) -> None:
        from . import distributed
        if not distributed.is_distributed():
            return
        zero = torch.zeros(())
        sums = [torch.tensor(float(self.seen))] + [
            zero if v is None else v.float() for v in (self.loss_sum, self.correct, self.correct_k)]
        seen, *totals = distributed.all_reduce_sum(sums)
        self.seen = int(seen.item())
        self.loss_sum, self.correct, self.correct_k = totals

    def compute(self) -> dict[str, float]:
        n = max(1, self.seen)
        if self.loss_sum is None:
            return {f"{self.split}/acc": 0.0, f"{self.split}/loss": float("nan")}
        loss, c1, ck = (float(v) for v in torch.stack(
            [self.loss_sum, self.correct.float(), self.correct_k.float()]).cpu())
        out = {f"{self.split}/acc": 100.0 * c1 / n, f"{self.split}/loss": loss / n}
        if self.split == "val":
            out[contract.VAL_TOP5] = 100.0 * ck / n
        return out


@dataclass
class Classification(Task):
    """Image classification: cross-entropy (optional label smoothing), top-1 and top-5 in %.

    Top-5 is logged as `val/top5` (with fewer than 5 classes it is top-k over all classes, 100 %).
    """
    num_classes: int = 10
    label_smoothing: float = 0.0

    name = "classification"
    main_metric = contract.VAL_ACC
    directions = {contract.VAL_ACC: MAXIMIZE, contract.VAL_TOP5: MAXIMIZE,
                  contract.VAL_LOSS: MINIMIZE, contract.TRAIN_ACC: MAXIMIZE,
                  contract.TRAIN_LOSS: MINIMIZE}

    def loss(self, out: Tensor, y: Tensor) -> Tensor:
        return F.cross_entropy(out.float(), y, label_smoothing=self.label_smoothing)

    def meter(self, split: str) -> Meter:
        # validation loss is the plain cross-entropy; training loss is what was optimised
        return _ClassificationMeter(split, 5, self.label_smoothing if split == "train" else 0.0)


class _LanguageModelMeter(Meter):
    """Token-weighted mean cross-entropy over a whole stream, and its exponential."""

    def __init__(self, split: str):
        self.split = split
        self.loss_sum = None
        self.tokens = 0

    def update(self, out: Tensor, y: Tensor, loss: Tensor | None = None) -> None:
        if loss is None:
            loss = F.cross_entropy(out.detach().float().flatten(0, -2), y.flatten())
        n = y.numel()
        batch = loss.detach().float() * n
        self.loss_sum = batch if self.loss_sum is None else self.loss_sum + batch
        self.tokens += n

    def compute(self) -> dict[str, float]:
        if self.loss_sum is None:
            return {f"{self.split}/ppl": float("nan"), f"{self.split}/loss": float("nan")}
        mean = float(self.loss_sum.cpu()) / max(1, self.tokens)
        ppl = math.exp(mean) if mean < 700 else float("inf")
        return {f"{self.split}/ppl": ppl, f"{self.split}/loss": mean}


@dataclass
class LanguageModelling(Task):
    """Next-token prediction: cross-entropy per token; perplexity = exp(mean token loss) over the
    whole stream (lower is better). Outputs are (B, T, vocabulary), targets (B, T); a batch's
    samples are its tokens, so training MACs = MACs per token × tokens."""
    num_classes: int = 10000         # vocabulary size

    name = "language_modelling"
    main_metric = contract.VAL_PPL
    directions = {contract.VAL_PPL: MINIMIZE, contract.VAL_LOSS: MINIMIZE,
                  contract.TRAIN_PPL: MINIMIZE, contract.TRAIN_LOSS: MINIMIZE}

    def loss(self, out: Tensor, y: Tensor) -> Tensor:
        return F.cross_entropy(out.float().flatten(0, -2), y.flatten())

    def meter(self, split: str) -> Meter:
        return _LanguageModelMeter(split)

    def samples(self, y: Tensor) -> int:
        return int(y.numel())


class _SegmentationMeter(Meter):
    """A confusion matrix over every labelled pixel of the pass (void pixels left out); mIoU and
    pixel accuracy are computed from it once, at the end (not averaged over batches)."""

    def __init__(self, split: str, num_classes: int, ignore_index: int):
        self.split, self.k, self.ignore_index = split, num_classes, ignore_index
        self.confusion = self.loss_sum = self.pixels = None

    def update(self, out: Tensor, y: Tensor, loss: Tensor | None = None) -> None:
        out = out.detach()
        if loss is None:
            loss = F.cross_entropy(out.float(), y, ignore_index=self.ignore_index)
        valid = y != self.ignore_index
        pred = out.argmax(1)
        conf = torch.bincount(y[valid] * self.k + pred[valid], minlength=self.k ** 2)
        n = valid.sum()
        batch = (conf.view(self.k, self.k), loss.detach().float() * n, n)
        if self.confusion is None:
            self.confusion, self.loss_sum, self.pixels = batch
        else:
            self.confusion = self.confusion + batch[0]
            self.loss_sum = self.loss_sum + batch[1]
            self.pixels = self.pixels + batch[2]

    def compute(self) -> dict[str, float]:
        s = self.split
        if self.confusion is None:
            return {f"{s}/miou": 0.0, f"{s}/pixel_acc": 0.0, f"{s}/loss": float("nan")}
        return {**segmentation_scores(self.confusion.cpu(), s),
                f"{s}/loss": float(self.loss_sum.cpu()) / max(1, int(self.pixels.cpu()))}


def segmentation_scores(confusion: Tensor, split: str = "val") -> dict[str, float]:
    """mIoU (mean over the classes that occur in the labels or the predictions) and pixel
    accuracy, in percent, from a confusion matrix (rows: label, columns: prediction)."""
    conf = confusion.double()
    tp = conf.diag()
    union = conf.sum(0) + conf.sum(1) - tp
    present = union > 0
    miou = float((tp[present] / union[present]).mean()) if present.any() else 0.0
    acc = float(tp.sum() / conf.sum()) if conf.sum() > 0 else 0.0
    return {f"{split}/miou": 100.0 * miou, f"{split}/pixel_acc": 100.0 * acc}


@dataclass
class Segmentation(Task):
    """Semantic segmentation: pixel-wise cross-entropy with the void label ignored; mIoU (main)
    and pixel accuracy over the whole validation set, from one confusion matrix."""
    num_classes: int = 21
    ignore_index: int = 255

    name = "segmentation"
    main_metric = contract.VAL_MIOU
    directions = {contract.VAL_MIOU: MAXIMIZE, contract.VAL_PIXEL_ACC: MAXIMIZE,
                  contract.VAL_LOSS: MINIMIZE, contract.TRAIN_LOSS: MINIMIZE,
                  "train/miou": MAXIMIZE, "train/pixel_acc": MAXIMIZE}

    def loss(self, out: Tensor, y: Tensor) -> Tensor:
        return F.cross_entropy(out.float(), y, ignore_index=self.ignore_index)

    def meter(self, split: str) -> Meter:
        return _SegmentationMeter(split, self.num_classes, self.ignore_index)


TASKS = {"classification": Classification, "language_modelling": LanguageModelling,
         "segmentation": Segmentation}


def task_class(cfg) -> type[Task]:
    """Which task a run is: the one its dataset declares (reproduce/data/registry.py)."""
    name = dataset(cfg.data.dataset).task
    if name not in TASKS:
        raise ValueError(f"dataset {cfg.data.dataset!r} declares the task {name!r}; the known "
                         f"tasks are {', '.join(TASKS)}")
    return TASKS[name]


def task_for(cfg, data) -> Task:
    """The task object a run trains with."""
    cls = task_class(cfg)
    if cls in (LanguageModelling, Segmentation):
        return cls(num_classes=data.num_classes)
    return cls(num_classes=data.num_classes, label_smoothing=cfg.train.label_smoothing)
