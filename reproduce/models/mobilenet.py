"""MobileNetV1 (Howard et al. 2017) with growth gates.

A 3×3 stride-2 stem conv, then 13 depthwise-separable blocks (3×3 depthwise conv-BN-ReLU, 1×1
pointwise conv-BN-ReLU), global average pooling and one linear classifier. At 224 px and width
multiplier 1.0 it has the paper's 4.2 M parameters and 569 M mult-adds (conv and linear layers).
`width_multiplier` is the paper's α (0.25, 0.5, 0.75, 1.0: the uniform-width baselines).

Gates (docs/METHOD.md, "Structures and gates"):
  gate0            the stem's output channels
  features.<i>.gate  block i's pointwise output channels
A depthwise conv has one filter per input channel, so its channels are its input's: block i's
depthwise conv reads and writes the channels of the previous gate (Site.depthwise), and that
gate is applied again after the depthwise BN, so a closed channel stays exactly zero (BN's shift
would otherwise revive it). No block can be removed: a stride-1 block with as many outputs as
inputs could pass its input through, but that would tie its output channels to its input's.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from ..method.gates import ChannelGate
from ..method.structure import Block, GatedModel, Site
from .layers import BatchNorm2d, Conv2d, Linear, initialise, scaled
from .registry import register_model

# (output channels, stride) of the 13 depthwise-separable blocks
BLOCKS = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), (512, 1), (512, 1),
          (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1))


def depthwise(channels: int, stride: int) -> Conv2d:
    # groups must be positive: a zero-width depthwise conv is an empty conv (it outputs nothing)
    return Conv2d(channels, channels, 3, stride, 1, groups=max(1, channels), bias=False)


class SeparableBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, gate_channels: bool):
        super().__init__()
        self.dw = depthwise(cin, stride)
        self.dw_bn = BatchNorm2d(cin)
        self.pw = Conv2d(cin, cout, 1, bias=False)
        self.pw_bn = BatchNorm2d(cout)
        self.gate = ChannelGate(cout) if gate_channels else nn.Identity()

    def forward(self, x: Tensor, in_gate: nn.Module) -> Tensor:
        x = F.relu(in_gate(self.dw_bn(self.dw(x))))
        return F.relu(self.gate(self.pw_bn(self.pw(x))))


class MobileNetV1(GatedModel):
    """MobileNetV1; `sizes` builds a compact (exported) copy (`removed` is always empty)."""

    gates_follow_bn = True      # every channel gate multiplies its BN's output directly

    def __init__(self, blocks=BLOCKS, stem: int = 32, num_classes: int = 1000,
                 in_channels: int = 3, width_multiplier: float = 1.0, gate_channels: bool = True,
                 gate_blocks: bool = False, sizes: dict[str, int] | None = None,
                 removed: set[str] | frozenset = frozenset()):
        super().__init__()
        if gate_blocks or removed:
            raise ValueError("MobileNetV1 has no removable blocks: set model.gate_blocks: false")
        self.arch = dict(blocks=tuple(map(tuple, blocks)), stem=stem, num_classes=num_classes,
                         in_channels=in_channels, width_multiplier=width_multiplier)
        self.gate_channels = gate_channels
        sizes = sizes or {}
        cin = sizes.get("gate0", scaled(stem, width_multiplier))
        self.conv1 = Conv2d(in_channels, cin, 3, 2, 1, bias=False)
        self.bn1 = BatchNorm2d(cin)
        self.gate0 = ChannelGate(cin) if gate_channels else nn.Identity()
        self.features = nn.ModuleList()
        for i, (cout, stride) in enumerate(blocks):
            cout = sizes.get(f"features.{i}.gate", scaled(cout, width_multiplier))
            self.features.append(SeparableBlock(cin, cout, stride, gate_channels))
            cin = cout
        self.fc = Linear(cin, num_classes)
        initialise(self)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.gate0(self.bn1(self.conv1(x))))
        gate = self.gate0
        for block in self.features:
            x = block(x, gate)
            gate = block.gate
        x = F.adaptive_avg_pool2d(x, 1).flatten(1) if x.shape[1] else x.new_zeros(x.shape[0], 0)
        return self.fc(x)

    # -- structure description (used by costs and export) ---------------------------------------
    def _stages(self) -> list[int]:
        """Stage of every block: one per resolution (the stem's stride opens stage 1)."""
        stage, out = 1, []
        for _, stride in self.arch["blocks"]:
            stage += stride == 2
            out.append(stage)
        return out

    def blocks(self) -> list[Block]:
        return [Block(f"features.{i}", k) for i, k in enumerate(self._stages())]

    def sites(self) -> list[Site]:
        def g(name):
            return name if self.gate_channels else None
        sites = [Site("conv1", None, g("gate0"), bn="bn1", stage=1, role="plain")]
        prev = g("gate0")
        for i, k in enumerate(self._stages()):
            name, out = f"features.{i}", g(f"features.{i}.gate")
            sites += [Site(f"{name}.dw", prev, prev, None, f"{name}.dw_bn", k, depthwise=True,
                           role="plain"),
                      Site(f"{name}.pw", prev, out, None, f"{name}.pw_bn", k, role="plain")]
            prev = out
        sites.append(Site("fc", prev, None, stage=self._stages()[-1], role="head"))
        return sites


@register_model("mobilenet_v1", input_size=(3, 224, 224), num_classes=1000,
                min_size=32)
def mobilenet_v1(**kwargs) -> MobileNetV1:
    return MobileNetV1(**kwargs)
