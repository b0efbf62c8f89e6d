"""Gates: the continuous relaxation of a network's discrete structure.

Each gate owns n structures (the output channels of a conv, or one block: a residual block,
x + g·F(x), or a plain sub-module, g·F(x) + (1−g)·x). Structure i
has a trainable logit s_i and a temperature β_i; its probability of being on is p_i = σ(β_i·s_i).

In training the gate value depends on the sampling mode:
  bernoulli         q_i ~ Bernoulli(p_i), g_i = q_i·p_i   (gradient reaches s_i through p_i when q_i = 1)
  straight_through  forward g_i = q_i, backward as if g_i = p_i
  deterministic     g_i = p_i                           (no sampling: plain structured CS)
  hard              g_i = 1[s_i > 0]                    (fixed masks, e.g. fine-tuning a pruned net)
In evaluation and export the gate is hard: g_i = 1[s_i > 0].

q is drawn once per iteration for the whole batch (`sample_gates`; the growth controller can hold
it for `resample_every` iterations), from a generator the caller seeds identically on every
distributed rank, so all ranks train the same sub-network.
"""

from __future__ import annotations

from typing import Iterable

import torch
from torch import Tensor, nn

from .options import SAMPLING_MODES


class Gate(nn.Module):
    """n gated structures with logits s and temperatures β (β is a buffer, moved by schedules)."""

    def __init__(self, n: int, sampling: str = "bernoulli", min_active: int = 0):
        super().__init__()
        self.logits = nn.Parameter(torch.zeros(n))
        self.register_buffer("beta", torch.ones(n))
        self.register_buffer("sample", torch.ones(n))   # the current q, redrawn every iteration
        self.sampling = sampling
        # at least this many structures stay on (the highest logits), in the hard architecture and
        # in every sample: a gate that closes completely can disconnect the whole network
        self.min_active = min(min_active, n)

    @property
    def n(self) -> int:
        return self.logits.numel()

    def probs(self) -> Tensor:
        return torch.sigmoid(self.beta * self.logits)

    def hard(self) -> Tensor:
        h = (self.logits > 0).to(self.logits.dtype)
        if self.min_active:          # no branch on the values: no device sync
            h = h.index_fill(0, self.logits.detach().topk(self.min_active).indices, 1.0)
        return h

    def active_indices(self) -> Tensor:
        """Indices of the structures that are on in the hard architecture."""
        return torch.nonzero(self.hard().detach() > 0).flatten()

    def value(self) -> Tensor:
        if not self.training or self.sampling == "hard":
            return self.hard()
        p = self.probs()
        if self.sampling == "deterministic":
            return p
        q = self.sample
        if self.sampling == "bernoulli":
            return q * p
        return q + (p - p.detach())                     # straight-through

    def extra_repr(self) -> str:
        return f"n={self.n}, sampling={self.sampling}"


class ChannelGate(Gate):
    """Gates the channels (dim 1) of a feature map; placed after BN so a closed channel is exactly 0.

    In restructured execution (execution.py) the feature map carries only the active channels
    `active`, and only their gate values are multiplied in (g = q·p = p there), so the logits'
    gradients are the masked ones. Where the model declares that its gates follow BN directly,
    the gate is folded into the BN before it (`fold`): the BN scales its affine weight and bias by
    g, and the gate passes that BN's output through instead of multiplying it again."""

    active: Tensor | None = None
    fold: "Fold | None" = None

    def active_values(self) -> Tensor:
        """g on the channels that are computed (all of them outside restructured execution)."""
        g = self.value()
        return g.index_select(0, self.active) if self.active is not None else g

    def forward(self, x: Tensor) -> Tensor:
        if self.fold is not None and self.fold.take(x):
            return x                                # its BN has already multiplied g in
        g = self.active_values().to(x.dtype)
        return x * g.view(1, -1, *([1] * (x.dim() - 2)))


class Fold:
    """A channel gate folded into the affine transform of the BatchNorm that feeds it.

    g·(γ·x̂ + β) = (g·γ)·x̂ + g·β, so the BN computes with weight g·γ and bias g·β (`scale`) and
    the gate returns that output unchanged: one pass over the activations less in the forward and
    two in the backward, with the same loss and gradients (the logits' gradient arrives through
    the BN's weight and bias gradients). The BN hands its output to `done`; the gate `take`s it
    back by identity, so a gate applied to any other tensor still multiplies. An output that was
    never taken back (`check`) means the model's gates do not follow its BNs: an error."""

    __slots__ = ("gate", "pending")

    def __init__(self, gate: ChannelGate):
        self.gate = gate
        self.pending: list[Tensor] = []

    def scale(self, weight: Tensor, bias: Tensor) -> tuple[Tensor, Tensor]:
        g = self.gate.active_values().to(weight.dtype)
        return weight * g, bias * g

    def done(self, y: Tensor) -> Tensor:
        self.pending.append(y)
        return y

    def take(self, x: Tensor) -> bool:
        for i, y in enumerate(self.pending):
            if y is x:
                del self.pending[i]
                return True
        return False

    def check(self, name: str) -> None:
        left, self.pending = len(self.pending), []
        if left:
            raise RuntimeError(f"restructured execution folded gate {name} into the BatchNorm "
                               f"before it, but {left} output(s) of that BatchNorm never reached "
                               f"the gate: the model must apply each gate directly to its site's "
                               f"BN output (or not set `gates_follow_bn`)")


class BlockGate(Gate):
    """Gates a whole residual branch: x + g·F(x); a closed block is the identity.

    In restructured execution `skip` is True for one forward when the block is closed, and the
    model does not compute the branch at all (`skipped`)."""

    skip: bool = False

    def __init__(self, sampling: str = "bernoulli"):
        super().__init__(1, sampling)

    def forward(self, x: Tensor) -> Tensor:
        return x * self.value().to(x.dtype)


class PassThroughGate(BlockGate):
    """Gates a plain (shortcut-free) sub-module: g·F(x) + (1−g)·x.

    A closed sub-module passes its input through (g = 0 gives x exactly, g = 1 gives F(x)
    exactly), so it needs as many output channels as input channels.
    """

    def forward(self, fx: Tensor, x: Tensor) -> Tensor:          # type: ignore[override]
        g = self.value().to(fx.dtype)
        return g * fx + (1 - g) * x


def skipped(block_gate: nn.Module) -> bool:
    """Whether a block's branch is closed and need not be computed (restructured execution
    only). `block_gate` may be an nn.Identity (the block is never removed)."""
    return getattr(block_gate, "skip", False)


def gates_of(model: nn.Module) -> list[tuple[str, Gate]]:
    return [(name, m) for name, m in model.named_modules() if isinstance(m, Gate)]


def set_sampling(model: nn.Module, mode: str) -> None:
    if mode not in SAMPLING_MODES:
        raise ValueError(f"unknown sampling mode {mode!r}; choose one of {', '.join(SAMPLING_MODES)}")
    for _, g in gates_of(model):
        g.sampling = mode


@torch.no_grad()
def sample_gates(gates: Iterable[Gate], generator: torch.Generator) -> Tensor:
    """Draw q ~ Bernoulli(p) for every structure at once (one RNG call, on the generator's device).

    One transfer of every gate's p to the generator's device and one transfer of every q back;
    returns the q of all gates, concatenated, on the generator's device (the host for the
    default CPU generator), so callers can read the architecture without another transfer."""
    gates = list(gates)
    if not gates:
        return torch.zeros(0)
    sizes = [g.n for g in gates]
    p = torch.cat([g.probs().detach().float() for g in gates]).to(generator.device)
    if not torch.isfinite(p).all():
        raise FloatingPointError("gate probabilities are not finite: training diverged. Lower "
                                 "train.lr or gates.mask_lr, or raise gates.min_channels.")
    q = torch.bernoulli(p, generator=generator)
    if any(g.min_active for g in gates):
        # every gate's count in one reduction; only the gates below their minimum (rare) are
        # filled from their most probable structures
        segment = torch.repeat_interleave(torch.arange(len(sizes), device=q.device),
                                          torch.tensor(sizes, device=q.device))
        counts = torch.zeros(len(sizes), device=q.device, dtype=q.dtype).index_add_(
            0, segment, q).tolist()
        start = 0
        for g, n, c in zip(gates, sizes, counts):
            if g.min_active and c < g.min_active:
                q[start:start + n].index_fill_(0, p[start:start + n].topk(g.min_active).indices,
                                               1.0)
            start += n
    write_samples(gates, q)
    return q


@torch.no_grad()
def write_samples(gates: list[Gate], q: Tensor) -> None:
    """Copy the concatenated samples `q` into the gates' `sample` buffers with one transfer."""
    device = gates[0].sample.device
    if q.device != device:
        if device.type == "cuda":           # pinned memory: the copy does not block the host
            q = q.pin_memory()
        q = q.to(device, non_blocking=True)
    for g, q_g in zip(gates, q.split([g.n for g in gates])):
        g.sample.copy_(q_g)


@torch.no_grad()
def open_all(gates: Iterable[Gate]) -> None:
    """Set every sample to 1 (a dense pass, e.g. for the deterministic mode's cost accounting)."""
    for g in gates:
        g.sample.fill_(1.0)
