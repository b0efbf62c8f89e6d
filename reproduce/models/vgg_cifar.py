"""VGG for CIFAR (conv-BN-ReLU stacks, max-pool between stages, one linear classifier).

Every conv's output channels carry a gate `gate<i>` (after BN, before ReLU). A stage is the run of
convs between two poolings; VGG-16 has stages of 2, 2, 3, 3, 3 convs. Pooling stops halving once
the map is 1×1 (ceil mode), so the same net runs on 8×8 digits and 32×32 CIFAR.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from ..method.gates import ChannelGate
from ..method.structure import GatedModel, Site
from .layers import BatchNorm2d, Conv2d, Linear, MaxPool2d, initialise, scaled
from .registry import register_model

CONFIGS = {
    "vgg11": [[64], [128], [256, 256], [512, 512], [512, 512]],
    "vgg13": [[64, 64], [128, 128], [256, 256], [512, 512], [512, 512]],
    "vgg16": [[64, 64], [128, 128], [256, 256, 256], [512, 512, 512], [512, 512, 512]],
    "vgg19": [[64, 64], [128, 128], [256] * 4, [512] * 4, [512] * 4],
}


class VGGCIFAR(GatedModel):
    gates_follow_bn = True      # every channel gate multiplies its BN's output directly

    def __init__(self, stages=tuple(map(tuple, CONFIGS["vgg16"])), num_classes: int = 10,
                 in_channels: int = 3, width_multiplier: float = 1.0, gate_channels: bool = True,
                 gate_blocks: bool = False, sizes: dict[str, int] | None = None,
                 removed=frozenset()):
        super().__init__()
        self.arch = dict(stages=tuple(map(tuple, stages)), num_classes=num_classes,
                         in_channels=in_channels, width_multiplier=width_multiplier)
        self.gate_channels = gate_channels
        sizes = sizes or {}
        self.plan: list[tuple[int, int]] = []           # (layer index, stage) in order
        cin, i = in_channels, 0
        for k, widths in enumerate(stages):
            for w in widths:
                i += 1
                w = sizes.get(f"gate{i}", scaled(w, width_multiplier))
                self.add_module(f"conv{i}", Conv2d(cin, w, 3, 1, 1, bias=False))
                self.add_module(f"bn{i}", BatchNorm2d(w))
                self.add_module(f"gate{i}", ChannelGate(w) if gate_channels else nn.Identity())
                self.plan.append((i, k + 1))
                cin = w
        self.pool = MaxPool2d(2, 2, ceil_mode=True)
        self.fc = Linear(cin, num_classes)
        initialise(self)

    def forward(self, x: Tensor) -> Tensor:
        for n, (i, stage) in enumerate(self.plan):
            x = F.relu(getattr(self, f"gate{i}")(getattr(self, f"bn{i}")(getattr(self, f"conv{i}")(x))))
            last_of_stage = n + 1 == len(self.plan) or self.plan[n + 1][1] != stage
            if last_of_stage and x.shape[-1] > 1:
                x = self.pool(x)
        x = F.adaptive_avg_pool2d(x, 1).flatten(1) if x.shape[1] else x.new_zeros(x.shape[0], 0)
        return self.fc(x)

    def sites(self) -> list[Site]:
        def g(i):
            return f"gate{i}" if self.gate_channels and i > 0 else None
        sites = [Site(f"conv{i}", g(i - 1), g(i), None, f"bn{i}", stage, role="plain")
                 for i, stage in self.plan]
        sites.append(Site("fc", g(self.plan[-1][0]), None, stage=self.plan[-1][1], role="head"))
        return sites


def _vgg(name: str, stages: list[list[int]]):
    @register_model(name)
    def build(**kwargs) -> VGGCIFAR:
        return VGGCIFAR(stages=stages, **kwargs)
    return build


for _name, _stages in CONFIGS.items():
    _vgg(_name, _stages)
