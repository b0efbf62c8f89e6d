"""Networks of stages of blocks (`layer<k>.<j>`): the stage container, what a removed block
becomes, and the CIFAR skeleton that the CIFAR ResNets and Plain3Net share.

A block is called as `block(x, stream_gate)`: every block of a stage writes the stage's channels,
which one channel gate (`layer<k>.gate`) gates, so the stage hands that gate to each of them.
"""

from __future__ import annotations

from typing import Callable

import torch.nn.functional as F
from torch import Tensor, nn

from ..method.gates import ChannelGate
from ..method.structure import Block, Site, StagedModel
from .layers import BatchNorm2d, Conv2d, Linear, initialise, maybe_gate, scaled


class RemovedBlock(nn.Module):
    """What a closed block becomes on export: the identity (its input is already post-ReLU, and
    a closed plain sub-module passes its input through)."""

    def forward(self, x: Tensor, stream_gate: nn.Module) -> Tensor:
        return x


class Stage(nn.Module):
    def __init__(self, gate: nn.Module, blocks: list[nn.Module]):
        super().__init__()
        self.gate = gate
        for j, b in enumerate(blocks):
            self.add_module(str(j), b)
        self.depth = len(blocks)

    def forward(self, x: Tensor) -> Tensor:
        for j in range(self.depth):
            x = getattr(self, str(j))(x, self.gate)
        return x


def add_stages(model: nn.Module, depths, stream: list[int], cin: int, removed,
               stream_gate: Callable[[int], nn.Module],
               block: Callable[[str, int, int, int], nn.Module]) -> None:
    """Add `layer1` … `layerK` to `model`. Stage k (from 0) holds depths[k] blocks: the removed
    ones (by name) the identity, the others `block(name, k, j, cin)`, where the first block of a
    stage reads `cin` channels (the stem's or the stage before's) and every later one the
    stage's own `stream[k]`; `stream_gate(stream[k])` gates the stage's channels."""
    for k, depth in enumerate(depths):
        blocks = []
        for j in range(depth):
            name = f"layer{k + 1}.{j}"
            blocks.append(RemovedBlock() if name in removed else block(name, k, j, cin))
            cin = stream[k]
        model.add_module(f"layer{k + 1}", Stage(stream_gate(stream[k]), blocks))


def run_stages(model: nn.Module, x: Tensor) -> Tensor:
    """`x` through `layer1` … `layerK` in turn."""
    for k in range(len(model.arch["depths"])):
        x = getattr(model, f"layer{k + 1}")(x)
    return x


def staged_sites(model: StagedModel, stem: Site,
                 block_sites: Callable[[Block, str | None, str | None], list[Site]]) -> list[Site]:
    """The gated layers of a staged model: `stem`, then `block_sites(block, prev, stream)` of
    every block (it reads channels gated by `prev`, the stem's or the stage before's, and
    writes its stage's, gated by `stream`), then the classifier `fc`."""
    sites, prev = [stem], stem.out_gate
    for block in model.blocks():
        stream = model.gate(f"layer{block.stage}.gate")
        sites += block_sites(block, prev, stream)
        prev = stream
    sites.append(Site("fc", prev, None, stage=len(model.arch["depths"]), role="head"))
    return sites


class CIFARNet(StagedModel):
    """A 3×3 conv-BN-ReLU stem, stages of blocks (the first of stages 2… halves the resolution),
    global average pooling and a linear classifier, for 32×32 inputs. The stem and every block
    write their stage's channels under the stage's gate `layer<k>.gate`. Subclasses say what a
    block is (`make_block`) and which layers it holds (`block_sites`); `sizes`/`removed` build a
    compact (exported) copy."""

    gates_follow_bn = True      # every channel gate multiplies its BN's output directly

    def __init__(self, depths=(3, 3, 3), widths=(16, 32, 64), num_classes: int = 10,
                 in_channels: int = 3, width_multiplier: float = 1.0, gate_channels: bool = True,
                 gate_blocks: bool = False, sizes: dict[str, int] | None = None,
                 removed: set[str] | frozenset = frozenset()):
        super().__init__()
        self.arch = dict(depths=tuple(depths), widths=tuple(widths), num_classes=num_classes,
                         in_channels=in_channels, width_multiplier=width_multiplier)
        self.gate_channels, self.gate_blocks = gate_channels, gate_blocks
        self.removed = frozenset(removed)   # blocks exported as identities: no sites, no depth
        sizes = sizes or {}
        widths = [scaled(w, width_multiplier) for w in widths]
        stream = [sizes.get(f"layer{k + 1}.gate", w) for k, w in enumerate(widths)]

        self.conv1 = Conv2d(in_channels, stream[0], 3, 1, 1, bias=False)
        self.bn1 = BatchNorm2d(stream[0])

        def block(name: str, k: int, j: int, cin: int) -> nn.Module:
            return self.make_block(name, cin, widths[k], stream[k], 2 if (j == 0 and k > 0) else 1,
                                   gate_blocks and j > 0, sizes)

        add_stages(self, depths, stream, stream[0], self.removed,
                   lambda n: maybe_gate(ChannelGate, n, gate_channels), block)
        self.fc = Linear(stream[-1], num_classes)
        initialise(self)

    def make_block(self, name: str, cin: int, width: int, cout: int, stride: int,
                   gate_block: bool, sizes: dict[str, int]) -> nn.Module:
        """Block `name`: `cin` channels in, `cout` (the stage's) out; `width` is the stage's
        nominal width, `sizes` the compact widths of the gates inside it."""
        raise NotImplementedError

    def block_sites(self, block: Block, prev: str | None, stream: str | None) -> list[Site]:
        """The gated layers of `block`, which reads channels gated by `prev` and writes the
        stage's channels, gated by `stream`."""
        raise NotImplementedError

    def features(self, x: Tensor) -> Tensor:
        """The last stage's output, before pooling (what a segmentation head reads)."""
        return run_stages(self, F.relu(self.layer1.gate(self.bn1(self.conv1(x)))))

    def forward(self, x: Tensor) -> Tensor:
        x = F.adaptive_avg_pool2d(self.features(x), 1).flatten(1)
        return self.fc(x)

    # -- structure description (used by costs and export) ---------------------------------------
    def sites(self) -> list[Site]:
        stem = Site("conv1", None, self.gate("layer1.gate"), bn="bn1", stage=1, role="stream")
        return staged_sites(self, stem, self.block_sites)
