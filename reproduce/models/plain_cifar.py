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

from ..method.gates import PassThroughGate, skipped
from ..method.structure import Block, Site
from .layers import BatchNorm2d, Conv2d
from .registry import register_pattern
from .stages import CIFARNet


class PlainBlock(nn.Module):
    """One conv-BN-ReLU sub-module; gated, g·F(x) + (1−g)·x."""

    def __init__(self, cin: int, cout: int, stride: int, gate_block: bool):
        super().__init__()
        self.conv = Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn = BatchNorm2d(cout)
        self.block_gate = PassThroughGate() if gate_block else None

    def forward(self, x: Tensor, stream_gate: nn.Module) -> Tensor:
        if self.block_gate is not None and skipped(self.block_gate):
            return x                     # restructured execution: g = 0 passes x through exactly
        out = F.relu(stream_gate(self.bn(self.conv(x))))
        return out if self.block_gate is None else self.block_gate(out, x)


class Plain3Net(CIFARNet):
    """Shortcut-free CIFAR network; `sizes`/`removed` build a compact (exported) copy."""

    def make_block(self, name: str, cin: int, width: int, cout: int, stride: int,
                   gate_block: bool, sizes: dict[str, int]) -> PlainBlock:
        return PlainBlock(cin, cout, stride, gate_block)

    def block_sites(self, block: Block, prev: str | None, stream: str | None) -> list[Site]:
        # "stream": its output channels are the stage's, shared by the pass-through
        return [Site(f"{block.name}.conv", prev, stream, block.gate, f"{block.name}.bn",
                     block.stage, role="stream")]


@register_pattern("plain3net-A-B-C", r"plain3net-(\d+)-(\d+)-(\d+)$", example="plain3net-2-4-3")
def _plain3net(*depths: str, **kwargs) -> Plain3Net:
    return Plain3Net(depths=tuple(map(int, depths)), **kwargs)
