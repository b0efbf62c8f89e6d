"""Export: the final hard architecture as a physically smaller dense model.

Closed channels are sliced out of every conv, BN and linear layer that touches them, closed blocks
become identities, and gates disappear. In evaluation the compact model computes exactly what the
gated model computes with hard gates (gates sit after BN, so a closed channel is exactly zero).
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor, nn

from .gates import BlockGate, ChannelGate, gates_of
from .structure import GatedModel, Site, inside


def hard_architecture(model: GatedModel) -> tuple[dict[str, Tensor], set[str]]:
    """Active channel indices of every channel gate, and the names of removed blocks."""
    keep, removed = {}, set()
    gates = dict(gates_of(model))
    for name, gate in gates.items():
        if isinstance(gate, ChannelGate):
            keep[name] = gate.active_indices().cpu()
    for block in model.removable_blocks():
        if not bool(gates[block.gate].hard().item()):
            removed.add(block.name)
    return keep, removed


@torch.no_grad()
def export(model: GatedModel) -> nn.Module:
    """A compact, gate-free copy of `model`'s hard architecture (in eval mode, on the same device)."""
    keep, removed = hard_architecture(model)
    with warnings.catch_warnings():     # zero-width layers: "initializing zero-element tensors"
        warnings.simplefilter("ignore", UserWarning)
        compact = model.compact({n: len(idx) for n, idx in keep.items()}, removed)
    src = dict(model.named_modules())
    dst = dict(compact.named_modules())
    written: set[str] = set()

    def take(t: Tensor, dim: int, gate: str | None, blocks: int = 1) -> Tensor:
        if gate is None:
            return t
        idx = keep[gate].to(t.device)
        if blocks > 1:       # the same units in each of the stacked blocks (an LSTM's i, f, g, o)
            n = t.shape[dim] // blocks
            idx = torch.cat([idx + j * n for j in range(blocks)])
        return t.index_select(dim, idx)

    for site in model.sites():
        if site.block is not None and inside(site, removed):
            continue
        s, d = src[site.name], dst[site.name]
        w = take(take(s.weight, 0, site.out_gate, site.out_blocks), 1,
                 None if site.depthwise else site.in_gate)
        d.weight.copy_(w)
        written.add(f"{site.name}.weight")
        if s.bias is not None:
            d.bias.copy_(take(s.bias, 0, site.out_gate, site.out_blocks))
            written.add(f"{site.name}.bias")
        if site.bn is not None:
            _copy_bn(src[site.bn], dst[site.bn], site, take)
            written.update(f"{site.bn}.{k}" for k, _ in dst[site.bn].named_parameters())
            written.update(f"{site.bn}.{k}" for k, _ in dst[site.bn].named_buffers())

    for name in model.ungated():         # no gate touches them: copied as they are
        for key, t in list(src[name].named_parameters()) + list(src[name].named_buffers()):
            dict(dst[name].named_parameters(), **dict(dst[name].named_buffers()))[key].copy_(t)
            written.add(f"{name}.{key}")

    missing = [k for k in list(dict(compact.named_parameters())) + list(dict(compact.named_buffers()))
               if k not in written]
    if missing:
        raise RuntimeError(f"export left these tensors uninitialised: {missing[:5]}")
    p = next(model.parameters())
    return compact.to(p.device).eval()


def _copy_bn(s: nn.BatchNorm2d, d: nn.BatchNorm2d, site: Site, take) -> None:
    for attr in ("weight", "bias", "running_mean", "running_var"):
        getattr(d, attr).copy_(take(getattr(s, attr), 0, site.out_gate))
    d.num_batches_tracked.copy_(s.num_batches_tracked)


def architecture_summary(model: GatedModel) -> dict:
    """The hard architecture, JSON-ready: per-layer widths with each layer's stage, role and
    dense width (`layers`: gated layers; `sites`: every layer); every gate's kind, stage, role and writers; per-stage depths; removed blocks."""
    keep, removed = hard_architecture(model)
    depths: dict[int, int] = {}
    for block in model.blocks():
        depths[block.stage] = depths.get(block.stage, 0) + (block.name not in removed)
    modules = dict(model.named_modules())
    widths, layers = {}, {}
    for site in model.sites():
        if site.out_gate is None:
            continue
        width = 0 if inside(site, removed) else int(len(keep[site.out_gate]))
        widths[site.name] = width
        layers[site.name] = {"stage": site.stage, "role": site.role, "width": width,
                             "dense_width": _out_width(modules[site.name]) // site.out_blocks}
    # every layer, gated or not: output structures (channels, an LSTM's hidden units) now and dense
    sites = {s.name: {"stage": s.stage, "role": s.role,
                      "width": 0 if inside(s, removed) else
                      (int(len(keep[s.out_gate])) if s.out_gate else
                       _out_width(modules[s.name]) // s.out_blocks),
                      "dense_width": _out_width(modules[s.name]) // s.out_blocks}
             for s in model.sites()}
    gates = {}
    for site in model.sites():           # every gate: stage, role and the layers writing it
        for name, kind in ((site.out_gate, "channel"), (site.block, "block")):
            if name is None:
                continue
            info = gates.setdefault(name, {"kind": kind, "stage": site.stage, "role": site.role,
                                           "layers": []})
            if kind == "block":
                info["role"] = "block"
            elif site.role == "stream":      # a stream gate is named by the stream it gates
                info["role"] = "stream"
            if site.name not in info["layers"]:
                info["layers"].append(site.name)
    return {"widths": widths, "layers": layers, "sites": sites, "gates": gates,
            "depths": {f"stage{k}": v for k, v in sorted(depths.items())},
            "removed_blocks": sorted(removed),
            "block_gates": sum(isinstance(g, BlockGate) for _, g in gates_of(model))}


def _out_width(layer: nn.Module) -> int:
    return int(layer.out_channels if isinstance(layer, nn.Conv2d) else layer.out_features)
