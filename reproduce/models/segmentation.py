"""Semantic segmentation: a gated ResNet backbone and an FCN head, in torchvision's layout.

    backbone    a gated ResNet without its pooling and classifier, with all of its gates: each
                stage's stream channels, each block's inner channels, optionally its blocks
    classifier  torchvision's FCNHead: 3×3 conv (C -> head) + BN + ReLU + dropout 0.1 + 1×1 conv
                (head -> classes); a gate after the BN (`classifier.2`) gates the head's hidden
                channels (so the final conv is `classifier.5`, torchvision's `classifier.4`)
    output      the class logits upsampled bilinearly to the input size, (N, classes, H, W)

Names follow torchvision's segmentation models (`backbone.*`, `classifier.*`). The backbone
reuses the classifier's gates and export unchanged: its sites, blocks and gates are the ResNet's,
prefixed with `backbone.`.

  fcn_resnet20, fcn_resnet56   the CIFAR ResNet-20 / -56 (resnet_cifar.py, widths 16/32/64,
                               output stride 4), head width 64
  fcn_resnet50                 torchvision's fcn_resnet50 (without the auxiliary head): the
                               ImageNet ResNet-50 (resnet_imagenet.py) with stages 3 and 4
                               dilated instead of strided (output stride 8), head width 512
                               (2048 / 4). With gates off its state dict loads torchvision's
                               `fcn_resnet50(aux_loss=False)` weights once `classifier.4` is
                               renamed `classifier.5`.
"""

from __future__ import annotations

from dataclasses import replace

import torch.nn.functional as F
from torch import Tensor, nn

from ..method.gates import ChannelGate
from ..method.structure import Block, GatedModel, Site
from .layers import BatchNorm2d, Conv2d, initialise, scaled
from .registry import register_model
from .resnet_cifar import ResNetCIFAR
from .resnet_imagenet import ResNetImageNet

PREFIX = "backbone."


def _prefixed(name: str | None) -> str | None:
    return None if name is None else PREFIX + name


def _backbone_args(sizes: dict[str, int] | None, removed) -> tuple[dict[str, int], set[str]]:
    """The backbone's own widths and removed blocks (names without the `backbone.` prefix)."""
    sizes = sizes or {}
    return ({k[len(PREFIX):]: v for k, v in sizes.items() if k.startswith(PREFIX)},
            {b[len(PREFIX):] for b in removed})


class FCN(GatedModel):
    """A gated ResNet `backbone` (with `features(x)`, `sites()`, `blocks()` and a final `fc`
    site, which is dropped) and an FCN head; subclasses build the backbone."""

    backbone: nn.Module
    gates_follow_bn = True      # every channel gate multiplies its BN's output directly

    def _head(self, head: int, num_classes: int, width_multiplier: float, gate_channels: bool,
              sizes: dict[str, int] | None) -> None:
        cin = self.backbone.fc.in_features            # the last stream's width
        self.backbone.fc = None                       # features only: no pooling, no classifier
        mid = (sizes or {}).get("classifier.2", scaled(head, width_multiplier))
        self.gate_channels = gate_channels
        self.classifier = nn.Sequential(
            Conv2d(cin, mid, 3, 1, 1, bias=False), BatchNorm2d(mid),
            ChannelGate(mid) if gate_channels else nn.Identity(), nn.ReLU(inplace=True),
            nn.Dropout(0.1), Conv2d(mid, num_classes, 1))
        initialise(self.classifier)

    def forward(self, x: Tensor) -> Tensor:
        out = self.classifier(self.backbone.features(x))
        return F.interpolate(out, size=x.shape[-2:], mode="bilinear", align_corners=False)

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


class SegmentationResNet(FCN):
    """FCN on the CIFAR ResNet (output stride 4)."""

    def __init__(self, depths=(3, 3, 3), widths=(16, 32, 64), head: int = 64,
                 num_classes: int = 21, in_channels: int = 3, width_multiplier: float = 1.0,
                 gate_channels: bool = True, gate_blocks: bool = False,
                 sizes: dict[str, int] | None = None, removed=frozenset()):
        super().__init__()
        self.arch = dict(depths=tuple(depths), widths=tuple(widths), head=head,
                         num_classes=num_classes, in_channels=in_channels,
                         width_multiplier=width_multiplier)
        self.removed = frozenset(removed)
        inner, inner_removed = _backbone_args(sizes, removed)
        self.backbone = ResNetCIFAR(depths, widths, 1, in_channels, width_multiplier,
                                    gate_channels, gate_blocks, inner, inner_removed)
        self._head(head, num_classes, width_multiplier, gate_channels, sizes)


class SegmentationResNetImageNet(FCN):
    """FCN on the bottleneck ResNet of resnet_imagenet.py, dilated to output stride 8."""

    def __init__(self, depths=(3, 4, 6, 3), widths=(64, 128, 256, 512), expansion: int = 4,
                 head: int = 512, num_classes: int = 21, in_channels: int = 3,
                 width_multiplier: float = 1.0, gate_channels: bool = True,
                 gate_blocks: bool = False, sizes: dict[str, int] | None = None,
                 removed=frozenset(), replace_stride_with_dilation=(False, True, True)):
        super().__init__()
        dilate = tuple(bool(d) for d in replace_stride_with_dilation)
        self.arch = dict(depths=tuple(depths), widths=tuple(widths), expansion=expansion,
                         head=head, num_classes=num_classes, in_channels=in_channels,
                         width_multiplier=width_multiplier, replace_stride_with_dilation=dilate)
        self.removed = frozenset(removed)
        inner, inner_removed = _backbone_args(sizes, removed)
        self.backbone = ResNetImageNet(depths, widths, expansion, 1, in_channels, width_multiplier,
                                       gate_channels, gate_blocks, inner, inner_removed,
                                       replace_stride_with_dilation=dilate)
        self._head(head, num_classes, width_multiplier, gate_channels, sizes)


def _fcn(name: str, depths):
    @register_model(name, input_size=(3, 32, 32), num_classes=21)
    def build(**kwargs) -> SegmentationResNet:
        return SegmentationResNet(depths=depths, **kwargs)
    return build


_fcn("fcn_resnet20", (3, 3, 3))
_fcn("fcn_resnet56", (9, 9, 9))


@register_model("fcn_resnet50", input_size=(3, 480, 480), num_classes=21,
                min_size=32)
def fcn_resnet50(**kwargs) -> SegmentationResNetImageNet:
    return SegmentationResNetImageNet(depths=(3, 4, 6, 3), **kwargs)
