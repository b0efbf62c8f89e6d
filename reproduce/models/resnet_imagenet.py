"""ResNet-50 for ImageNet (He et al. 2016, torchvision's layout) with growth gates.

Bottleneck blocks 3-4-6-3 of widths 64/128/256/512 (×4 expansion on the stream), the stride on
the 3×3 conv (torchvision's "v1.5"), a projection shortcut (1×1 conv + BN) on the first block of
every stage. Module names follow torchvision's, so with gates off the state dict is
interchangeable with `torchvision.models.resnet50()`'s (and so are params and MACs: 25.56 M,
4.09 G MACs at 224 px).

Dilation (`replace_stride_with_dilation`, torchvision's argument and rule): a stage k ≥ 2 marked
True keeps the resolution of the stage before it and dilates its 3×3 convs instead: its first
block with the dilation of the stage before, the others with that times the stride it replaced.
The segmentation backbone (models/segmentation.py) dilates stages 3 and 4, for an output stride
of 8. The default, no dilation, is the classifier above.

Gates (docs/METHOD.md, "Structures and gates"):
  stem_gate                the stem's 64 channels (after its BN, before the max-pool)
  layer<k>.gate            channels of stage k's residual stream, shared by every block of the
                           stage (as in the CIFAR ResNets), applied to each block's conv3 output
                           and to the projection shortcut
  layer<k>.<j>.gate1/gate2 the inner channels of block j (conv1 and conv2 outputs)
  layer<k>.<j>.block_gate  the whole block (j ≥ 1): x + g·F(x), a closed block is the identity
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from ..method.gates import BlockGate, ChannelGate, skipped
from ..method.structure import Block, Site, StagedModel
from .layers import BatchNorm2d, Conv2d, Linear, MaxPool2d, initialise, maybe_gate, scaled
from .registry import register_model
from .stages import add_stages, run_stages, staged_sites


class Bottleneck(nn.Module):
    def __init__(self, cin: int, mid1: int, mid2: int, cout: int, stride: int, project: bool,
                 gate_channels: bool, gate_block: bool, dilation: int = 1):
        super().__init__()
        self.conv1 = Conv2d(cin, mid1, 1, bias=False)
        self.bn1 = BatchNorm2d(mid1)
        self.gate1 = maybe_gate(ChannelGate, mid1, gate_channels)
        self.conv2 = Conv2d(mid1, mid2, 3, stride, dilation, dilation=dilation, bias=False)
        self.bn2 = BatchNorm2d(mid2)
        self.gate2 = maybe_gate(ChannelGate, mid2, gate_channels)
        self.conv3 = Conv2d(mid2, cout, 1, bias=False)
        self.bn3 = BatchNorm2d(cout)
        self.block_gate = BlockGate() if gate_block else nn.Identity()
        self.downsample = None
        if project:       # decided by position, not by widths: a compact copy keeps the layer
            self.downsample = nn.Sequential(Conv2d(cin, cout, 1, stride, bias=False),
                                            BatchNorm2d(cout))

    def forward(self, x: Tensor, stream_gate: nn.Module) -> Tensor:
        if skipped(self.block_gate):     # restructured execution: a closed block is not computed
            return x                     # (x is post-ReLU, so this is relu(x + 0·F(x)))
        out = F.relu(self.gate1(self.bn1(self.conv1(x))))
        out = F.relu(self.gate2(self.bn2(self.conv2(out))))
        out = self.block_gate(stream_gate(self.bn3(self.conv3(out))))
        identity = x if self.downsample is None else stream_gate(self.downsample(x))
        return F.relu(identity + out)


class ResNetImageNet(StagedModel):
    """Bottleneck ResNet for 224-px inputs; `sizes`/`removed` build a compact (exported) copy."""

    gates_follow_bn = True      # every channel gate multiplies its BN's output directly

    def __init__(self, depths=(3, 4, 6, 3), widths=(64, 128, 256, 512), expansion: int = 4,
                 num_classes: int = 1000, in_channels: int = 3, width_multiplier: float = 1.0,
                 gate_channels: bool = True, gate_blocks: bool = False,
                 sizes: dict[str, int] | None = None, removed: set[str] | frozenset = frozenset(),
                 replace_stride_with_dilation=(False, False, False),
                 zero_init_residual: bool = False):
        super().__init__()
        dilate = tuple(bool(d) for d in replace_stride_with_dilation)
        if len(dilate) != len(depths) - 1:
            raise ValueError(f"replace_stride_with_dilation: one flag per stage after the first "
                             f"({len(depths) - 1}), got {replace_stride_with_dilation!r}")
        self.arch = dict(depths=tuple(depths), widths=tuple(widths), expansion=expansion,
                         num_classes=num_classes, in_channels=in_channels,
                         width_multiplier=width_multiplier, replace_stride_with_dilation=dilate)
        self.gate_channels, self.gate_blocks = gate_channels, gate_blocks
        self.removed = frozenset(removed)
        sizes = sizes or {}
        mids = [scaled(w, width_multiplier) for w in widths]
        stream = [sizes.get(f"layer{k + 1}.gate", scaled(w * expansion, width_multiplier))
                  for k, w in enumerate(widths)]
        stem = sizes.get("stem_gate", scaled(64, width_multiplier))

        self.conv1 = Conv2d(in_channels, stem, 7, 2, 3, bias=False)
        self.bn1 = BatchNorm2d(stem)
        self.stem_gate = maybe_gate(ChannelGate, stem, gate_channels)
        self.maxpool = MaxPool2d(3, 2, 1)
        plan, dilation = [], 1      # per stage: stride, first block's and later blocks' dilation
        for k in range(len(depths)):
            stride, previous = (2 if k > 0 else 1), dilation
            if k > 0 and dilate[k - 1]:          # torchvision's _make_layer(dilate=True)
                dilation, stride = dilation * stride, 1
            plan.append((stride, previous, dilation))

        def block(name: str, k: int, j: int, cin: int) -> Bottleneck:
            stride, first, later = plan[k]
            return Bottleneck(cin, sizes.get(f"{name}.gate1", mids[k]),
                              sizes.get(f"{name}.gate2", mids[k]), stream[k],
                              stride if j == 0 else 1, j == 0, gate_channels,
                              gate_blocks and j > 0, first if j == 0 else later)

        add_stages(self, depths, stream, stem, self.removed,
                   lambda n: maybe_gate(ChannelGate, n, gate_channels), block)
        self.fc = Linear(stream[-1], num_classes)
        initialise(self)
        if zero_init_residual:      # torchvision's option: each residual branch starts at zero
            for m in self.modules():
                if isinstance(m, Bottleneck):
                    nn.init.zeros_(m.bn3.weight)

    def features(self, x: Tensor) -> Tensor:
        """The last stage's output, before pooling (what a segmentation head reads)."""
        return run_stages(self, self.maxpool(F.relu(self.stem_gate(self.bn1(self.conv1(x))))))

    def forward(self, x: Tensor) -> Tensor:
        x = self.features(x)
        x = F.adaptive_avg_pool2d(x, 1).flatten(1) if x.shape[1] else x.new_zeros(x.shape[0], 0)
        return self.fc(x)

    # -- structure description (used by costs and export) ---------------------------------------
    def sites(self) -> list[Site]:
        stem = Site("conv1", None, self.gate("stem_gate"), bn="bn1", stage=1, role="plain")
        return staged_sites(self, stem, self.block_sites)

    def block_sites(self, block: Block, prev: str | None, stream: str | None) -> list[Site]:
        g, name, k, bg = self.gate, block.name, block.stage, block.gate
        sites = [
            Site(f"{name}.conv1", prev, g(f"{name}.gate1"), bg, f"{name}.bn1", k, role="inner"),
            Site(f"{name}.conv2", g(f"{name}.gate1"), g(f"{name}.gate2"), bg, f"{name}.bn2", k,
                 role="inner"),
            Site(f"{name}.conv3", g(f"{name}.gate2"), stream, bg, f"{name}.bn3", k,
                 role="stream"),
        ]
        if name.endswith(".0"):
            sites.append(Site(f"{name}.downsample.0", prev, stream, None,
                              f"{name}.downsample.1", k, role="shortcut"))
        return sites


@register_model("resnet50", input_size=(3, 224, 224), num_classes=1000,
                min_size=32)
def resnet50(**kwargs) -> ResNetImageNet:
    return ResNetImageNet(depths=(3, 4, 6, 3), **kwargs)
