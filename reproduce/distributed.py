"""One run on several processes (GPUs): torchrun + DistributedDataParallel, as torchvision's
reference scripts do it.

    torchrun --nproc_per_node=8 -m reproduce run experiments/table-imagenet.yaml --profile paper

`init_from_env` reads torchrun's variables (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT);
without them everything here is a no-op and a run is one process, as before. What the suite
relies on:
  - every rank draws the same gates at every step: the gate generator is seeded from the run seed
    alone (method/growth.py), and the logits stay equal because DDP averages their gradients;
  - each rank reads its own shard of the data (reproduce/data); metrics are summed over ranks;
  - rank 0 alone talks to MLflow and writes checkpoints (runner.py).
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch import nn


def init_from_env() -> bool:
    """Join the process group torchrun describes; False when not launched by torchrun."""
    if dist.is_available() and dist.is_initialized():
        return True
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or not dist.is_available():
        return False
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(local_rank())
    dist.init_process_group("nccl" if cuda else "gloo")
    return True


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main() -> bool:
    return rank() == 0


def all_reduce_sum(values: list[torch.Tensor]) -> list[torch.Tensor]:
    """Elementwise sums over ranks of same-shaped tensors (one collective for all of them)."""
    if not is_distributed() or not values:
        return values
    flat = torch.cat([v.detach().reshape(-1).double().cpu() for v in values])
    device = torch.device("cuda", torch.cuda.current_device()) \
        if dist.get_backend() == "nccl" else torch.device("cpu")
    flat = flat.to(device)
    dist.all_reduce(flat)
    out, i = [], 0
    for v in values:
        out.append(flat[i:i + v.numel()].reshape(v.shape).to(v.device, v.dtype))
        i += v.numel()
    return out


def average_batchnorm_stats(model: nn.Module) -> None:
    """Mean of every BatchNorm's running statistics over ranks (after a re-estimation from each
    rank's own batches), so every rank evaluates and exports the same network."""
    if not is_distributed():
        return
    bns = [m for m in model.modules()
           if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None]
    stats = [t for m in bns for t in (m.running_mean, m.running_var)]
    for t, s in zip(stats, all_reduce_sum(stats)):
        t.copy_(s / world_size())


def broadcast_object(obj=None):
    """rank 0's `obj` on every rank."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    """The module the training loop calls: DDP around `model` when distributed, else `model`.

    find_unused_parameters: a structure that is closed (hard gates, a frozen mask) leaves its
    logits out of the graph, which plain DDP reports as an error. The growth controller, the
    costs and the checkpoints keep working on the unwrapped `model`.
    """
    if not is_distributed():
        return model
    from torch.nn.parallel import DistributedDataParallel as DDP
    ids = [device.index] if device.type == "cuda" else None
    return DDP(model, device_ids=ids, find_unused_parameters=True)
