"""Layers that accept zero channels, and that can run on their active channels only.

An exported architecture may contain a layer whose every channel was pruned. PyTorch's conv,
batch-norm and pooling kernels reject zero-channel tensors, so compact models are built from these
drop-in subclasses: a zero-width layer costs nothing and behaves exactly as the gated layer it
replaces (a conv reading no channels outputs zeros, then BN adds its shift).

Restructured execution (method/execution.py) sets `active` on Conv2d, Linear and BatchNorm2d for
one forward: the indices of the input and output channels that are on (None: all). The layer then
computes on those channels only, with its full-size parameters sliced inside the forward, so in
training each parameter's gradient is the slice's gradient scattered back (zero for the closed
channels), exactly what masked execution gives; in evaluation (the hard architecture) a
BatchNorm2d normalises the active channels with their running statistics. A BatchNorm2d may also
carry the channel gate that follows it (`fold`, see gates.Fold).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _out_size(size: int, k: int, s: int, p: int, d: int = 1, ceil: bool = False) -> int:
    num = size + 2 * p - d * (k - 1) - 1
    return (-(-num // s) if ceil else num // s) + 1


def _take(t: Tensor | None, dim: int, idx: Tensor | None) -> Tensor | None:
    return t if t is None or idx is None else t.index_select(dim, idx)


def _take_weight(w: Tensor, cout: Tensor | None, cin: Tensor | None) -> Tensor:
    """w[cout][:, cin] as one index_select over the (out · in) rows of w: the backward of an
    index_select along dim 1 is a scatter that is tens of times slower on CPU."""
    if cin is None:
        return _take(w, 0, cout)
    n_out, n_in = w.shape[:2]
    rows = torch.arange(n_out, device=w.device) if cout is None else cout
    flat = (rows[:, None] * n_in + cin[None, :]).flatten()
    out = w.reshape(n_out * n_in, -1).index_select(0, flat)
    return out.view(rows.numel(), cin.numel(), *w.shape[2:])


class Conv2d(nn.Conv2d):
    active: tuple[Tensor | None, Tensor | None] | None = None   # (input, output) channel indices

    def forward(self, x: Tensor) -> Tensor:
        if self.active is not None:
            return self._forward_active(x, *self.active)
        if self.out_channels and self.in_channels:
            return super().forward(x)
        return self._zeros(x, self.out_channels, self.bias)

    def _forward_active(self, x: Tensor, cin: Tensor | None, cout: Tensor | None) -> Tensor:
        depthwise = self.groups > 1           # only depthwise grouping is restructured
        w = _take_weight(self.weight, cout, None if depthwise else cin)
        b = _take(self.bias, 0, cout)
        if w.shape[0] == 0 or w.shape[1] == 0 or x.shape[1] == 0:
            return self._zeros(x, w.shape[0], b)
        return F.conv2d(x, w, b, self.stride, self.padding, self.dilation,
                        w.shape[0] if depthwise else 1)

    def _zeros(self, x: Tensor, channels: int, bias: Tensor | None) -> Tensor:
        n, _, h, w = x.shape
        kh, kw = self.kernel_size
        (sh, sw), (ph, pw), (dh, dw) = self.stride, self.padding, self.dilation
        shape = (n, channels, _out_size(h, kh, sh, ph, dh), _out_size(w, kw, sw, pw, dw))
        y = x.new_zeros(shape)
        if bias is not None and channels:
            y = y + bias.view(1, -1, 1, 1)
        return y


class Linear(nn.Linear):
    active: tuple[Tensor | None, Tensor | None] | None = None   # (input, output) feature indices

    def forward(self, x: Tensor) -> Tensor:
        if self.active is None:
            return super().forward(x)
        cin, cout = self.active
        return F.linear(x, _take_weight(self.weight, cout, cin), _take(self.bias, 0, cout))


class BatchNorm2d(nn.BatchNorm2d):
    active: Tensor | None = None          # indices of the channels that are on (None: all)
    fold = None                           # the gate after this BN, folded into its affine (Fold)

    def forward(self, x: Tensor) -> Tensor:
        if self.active is not None or self.fold is not None:
            return self._forward_active(x, self.active)
        return super().forward(x) if self.num_features else x

    def _forward_active(self, x: Tensor, idx: Tensor | None) -> Tensor:
        """BN on the active channels; in training only their running statistics move (as in
        _BatchNorm), in evaluation they normalise. With a folded gate, weight and bias are scaled
        by the gate's values (gates.Fold)."""
        fold = self.fold
        if idx is not None and idx.numel() == 0:
            return x if fold is None else fold.done(x)
        factor = 0.0 if self.momentum is None else self.momentum
        track = self.track_running_stats and self.running_mean is not None
        batch_stats = self.training or not track       # (as in _BatchNorm)
        if self.training and track and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:          # cumulative moving average
                factor = 1.0 / float(self.num_batches_tracked)
        sliced = track and idx is not None     # all channels: F.batch_norm updates them in place
        mean = (self.running_mean.index_select(0, idx) if sliced else self.running_mean) \
            if track else None
        var = (self.running_var.index_select(0, idx) if sliced else self.running_var) \
            if track else None
        weight, bias = _take(self.weight, 0, idx), _take(self.bias, 0, idx)
        if fold is not None:
            weight, bias = fold.scale(weight, bias)
        y = F.batch_norm(x, mean, var, weight, bias, batch_stats, factor, self.eps)
        if sliced and self.training:
            with torch.no_grad():
                self.running_mean.index_copy_(0, idx, mean)
                self.running_var.index_copy_(0, idx, var)
        return y if fold is None else fold.done(y)


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


__all__ = ["Conv2d", "Linear", "BatchNorm2d", "MaxPool2d", "initialise", "maybe_gate", "scaled", "torch"]
