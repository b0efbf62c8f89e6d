"""Semantic segmentation: a gated ResNet backbone and an FCN head, in torchvision's layout.

    backbone    the CIFAR ResNet of resnet_cifar.py without its pooling and classifier (output
                stride 4), with all of its gates: each stage's stream channels, each block's
                inner channels, optionally its blocks
    classifier  torchvision's FCNHead: 3×3 conv (C -> head) + BN + ReLU + dropout 0.1 + 1×1 conv
                (head -> classes); a gate after the BN (`classifier.2`) gates the head's hidden
                channels
    output      the class logits upsampled bilinearly to the input size, (N, classes, H, W)

Names follow torchvision's segmentation models (`backbone.*`, `classifier.*`). The backbone
reuses the classifier's gates and export unchanged: its sites, blocks and gates are the ResNet's,
prefixed with `backbone.`.

  fcn_resnet20, fcn_resnet56   backbones ResNet-20 / -56 (widths 16/32/64), head width 64
"""

from __future__ import annotations

from dataclasses import replace

import torch.nn.functional as F
from torch import Tensor, nn

from ..method.gates import ChannelGate
from ..method.structure import Block, GatedModel, Site
from .layers import BatchNorm2d, Conv2d, initialise, scaled
from .registry import register_class, register_model
from .resnet_cifar import ResNetCIFAR

PREFIX = "backbone."


def _prefixed(name: str | None) -> str | None:
    return None if name is None else PREFIX + name


@register_class
class SegmentationResNet(GatedModel):
    gates_follow_bn = True      # every channel gate multiplies its BN's output directly

    def __init__(self, depths=(3, 3, 3), widths=(16, 32, 64), head: int = 64,
                 num_classes: int = 21, in_channels: int = 3, width_multiplier: float = 1.0,
                 gate_channels: bool = True, gate_blocks: bool = False,
                 sizes: dict[str, int] | None = None, removed=frozenset()):
        super().__init__()
        self.arch = dict(depths=tuple(depths), widths=tuple(widths), head=head,
                         num_classes=num_classes, in_channels=in_channels,
                         width_multiplier=width_multiplier)
        self.gate_channels = gate_channels
        sizes = sizes or {}
        inner = {k[len(PREFIX):]: v for k, v in sizes.items() if k.startswith(PREFIX)}
        self.removed = frozenset(removed)
        self.backbone = ResNetCIFAR(depths, widths, 1, in_channels, width_multiplier,
                                    gate_channels, gate_blocks, inner,
                                    {b[len(PREFIX):] for b in removed})
        cin = self.backbone.fc.in_features            # the last stream's width
        self.backbone.fc = None                       # features only: no pooling, no classifier
        mid = sizes.get("classifier.2", scaled(head, width_multiplier))
        self.classifier = nn.Sequential(
            Conv2d(cin, mid, 3, 1, 1, bias=False), BatchNorm2d(mid),
            ChannelGate(mid) if gate_channels else nn.Identity(), nn.ReLU(inplace=True),
            nn.Dropout(0.1), Conv2d(mid, num_classes, 1))
        initialise(self.classifier)

    def forward(self, x: Tensor) -> Tensor:
        size = x.shape[-2:]
        b = self.backbone
        h = F.relu(b.layer1.gate(b.bn1(b.conv1(x))))
        for k in range(len(self.arch["depths"])):
            h = getattr(b, f"layer{k + 1}")(h)
        return F.interpolate(self.classifier(h), size=size, mode="bilinear", align_corners=False)

    # -- structure description (used by costs and export) ---------------------------------------
    def blocks(self) -> list[Block]:
        return [replace(bl, name=PREFIX + bl.name, gate=_prefixed(bl.gate))
                for bl in self.backbone.blocks()]

    def sites(self) -> list[Site]:
        inner = [replace(s, name=PREFIX + s.name, in_gate=_prefixed(s.in_gate),
                         out_gate=_prefixed(s.out_gate), block=_prefixed(s.block),
                         bn=_prefixed(s.bn)) for s in self.backbone.sites()]
        last = inner.pop().in_gate                    # the fc's input: the last stream's gate
        stage = len(self.arch["depths"]) + 1
        gate = "classifier.2" if self.gate_channels else None
        return inner + [Site("classifier.0", last, gate, bn="classifier.1", stage=stage,
                             role="inner"),
                        Site("classifier.5", gate, None, stage=stage, role="head")]


def _fcn(name: str, depths):
    @register_model(name, input_size=(3, 32, 32), num_classes=21, family="segmentation")
    def build(**kwargs) -> SegmentationResNet:
        return SegmentationResNet(depths=depths, **kwargs)
    return build


_fcn("fcn_resnet20", (3, 3, 3))
_fcn("fcn_resnet56", (9, 9, 9))
