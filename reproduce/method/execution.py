"""Execution: how a gated network's training forward is computed. Same mathematics, different speed.

    masked        every channel and block is computed; a closed one is multiplied by zero (its gate)
    restructured  only what is on is computed: every conv, BN and linear layer runs on its active
                  input and output channels, and closed blocks are skipped

Restructured execution is re-planned every iteration, right after the gates are sampled: the
active structures of a sampled gate are those with q = 1 (`hard` sampling: 1[s > 0]). The plan
is made on the host from the samples the controller already holds, so it costs no device sync;
its channel indices go to the device in one transfer (with `gates.resample_every` = k the
controller holds q for k iterations, and the plan of a held q is reused). Parameters, BN
statistics and optimizer state stay full size: a layer slices its weights with `index_select`
inside the forward, so each parameter's gradient is the slice's gradient scattered back, zero for
closed channels, as in masked execution. Gate values are still applied on the active channels
(g = q·p = p there), so the logits' gradients are the masked ones too. Where the model declares
`gates_follow_bn` (every channel gate multiplies its site's BN output and nothing else reads that
output), a gate is folded into that BN: the BN computes with weight g·γ and bias g·β and the gate
passes its output through (gates.Fold), one pass over the activations less forward and two less
backward. A step's loss and gradients therefore equal the masked step's for the same samples (up
to floating-point summation order), with two differences that do not reach any evaluated number:
  - BN running statistics of closed channels do not move (masked execution updates them with
    activations that are then multiplied by zero). Evaluation multiplies closed channels by zero,
    and `gates.bn_recalibrate` re-estimates the statistics of the hard architecture before every
    evaluation anyway.
  - Parameters the forward never reaches (skipped blocks, layers of zero width) would get no
    gradient at all; `complete_grads` gives them a zero gradient, as masked execution does, so
    the optimizer's step (weight decay, momentum) is the same.

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
    """Plans and installs, once per iteration, what a restructured training forward computes."""

    def __init__(self, model: GatedModel, mode: str = "masked", sampling: str = "bernoulli"):
        if mode not in EXECUTION_MODES:
            raise OptionError(f"train.execution: unknown value {mode!r}; choose one of "
                              f"{', '.join(EXECUTION_MODES)}")
        self.mode = mode
        self.model = model
        modules = dict(model.named_modules())
        self.gates: list[tuple[str, Gate]] = [(n, m) for n, m in modules.items()
                                              if isinstance(m, Gate)]
        self.restructures = mode == "restructured" and bool(self.gates)
        if self.restructures and sampling not in SKIPPING_SAMPLING:
            warnings.warn(f"train.execution: restructured computes every channel with "
                          f"{sampling!r} sampling (nothing can be skipped); it runs masked",
                          stacklevel=2)
            self.restructures = False
        self.planned = False
        self._last_state: dict[str, Tensor] | None = None     # the last plan's architecture ...
        self._last_idx: dict[str, Tensor | None] = {}        # ... and its channel indices
        if not self.restructures:
            return
        # (module, input gate, output gate) of every layer, and (module, gate) of every BN
        self._layers: list[tuple[nn.Module, str | None, str | None]] = []
        self._bns: list[tuple[nn.Module, str]] = []
        for site in model.sites():
            layer = modules[site.name]
            _require(layer, site.name)
            if isinstance(layer, nn.Conv2d) and layer.groups > 1 and not site.depthwise:
                raise TypeError(f"restructured execution: grouped conv {site.name} is not "
                                f"depthwise; only depthwise grouping can be sliced")
            self._layers.append((layer, None if site.depthwise else site.in_gate, site.out_gate))
            if site.bn is not None and site.out_gate is not None:
                _require(modules[site.bn], site.bn)
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

    def plan(self, state: dict[str, Tensor]) -> None:
        """Install the architecture `state` (per gate, 0/1 per structure, on the host) for the
        next training forward."""
        if not self.restructures:
            return
        if state is not self._last_state:     # a held architecture (same state) keeps its plan
            self._last_idx = self._indices(state)
            self._last_state = state
        idx = self._last_idx
        for layer, cin, cout in self._layers:
            a_in = idx[cin] if cin is not None else None
            a_out = idx[cout] if cout is not None else None
            layer.active = None if a_in is None and a_out is None else (a_in, a_out)
        for bn, gate in self._bns:
            bn.active = idx[gate]
            bn.fold = self._folds.get(gate)
        for name, gate in self._channel:
            gate.active = idx[name]
            gate.fold = self._folds.get(name)
        for name, gate in self._block:
            gate.skip = not bool(state[name][0] > 0)
        self.planned = True

    def _indices(self, state: dict[str, Tensor]) -> dict[str, Tensor | None]:
        """Every channel gate's active indices on the device (None: all channels on)."""
        device = next(self.model.parameters()).device
        idx: dict[str, Tensor | None] = {}
        picked = []
        for name, _ in self._channel:
            on = state[name] > 0
            if bool(on.all()):
                idx[name] = None                 # every channel on: no slicing at all
            else:
                idx[name] = on.nonzero().flatten()
                picked.append(name)
        if picked and device.type != "cpu":      # one transfer for every gate's indices
            flat = torch.cat([idx[n] for n in picked])
            if device.type == "cuda":
                flat = flat.pin_memory()
            flat = flat.to(device, non_blocking=True)
            idx.update(zip(picked, flat.split([idx[n].numel() for n in picked])))
        return idx

    def clear(self) -> None:
        """Back to computing everything (the next forward is masked unless planned again)."""
        if not self.planned:
            return
        for layer, _, _ in self._layers:
            layer.active = None
        self._check_folds()
        for bn, _ in self._bns:
            bn.active = None
            bn.fold = None
        for _, gate in self._channel:
            gate.active = None
            gate.fold = None
        for _, gate in self._block:
            gate.skip = False
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


def _require(module: nn.Module, name: str) -> None:
    if not hasattr(type(module), "active"):
        raise TypeError(f"restructured execution: {name} ({type(module).__name__}) cannot run on "
                        f"its active channels; build it from models/layers.py "
                        f"(Conv2d, Linear, BatchNorm2d)")


__all__ = ["Execution", "SKIPPING_SAMPLING"]
