"""Layers that accept zero channels.

An exported architecture may contain a layer whose every channel was pruned. PyTorch's conv,
batch-norm and pooling kernels reject zero-channel tensors, so compact models are built from these
drop-in subclasses: a zero-width layer costs nothing and behaves exactly as the gated layer it
replaces (a conv reading no channels outputs zeros, then BN adds its shift).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _out_size(size: int, k: int, s: int, p: int, d: int = 1, ceil: bool = False) -> int:
    num = size + 2 * p - d * (k - 1) - 1
    return (-(-num // s) if ceil else num // s) + 1


class Conv2d(nn.Conv2d):
    def forward(self, x: Tensor) -> Tensor:
        if self.out_channels and self.in_channels:
            return super().forward(x)
        n, _, h, w = x.shape
        kh, kw = self.kernel_size
        (sh, sw), (ph, pw), (dh, dw) = self.stride, self.padding, self.dilation
        shape = (n, self.out_channels, _out_size(h, kh, sh, ph, dh), _out_size(w, kw, sw, pw, dw))
        y = x.new_zeros(shape)
        if self.bias is not None and self.out_channels:
            y = y + self.bias.view(1, -1, 1, 1)
        return y


class BatchNorm2d(nn.BatchNorm2d):
    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x) if self.num_features else x


class MaxPool2d(nn.MaxPool2d):
    def forward(self, x: Tensor) -> Tensor:
        if x.shape[1]:
            return super().forward(x)
        # pool one dummy channel for the output size, then drop it
        return F.max_pool2d(x.new_zeros(x.shape[0], 1, *x.shape[2:]), self.kernel_size, self.stride,
                            self.padding, self.dilation, self.ceil_mode)[:, :0]


def initialise(model: nn.Module) -> None:
    """He init for convs, unit BN, small uniform linear init (the usual CIFAR recipe)."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d) and m.weight.numel():
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear) and m.weight.numel():
            nn.init.kaiming_uniform_(m.weight, a=5 ** 0.5)
            if m.bias is not None:
                bound = 1 / max(1, m.in_features) ** 0.5
                nn.init.uniform_(m.bias, -bound, bound)


def maybe_gate(gate_cls, n: int, gated: bool) -> nn.Module:
    return gate_cls(n) if gated else nn.Identity()


def scaled(width: int, multiplier: float) -> int:
    return max(1, int(round(width * multiplier)))


__all__ = ["Conv2d", "BatchNorm2d", "MaxPool2d", "initialise", "maybe_gate", "scaled", "torch"]
