"""Execution: how a gated network's training forward is computed. Same mathematics, different speed.

    masked        every channel and block is computed; a closed one is multiplied by zero (its gate)
    restructured  only what is on is computed: every conv, BN and linear layer runs on its active
                  input and output channels, and closed blocks are skipped
    auto          restructured where the model and the sampling allow it (below), else masked:
                  the default of growing runs (docs/METHOD.md has the measurements)

Restructured execution is re-planned every iteration, right after the gates are sampled: the
active structures of a sampled gate are those with q = 1 (`hard` sampling: 1[s > 0]). The plan
is made on the host from the samples the controller already holds, so it costs no device sync;
its channel indices go to the device in one transfer (with `gates.resample_every` = k the
controller holds q for k iterations, and the plan of a held q is reused). The hard architecture
g = 1[s > 0] is planned the same way for the forwards that re-estimate BN statistics and for
evaluation (`GrowthController.hard_architecture`): layers in evaluation mode run on their active
channels with their running statistics, closed blocks are skipped, and the outputs are the
masked evaluation's. Parameters, BN statistics and optimizer state stay full size: a layer
slices its weights with `index_select` inside the forward, so each parameter's gradient is the
slice's gradient scattered back, zero for closed channels, as in masked execution. Gate values
are still applied on the active channels (g = q·p = p there), so the logits' gradients are the
masked ones too. Where the model declares `gates_follow_bn` (every channel gate multiplies its
site's BN output and nothing else reads that output), a gate is folded into that BN: the BN
computes with weight g·γ and bias g·β and the gate passes its output through (gates.Fold), one
pass over the activations less forward and two less backward. A step's loss and gradients
therefore equal the masked step's for the same samples (up to floating-point summation order),
with two differences that do not reach any evaluated number:
  - BN running statistics of closed channels do not move (masked execution updates them with
    activations that are then multiplied by zero). Evaluation multiplies closed channels by zero,
    and `gates.bn_recalibrate` re-estimates the statistics of the hard architecture before every
    evaluation anyway.
  - Parameters the forward never reaches (skipped blocks, layers of zero width) would get no
    gradient at all; `complete_grads` gives them a zero gradient, as masked execution does, so
    the optimizer's step (weight decay, momentum) is the same.

Channels in multiples (`multiple` m > 1): each gate's active channels are rounded up to a
multiple of m (at most all of them) by adding its first closed channels, which are computed and
multiplied by their gate value 0 exactly as in masked execution: the loss and gradients do not
change. A layer then takes one of few widths instead of any, so kernels a backend prepares per
shape (oneDNN on a CPU: ≈ 11-20 ms for a new ResNet-20 architecture, more than a whole 8×8 step)
are prepared once and reused, and CPU convolutions, computed in blocks of 8 or 16 channels, cost
the same for a width and its rounded-up width anyway (bench/README.md has the measurements).

Where nothing can be skipped, restructured execution computes what masked execution computes:
`deterministic` sampling (g = p, every channel is on) and `straight_through` (the logits'
gradient of a closed channel needs that channel's activation) fall back to masked execution.

A model takes part through its `sites()` and `blocks()` (structure.py): every site's layer and BN
must accept an `active` attribute (models/layers.py: Conv2d, Linear, BatchNorm2d); every op
between sites must work on any number of channels (activations, pooling, adding two tensors
under the same gate); and a block must return its input when `skipped(block_gate)`. A folded
gate's BN output that never reaches the gate is an error after the backward pass (a model that
declares `gates_follow_bn` wrongly).
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor, nn

from .gates import BlockGate, ChannelGate, Fold, Gate
from .options import EXECUTION_MODES, OptionError
from .structure import GatedModel

# sampling modes in which a closed structure's computation can be skipped
SKIPPING_SAMPLING = ("bernoulli", "hard")


class Execution:
    """Plans and installs, once per iteration, what a restructured forward computes."""

    def __init__(self, model: GatedModel, mode: str = "masked", sampling: str = "bernoulli",
                 multiple: int = 1):
        if mode not in EXECUTION_MODES:
            raise OptionError(f"train.execution: unknown value {mode!r}; choose one of "
                              f"{', '.join(EXECUTION_MODES)}")
        if int(multiple) != multiple or multiple < 1:
            raise OptionError(f"train.channel_multiple: {multiple!r} is not a whole number >= 1")
        self.mode, self.multiple = mode, int(multiple)
        self.model = model
        modules = dict(model.named_modules())
        self.gates: list[tuple[str, Gate]] = [(n, m) for n, m in modules.items()
                                              if isinstance(m, Gate)]
        problem = _why_not_restructurable(model, modules)
        if mode == "auto":
            mode = "restructured" if sampling in SKIPPING_SAMPLING and problem is None \
                else "masked"
        self.restructures = mode == "restructured" and bool(self.gates)
        if self.restructures and sampling not in SKIPPING_SAMPLING:
            warnings.warn(f"train.execution: restructured computes every channel with "
                          f"{sampling!r} sampling (nothing can be skipped); it runs masked",
                          stacklevel=2)
            self.restructures = False
        self.planned = False
        self._last_state: dict[str, Tensor] | None = None     # the last plan's architecture ...
        self._last_idx: list[Tensor | None] = []             # ... its channel indices ...
        self._last_on: list[int] = []                        # ... and active counts, per gate
        if not self.restructures:
            return
        # (module, input gate, output gate) of every layer, and (module, gate) of every BN
        self._layers: list[tuple[nn.Module, str | None, str | None]] = []
        self._bns: list[tuple[nn.Module, str]] = []
        if problem is not None:
            raise TypeError(f"restructured execution: {problem}")
        for site in model.sites():
            layer = modules[site.name]
            self._layers.append((layer, None if site.depthwise else site.in_gate, site.out_gate))
            if site.bn is not None and site.out_gate is not None:
                self._bns.append((modules[site.bn], site.out_gate))
        # gates folded into the BN before them (gates.Fold), where the model declares it
        self._folds: dict[str, Fold] = {}
        if getattr(model, "gates_follow_bn", False):
            for bn, gate in self._bns:
                if bn.affine and isinstance(modules[gate], ChannelGate):
                    self._folds.setdefault(gate, Fold(modules[gate]))
        self._channel = [(n, g) for n, g in self.gates if isinstance(g, ChannelGate)]
        self._block = [(n, g) for n, g in self.gates if isinstance(g, BlockGate)]
        self._params = [p for p in model.parameters() if p.requires_grad]
        # the per-iteration plan works on every gate's samples concatenated (gate order): each
        # structure's gate (`_segment`) and its gate's first position (`_start`); every layer,
        # BN and gate as its instance dict and the slots of the gates it reads
        slot = {n: i for i, (n, _) in enumerate(self.gates)}
        sizes = [g.n for _, g in self.gates]
        self._sizes = sizes
        self._segment = torch.repeat_interleave(torch.arange(len(sizes)),
                                                torch.tensor(sizes, dtype=torch.long))
        starts = torch.tensor([0] + sizes[:-1], dtype=torch.long).cumsum(0)
        self._start = starts.index_select(0, self._segment)
        self._first, self._size = starts, torch.tensor(sizes, dtype=torch.long)
        self._channel_slots = [slot[n] for n, _ in self._channel]
        self._layer_plan = [(vars(layer), None if cin is None else slot[cin],
                             None if cout is None else slot[cout])
                            for layer, cin, cout in self._layers]
        self._bn_plan = [(vars(bn), slot[gate], self._folds.get(gate)) for bn, gate in self._bns]
        self._gate_plan = [(vars(g), slot[n], self._folds.get(n)) for n, g in self._channel]
        self._block_plan = [(vars(g), slot[n]) for n, g in self._block]

    def plan(self, state: dict[str, Tensor], q: Tensor | None = None) -> None:
        """Install the architecture `state` (per gate, 0/1 per structure, on the host; `q`: the
        same concatenated in gate order, if the caller has it) for the next training forward.

        The attributes are written to the modules' instance dicts: nn.Module.__setattr__ looks
        every name up among parameters, buffers and submodules first, and this runs for every
        layer in every iteration."""
        if not self.restructures:
            return
        if state is not self._last_state:     # a held architecture (same state) keeps its plan
            if q is None:
                q = torch.cat([state[n] for n, _ in self.gates])
            self._last_idx, self._last_on = self._indices(q)
            self._last_state = state
        idx, on = self._last_idx, self._last_on
        for d, s_in, s_out in self._layer_plan:
            a_in = None if s_in is None else idx[s_in]
            a_out = None if s_out is None else idx[s_out]
            d["active"] = None if a_in is None and a_out is None else (a_in, a_out)
        for d, s, fold in self._bn_plan:
            d["active"] = idx[s]
            d["fold"] = fold
        for d, s, fold in self._gate_plan:
            d["active"] = idx[s]
            d["fold"] = fold
        for d, s in self._block_plan:
            d["skip"] = not on[s]
        self.planned = True

    def _indices(self, q: Tensor) -> tuple[list[Tensor | None], list[int]]:
        """Every gate's active indices on the device (None: all structures on; block gates:
        None) and its number of active structures, from the concatenated samples `q` (host):
        one nonzero for all gates, the indices made local to their gate, and one transfer."""
        device = next(self.model.parameters()).device
        on = q > 0
        if self.multiple > 1:
            on = self._round_up(on)
        flat = on.nonzero().flatten()
        counts = torch.bincount(self._segment.index_select(0, flat),
                                minlength=len(self._sizes)).tolist()
        local = flat - self._start.index_select(0, flat)
        if device.type != "cpu":                 # one transfer for every gate's indices
            if device.type == "cuda":
                local = local.pin_memory()
            local = local.to(device, non_blocking=True)
        parts = local.split(counts)
        idx: list[Tensor | None] = [None] * len(counts)
        for s in self._channel_slots:
            if counts[s] < self._sizes[s]:       # every channel on: no slicing at all
                idx[s] = parts[s]
        return idx, counts

    def _round_up(self, on: Tensor) -> Tensor:
        """`on` with each gate's count rounded up to a multiple of `multiple` (at most the gate's
        size; 0 stays 0) by switching on its first closed structures."""
        m = self.multiple
        counts = torch.zeros(len(self._sizes), dtype=torch.long).index_add_(
            0, self._segment, on.long())
        pad = torch.minimum((counts + m - 1) // m * m, self._size) - counts
        off = ~on
        closed = off.long().cumsum(0)                      # closed structures up to here ...
        before_gate = (closed - off.long()).index_select(0, self._first)
        rank = closed - before_gate.index_select(0, self._segment)   # ... within their gate
        return on | (off & (rank <= pad.index_select(0, self._segment)))

    def clear(self) -> None:
        """Back to computing everything (the next forward is masked unless planned again)."""
        if not self.planned:
            return
        self._check_folds()
        for d, _, _ in self._layer_plan:
            d["active"] = None
        for plan in (self._bn_plan, self._gate_plan):
            for d, _, _ in plan:
                d["active"] = None
                d["fold"] = None
        for d, _ in self._block_plan:
            d["skip"] = False
        self.planned = False

    def complete_grads(self) -> None:
        """After backward: a zero gradient for every parameter the restructured forward skipped,
        as masked execution gives, so the optimizer treats them alike."""
        if not self.planned:
            return
        self._check_folds()
        for p in self._params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)


    def _check_folds(self) -> None:
        for name, fold in self._folds.items():
            fold.check(name)


def _why_not_restructurable(model: GatedModel, modules: dict[str, nn.Module]) -> str | None:
    """What keeps a site from running on its active channels (None: nothing)."""
    for site in model.sites():
        layer = modules[site.name]
        for name in (site.name, site.bn if site.out_gate is not None else None):
            if name is not None and not hasattr(type(modules[name]), "active"):
                return (f"{name} ({type(modules[name]).__name__}) cannot run on its active "
                        f"channels; build it from models/layers.py (Conv2d, Linear, BatchNorm2d)")
        if isinstance(layer, nn.Conv2d) and layer.groups > 1 and not site.depthwise:
            return f"grouped conv {site.name} is not depthwise; only depthwise grouping can be sliced"
    return None


__all__ = ["Execution", "SKIPPING_SAMPLING"]
