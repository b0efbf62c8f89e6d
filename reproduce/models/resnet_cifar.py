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
from ..method.structure import Block, Site
from .layers import BatchNorm2d, Conv2d
from .registry import register_model, register_pattern
from .stages import CIFARNet


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
        if skipped(self.block_gate):     # restructured execution: a closed block is not computed
            return x                     # (x is post-ReLU, so this is relu(x + 0·F(x)))
        out = F.relu(self.gate1(self.bn1(self.conv1(x))))
        out = self.block_gate(stream_gate(self.bn2(self.conv2(out))))
        identity = x if self.shortcut is None else stream_gate(self.shortcut(x))
        return F.relu(identity + out)


class ResNetCIFAR(CIFARNet):
    """Basic-block ResNet for 32×32 inputs; `sizes`/`removed` build a compact (exported) copy."""

    def make_block(self, name: str, cin: int, width: int, cout: int, stride: int,
                   gate_block: bool, sizes: dict[str, int]) -> BasicBlock:
        return BasicBlock(cin, sizes.get(f"{name}.gate1", width), cout, stride,
                          self.gate_channels, gate_block)

    def block_sites(self, block: Block, prev: str | None, stream: str | None) -> list[Site]:
        name, stage, block_gate, g = block.name, block.stage, block.gate, self.gate
        sites = [
            Site(f"{name}.conv1", prev, g(f"{name}.gate1"), block_gate, f"{name}.bn1", stage,
                 role="inner"),
            Site(f"{name}.conv2", g(f"{name}.gate1"), stream, block_gate, f"{name}.bn2", stage,
                 role="stream"),
        ]
        if name.endswith(".0") and stage > 1:
            sites.append(Site(f"{name}.shortcut.0", prev, stream, None, f"{name}.shortcut.1",
                              stage, role="shortcut"))
        return sites


def _resnet(n: int):
    @register_model(f"resnet{6 * n + 2}")
    def build(**kwargs) -> ResNetCIFAR:
        return ResNetCIFAR(depths=(n, n, n), **kwargs)
    return build


for _n in (3, 5, 7, 9, 18):
    _resnet(_n)


@register_pattern("basic3resnet-A-B-C", r"basic3resnet-(\d+)-(\d+)-(\d+)$",
                  example="basic3resnet-2-4-3")
def _basic3resnet(*depths: str, **kwargs) -> ResNetCIFAR:
    return ResNetCIFAR(depths=tuple(map(int, depths)), **kwargs)
