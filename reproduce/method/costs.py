"""Parameter and MAC counting of gated architectures.

Convention (stated in every output): only conv and linear layers count. A conv costs
    MACs   = active_in · active_out · k_h·k_w · H_out·W_out   (depthwise: active · k_h·k_w · H_out·W_out)
    params = active_in · active_out · k_h·k_w (+ active_out if it has a bias)
times the state of the block that contains it (0 when the block is removed). FLOPs = 2 × MACs.
BatchNorm, activations, pooling, additions and embedding look-ups are not counted. A linear layer
whose outputs stack r blocks per gated structure (an LSTM's 4 gates, `Site.out_blocks`) costs r
times as much per active structure. Costs are per model input: per image, or per token for a
language model (whose layers see one token per step).

The probe that measures output sizes is a zero image of the given shape, or the model's own
`example_input()` where it has one (a language model's token ids).

A model describes its layers as `Site`s (method/structure.py): which channel gate feeds a layer's
input channels, which
one gates its outputs, and which block gate (if any) contains it. The counter takes, for each gate,
a vector of per-structure states: the hard gates (inference architecture), the sampled q
(training architecture of one iteration), or the probabilities p (expected cost, differentiable).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .gates import ChannelGate, Gate
from .structure import Block, GatedModel, Site


@dataclass(frozen=True)
class _Shape:
    cin: int
    cout: int
    kernel: int                 # k_h · k_w (1 for linear)
    spatial: int                # H_out · W_out (1 for linear)
    bias: bool
    rows: int = 1               # output rows per gated structure (Site.out_blocks)


class CostModel:
    """Counts params and MACs of a gated model for any assignment of gate states."""

    def __init__(self, model: GatedModel, input_shape: tuple[int, ...]):
        self.sites: list[Site] = list(model.sites())
        self.input_shape = tuple(input_shape)         # one example, without the batch axis
        modules = dict(model.named_modules())
        self.gates: dict[str, Gate] = {n: m for n, m in modules.items() if isinstance(m, Gate)}
        self.shapes = _measure(model, self.sites, modules, input_shape)
        self.stage_of = _gate_stages(self.sites)
        self.blocks: list[Block] = list(model.blocks())
        dense = self.count({})
        self.dense_macs, self.dense_params = float(dense[0]), float(dense[1])

    # -- counting -------------------------------------------------------------------------------
    def count(self, state: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """(MACs, params) with `state[gate]` the per-structure state (missing gate = all on).
        Summed in float64: float32 is exact only up to 2^24, and a ResNet-50 FCN has 33 M params
        and 10^11 MACs."""
        macs = params = torch.zeros((), dtype=torch.float64)
        for site, sh in zip(self.sites, self.shapes):
            n_in = _active(state, site.in_gate, sh.cin)
            n_out = _active(state, site.out_gate, sh.cout)
            on = state[site.block].double().sum() if site.block in state else 1.0
            if site.depthwise:
                w = n_out * sh.kernel
            else:
                w = n_in * n_out * sh.kernel * sh.rows
            macs = macs + on * w * sh.spatial
            params = params + on * (w + (n_out * sh.rows if sh.bias else 0.0))
        return macs, params

    def hard_state(self) -> dict[str, Tensor]:
        return self._on_cpu({n: g.hard().detach() for n, g in self.gates.items()})

    def sampled_state(self) -> dict[str, Tensor]:
        return self._on_cpu({n: g.sample.detach() for n, g in self.gates.items()})

    @staticmethod
    def _on_cpu(state: dict[str, Tensor]) -> dict[str, Tensor]:
        """One device-to-host copy for all gates (called every iteration by the controller)."""
        if not state:
            return {}
        flat = torch.cat(list(state.values())).cpu()
        return dict(zip(state, flat.split([v.numel() for v in state.values()])))

    def prob_state(self) -> dict[str, Tensor]:
        return {n: g.probs() for n, g in self.gates.items()}

    def hard(self) -> tuple[float, float]:
        macs, params = self.count(self.hard_state())
        return float(macs), float(params)

    def sampled_macs(self) -> float:
        return float(self.count(self.sampled_state())[0])

    # -- per-structure costs for the sparsity penalty ---------------------------------------------
    def structure_costs(self, metric: str) -> dict[str, float]:
        """Dense marginal cost of one structure of each gate (same for all structures of a gate).

        A channel of gate G costs what its removal saves in the dense network: the input side of
        every layer writing G and the output side of every layer reading G. A block costs all the
        layers inside it. `uniform` gives every structure cost 1.
        """
        costs = {n: 0.0 for n in self.gates}
        if metric == "uniform":
            return {n: 1.0 for n in self.gates}
        for site, sh in zip(self.sites, self.shapes):
            per_pos = sh.spatial if metric == "macs" else 1
            bias = sh.rows if (sh.bias and metric == "params") else 0
            if site.depthwise:
                if site.out_gate:
                    costs[site.out_gate] += sh.kernel * per_pos + bias
            else:
                if site.out_gate:
                    costs[site.out_gate] += sh.cin * sh.kernel * sh.rows * per_pos + bias
                if site.in_gate:
                    costs[site.in_gate] += sh.cout * sh.kernel * sh.rows * per_pos
            if site.block:
                costs[site.block] += (sh.cin * sh.cout * sh.kernel * sh.rows
                                      + bias * sh.cout) * per_pos
        return costs

    # -- architecture summaries -----------------------------------------------------------------
    def layer_ratios(self, state: dict[str, Tensor] | None = None) -> dict[str, float]:
        """Retained output-channel ratio of every gated layer (0 inside a removed block)."""
        state = self.hard_state() if state is None else state
        out = {}
        for site, sh in zip(self.sites, self.shapes):
            if site.out_gate is None:
                continue
            ratio = float(state[site.out_gate].mean())
            if site.block is not None:
                ratio *= float(state[site.block].sum())
            out[site.name] = ratio
        return out

    def stage_summary(self, state: dict[str, Tensor] | None = None) -> dict[str, float]:
        """channels/stage<k>: retained share of the stage's gated channels; blocks/stage<k>."""
        state = self.hard_state() if state is None else state
        on: dict[int, float] = {}
        total: dict[int, float] = {}
        for name, gate in self.gates.items():
            k = self.stage_of.get(name)
            if k is None:
                continue
            if isinstance(gate, ChannelGate):
                on[k] = on.get(k, 0.0) + float(state[name].sum())
                total[k] = total.get(k, 0.0) + gate.n
        out = {f"channels/stage{k}": on[k] / total[k] for k in sorted(total)}
        for b in self.blocks:
            on_ = 1.0 if b.gate is None else float(state[b.gate].sum())
            out[f"blocks/stage{b.stage}"] = out.get(f"blocks/stage{b.stage}", 0.0) + on_
        return out


def _active(state: dict[str, Tensor], gate: str | None, full: int):
    if gate is None or gate not in state:
        return float(full)
    return state[gate].double().sum()


def _gate_stages(sites: list[Site]) -> dict[str, int]:
    stages: dict[str, int] = {}
    for s in sites:
        for g in (s.out_gate, s.block):
            if g is not None:
                stages.setdefault(g, s.stage)
    return stages


@torch.no_grad()
def _measure(model: nn.Module, sites: list[Site], modules: dict[str, nn.Module],
             input_shape) -> list[_Shape]:
    """Record each layer's output spatial size with one dense forward pass on zeros (or on the
    model's `example_input()`)."""
    layers = [modules[s.name] for s in sites]
    spatial: dict[int, int] = {}

    def hook(mod, inp, out):
        spatial[id(mod)] = out.shape[-2] * out.shape[-1] if out.dim() == 4 else 1   # 0 channels ok

    handles = [m.register_forward_hook(hook) for m in layers]
    was_training = model.training
    model.eval()
    gates = [m for m in model.modules() if isinstance(m, Gate)]
    saved = [g.logits.detach().clone() for g in gates]
    try:
        for g in gates:                      # open every gate so no branch is skipped
            g.logits.data.fill_(1.0)
        p = next(model.parameters())
        if hasattr(model, "example_input"):
            model(model.example_input().to(p.device))
        else:
            model(torch.zeros(1, *input_shape, device=p.device, dtype=p.dtype))
    finally:
        for g, s in zip(gates, saved):
            g.logits.data.copy_(s)
        for h in handles:
            h.remove()
        model.train(was_training)
    shapes = []
    for site, m in zip(sites, layers):
        if isinstance(m, nn.Conv2d):
            shapes.append(_Shape(m.in_channels, m.out_channels, m.kernel_size[0] * m.kernel_size[1],
                                 spatial[id(m)], m.bias is not None))
        elif isinstance(m, nn.Linear):
            if m.out_features % site.out_blocks:
                raise ValueError(f"site {site.name}: {m.out_features} outputs do not split into "
                                 f"{site.out_blocks} blocks")
            shapes.append(_Shape(m.in_features, m.out_features // site.out_blocks, 1, 1,
                                 m.bias is not None, site.out_blocks))
        else:
            raise TypeError(f"cost sites must be Conv2d or Linear, got {type(m).__name__}")
    return shapes
