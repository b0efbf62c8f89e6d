"""CIFAR ResNets (He et al. 2016, 3 stages of basic blocks, widths 16/32/64) with growth gates.

ResNet-20/32/56/110 = Basic3ResNet-n-n-n with n = 3/5/9/18 (AutoGrow's naming).

Gates (docs/METHOD.md, "Structures and gates"):
  layer<k>.gate            channels of stage k's residual stream, shared by every block of the stage
                           (an identity path ties them), applied to the stem / each branch output /
                           the projection shortcut, so a closed channel is zero all along the stage
  layer<k>.<j>.gate1       the inner channels of block j
  layer<k>.<j>.block_gate  the whole block (j ≥ 1): x + g·F(x), a closed block is the identity
The first block of every stage is never removed (it changes resolution and width), which is also
the "one block per stage" seed. Downsampling blocks use a 1×1 conv + BN projection shortcut
(option B) so the stream channels of consecutive stages can be pruned independently.

Restructured training (method/execution.py): the residual stream carries only the stage's active
stream channels (the stem, every conv2 and the projection shortcut write exactly those), and a
closed block returns its input without computing its branch.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from ..method.gates import BlockGate, ChannelGate, skipped
from ..method.structure import Site, StagedModel
from .layers import BatchNorm2d, Conv2d, Linear, initialise, scaled
from .registry import register_class, register_model, register_pattern


class BasicBlock(nn.Module):
    def __init__(self, cin: int, mid: int, cout: int, stride: int, gate_channels: bool,
                 gate_block: bool):
        super().__init__()
        self.conv1 = Conv2d(cin, mid, 3, stride, 1, bias=False)
        self.bn1 = BatchNorm2d(mid)
        self.gate1 = ChannelGate(mid) if gate_channels else nn.Identity()
        self.conv2 = Conv2d(mid, cout, 3, 1, 1, bias=False)
        self.bn2 = BatchNorm2d(cout)
        self.block_gate = BlockGate() if gate_block else nn.Identity()
        self.shortcut = None
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(Conv2d(cin, cout, 1, stride, bias=False), BatchNorm2d(cout))

    def forward(self, x: Tensor, stream_gate: nn.Module) -> Tensor:
        if skipped(self.block_gate):     # restructured training: a closed block is not computed
            return x                     # (x is post-ReLU, so this is relu(x + 0·F(x)))
        out = F.relu(self.gate1(self.bn1(self.conv1(x))))
        out = self.block_gate(stream_gate(self.bn2(self.conv2(out))))
        identity = x if self.shortcut is None else stream_gate(self.shortcut(x))
        return F.relu(identity + out)


class RemovedBlock(nn.Module):
    """What a closed block becomes on export: the identity (its input is already post-ReLU)."""

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


@register_class
class ResNetCIFAR(StagedModel):
    """Basic-block ResNet for 32×32 inputs; `sizes`/`removed` build a compact (exported) copy."""

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
        cin = stream[0]
        for k, (depth, w) in enumerate(zip(depths, widths)):
            blocks = []
            for j in range(depth):
                name = f"layer{k + 1}.{j}"
                if name in removed:
                    blocks.append(RemovedBlock())
                    continue
                mid = sizes.get(f"{name}.gate1", w)
                stride = 2 if (j == 0 and k > 0) else 1
                blocks.append(BasicBlock(cin, mid, stream[k], stride, gate_channels,
                                         gate_blocks and j > 0))
                cin = stream[k]
            cin = stream[k]
            self.add_module(f"layer{k + 1}", Stage(ChannelGate(stream[k]) if gate_channels
                                                   else nn.Identity(), blocks))
        self.fc = Linear(stream[-1], num_classes)
        initialise(self)

    def features(self, x: Tensor) -> Tensor:
        """The last stage's output, before pooling (what a segmentation head reads)."""
        x = F.relu(self.layer1.gate(self.bn1(self.conv1(x))))
        for k in range(len(self.arch["depths"])):
            x = getattr(self, f"layer{k + 1}")(x)
        return x

    def forward(self, x: Tensor) -> Tensor:
        x = F.adaptive_avg_pool2d(self.features(x), 1).flatten(1)
        return self.fc(x)

    # -- structure description (used by costs and export) ---------------------------------------
    def sites(self) -> list[Site]:
        g = self.gate
        sites = [Site("conv1", None, g("layer1.gate"), bn="bn1", stage=1, role="stream")]
        prev = g("layer1.gate")
        for block in self.blocks():
            name, stage, block_gate = block.name, block.stage, block.gate
            stream = g(f"layer{stage}.gate")
            sites += [
                Site(f"{name}.conv1", prev, g(f"{name}.gate1"), block_gate, f"{name}.bn1", stage,
                     role="inner"),
                Site(f"{name}.conv2", g(f"{name}.gate1"), stream, block_gate, f"{name}.bn2", stage,
                     role="stream"),
            ]
            if name.endswith(".0") and stage > 1:
                sites.append(Site(f"{name}.shortcut.0", prev, stream, None, f"{name}.shortcut.1",
                                  stage, role="shortcut"))
            prev = stream
        sites.append(Site("fc", prev, None, stage=len(self.arch["depths"]), role="head"))
        return sites


def _resnet(n: int):
    @register_model(f"resnet{6 * n + 2}", family="resnet_cifar")
    def build(**kwargs) -> ResNetCIFAR:
        return ResNetCIFAR(depths=(n, n, n), **kwargs)
    return build


for _n in (3, 5, 7, 9, 18):
    _resnet(_n)


@register_pattern("basic3resnet-A-B-C", r"basic3resnet-(\d+)-(\d+)-(\d+)$", family="resnet_cifar")
def _basic3resnet(*depths: str):
    return lambda **kwargs: ResNetCIFAR(depths=tuple(map(int, depths)), **kwargs)
