"""Plain3Net: Basic3ResNet without shortcuts (AutoGrow's PlainNet), with growth gates.

A stem conv-BN-ReLU, then 3 stages (widths 16/32/64) of sub-modules, each one conv-BN-ReLU;
`plain3net-A-B-C` has A, B and C sub-modules per stage (the maximum depth when layers grow).
The first sub-module of stages 2 and 3 halves the resolution and changes the width.

Gates (docs/METHOD.md, "Structures and gates"):
  layer<k>.gate            channels of stage k, shared by every sub-module of the stage: a closed
                           sub-module passes its input through, which ties its input and output
                           channels, so one gate per stage (as a ResNet's stream); applied after
                           BN, before ReLU, in the stem and in every sub-module
  layer<k>.<j>.block_gate  the whole sub-module (j ≥ 1): g·F(x) + (1−g)·x, a closed sub-module
                           passes its input through (PassThroughGate)
The first sub-module of every stage is never removed (it changes resolution and width); with
`gates.seed_blocks: one_per_stage` it is the seed.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from ..method.gates import ChannelGate, PassThroughGate, skipped
from ..method.structure import Site, StagedModel
from .layers import BatchNorm2d, Conv2d, Linear, initialise, scaled
from .registry import register_class, register_pattern
from .resnet_cifar import RemovedBlock, Stage


class PlainBlock(nn.Module):
    """One conv-BN-ReLU sub-module; gated, g·F(x) + (1−g)·x."""

    def __init__(self, cin: int, cout: int, stride: int, gate_block: bool):
        super().__init__()
        self.conv = Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn = BatchNorm2d(cout)
        self.block_gate = PassThroughGate() if gate_block else None

    def forward(self, x: Tensor, stream_gate: nn.Module) -> Tensor:
        if self.block_gate is not None and skipped(self.block_gate):
            return x                     # restructured training: g = 0 passes x through exactly
        out = F.relu(stream_gate(self.bn(self.conv(x))))
        return out if self.block_gate is None else self.block_gate(out, x)


@register_class
class Plain3Net(StagedModel):
    """Shortcut-free CIFAR network; `sizes`/`removed` build a compact (exported) copy."""

    gates_follow_bn = True      # every channel gate multiplies its BN's output directly

    def __init__(self, depths=(3, 3, 3), widths=(16, 32, 64), num_classes: int = 10,
                 in_channels: int = 3, width_multiplier: float = 1.0, gate_channels: bool = True,
                 gate_blocks: bool = False, sizes: dict[str, int] | None = None,
                 removed: set[str] | frozenset = frozenset()):
        super().__init__()
        self.arch = dict(depths=tuple(depths), widths=tuple(widths), num_classes=num_classes,
                         in_channels=in_channels, width_multiplier=width_multiplier)
        self.gate_channels, self.gate_blocks = gate_channels, gate_blocks
        self.removed = frozenset(removed)   # sub-modules exported as identities
        sizes = sizes or {}
        widths = [scaled(w, width_multiplier) for w in widths]
        stream = [sizes.get(f"layer{k + 1}.gate", w) for k, w in enumerate(widths)]

        self.conv1 = Conv2d(in_channels, stream[0], 3, 1, 1, bias=False)
        self.bn1 = BatchNorm2d(stream[0])
        cin = stream[0]
        for k, depth in enumerate(depths):
            blocks = []
            for j in range(depth):
                name = f"layer{k + 1}.{j}"
                if name in removed:
                    blocks.append(RemovedBlock())
                    continue
                stride = 2 if (j == 0 and k > 0) else 1
                blocks.append(PlainBlock(cin, stream[k], stride, gate_blocks and j > 0))
                cin = stream[k]
            self.add_module(f"layer{k + 1}", Stage(ChannelGate(stream[k]) if gate_channels
                                                   else nn.Identity(), blocks))
        self.fc = Linear(stream[-1], num_classes)
        initialise(self)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.layer1.gate(self.bn1(self.conv1(x))))
        for k in range(len(self.arch["depths"])):
            x = getattr(self, f"layer{k + 1}")(x)
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.fc(x)

    # -- structure description (used by costs and export) ---------------------------------------
    def sites(self) -> list[Site]:
        g = self.gate
        sites = [Site("conv1", None, g("layer1.gate"), bn="bn1", stage=1, role="stream")]
        prev = g("layer1.gate")
        for block in self.blocks():
            stream = g(f"layer{block.stage}.gate")
            # "stream": its output channels are the stage's, shared by the pass-through
            sites.append(Site(f"{block.name}.conv", prev, stream, block.gate, f"{block.name}.bn",
                              block.stage, role="stream"))
            prev = stream
        sites.append(Site("fc", prev, None, stage=len(self.arch["depths"]), role="head"))
        return sites


@register_pattern("plain3net-A-B-C", r"plain3net-(\d+)-(\d+)-(\d+)$", family="plain_cifar")
def _plain3net(*depths: str):
    return lambda **kwargs: Plain3Net(depths=tuple(map(int, depths)), **kwargs)
