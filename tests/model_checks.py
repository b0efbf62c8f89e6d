"""Which models the generic model tests build, read from the registry, and the checks they share.

A newly registered model is tested without editing a test:
  EVERY_MODEL    one name per registration (each registered name, each pattern's example)
  ONE_PER_CLASS  the first of those names for every model class the registry builds
  IMAGE_MODELS   ONE_PER_CLASS without the models that read tokens (a language model declares
                 `example_input()`; its export and costs have their own tests)
  DEPTH_FAMILIES the families named by their depth per stage (`basic3resnet-A-B-C`), which
                 layer growing and AutoGrow build at any depth
Images are the smallest each model declares (`default_cfg(name).min_size`).
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from reproduce.checkpoint import compact_checkpoint, load_compact
from reproduce.method import CostModel, architecture_summary, export, hard_architecture
from reproduce.method.gates import BlockGate, ChannelGate, Gate, gates_of
from reproduce.models import available_models, builds, create_model, default_cfg, example_models


def reads_tokens(name: str) -> bool:
    return hasattr(builds(name), "example_input")


def _first_per_class(names: list[str]) -> list[str]:
    first: dict[type, str] = {}
    for name in names:
        first.setdefault(builds(name), name)
    return list(first.values())


EVERY_MODEL = example_models()
ONE_PER_CLASS = _first_per_class(EVERY_MODEL)
IMAGE_MODELS = [n for n in ONE_PER_CLASS if not reads_tokens(n)]
DEPTH_FAMILIES = [label.removesuffix("-A-B-C") for label in available_models()
                  if label.endswith("-A-B-C")]


def image_shapes(name: str) -> list[tuple[int, int, int]]:
    """Two inputs: three channels at the smallest size, one channel at 1.5 times it (odd sizes
    deeper down, where a count could round the wrong way)."""
    m = default_cfg(name).min_size
    return [(3, m, m), (1, m + m // 2, m + m // 2)]


def build(name: str, *, gate_blocks: bool = False, **kwargs) -> nn.Module:
    """`create_model`, with block gates only where the model has blocks to gate (MobileNetV1
    refuses them, and says so)."""
    try:
        return create_model(name, gate_blocks=gate_blocks, **kwargs)
    except ValueError as e:
        if not (gate_blocks and "no removable blocks" in str(e)):
            raise
    return create_model(name, gate_blocks=False, **kwargs)


def model_input(model: nn.Module, shape, batch: int = 1) -> torch.Tensor:
    """A random image batch of `shape`, or a language model's own example tokens."""
    if hasattr(model, "example_input"):
        model.reset_state()                 # a recurrent model: no state carried in
        return model.example_input()
    return torch.randn(batch, *shape)


def measured_macs(model: nn.Module, shape) -> float:
    model.eval()
    x = model_input(model, shape)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    return counter.get_total_flops() / 2


def weight_params(model: nn.Module) -> int:
    return sum(m.weight.numel() + (m.bias.numel() if m.bias is not None else 0)
               for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))


def head(model: nn.Module) -> tuple[str, nn.Module]:
    """The classifier layer (the last site, role "head") and its module."""
    site = model.sites()[-1]
    assert site.role == "head"
    return site.name, dict(model.named_modules())[site.name]


def randomise_bn(model: nn.Module) -> None:
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d) and m.num_features:
                m.running_mean.normal_(0, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5).mul_(torch.randn(m.num_features).sign())
                m.bias.normal_(0, 0.5)


def randomise_gates(model: nn.Module, closed_channel_gates: int = 1) -> None:
    """Random logits; `closed_channel_gates` channel gates fully closed, and for block gates at
    least one closed and (if there are two) one open block."""
    with torch.no_grad():
        named = gates_of(model)
        channel = [g for _, g in named if isinstance(g, ChannelGate)]
        blocks = [g for _, g in named if isinstance(g, BlockGate)]
        for g in channel:
            g.logits.copy_(torch.randn(g.n))
            g.logits[int(torch.randint(g.n, ()))] = 0.5    # not every gate empty by chance
        for g in blocks:
            g.logits.copy_(torch.randn(1))
        for i in torch.randperm(len(channel))[:closed_channel_gates].tolist():
            channel[i].logits.copy_(-torch.rand(channel[i].n) - 0.01)
        if blocks:
            order = torch.randperm(len(blocks)).tolist()
            blocks[order[0]].logits.fill_(-0.3)
            if len(blocks) > 1:
                blocks[order[1]].logits.fill_(0.3)


def random_gated(name: str, gate_blocks: bool, shape, width_multiplier: float = 0.25):
    """A gated model with random BN statistics and affine parameters."""
    model = build(name, in_channels=shape[0], num_classes=int(torch.randint(2, 12, ())),
                  width_multiplier=width_multiplier, gate_blocks=gate_blocks)
    randomise_bn(model)
    return model


def check_export(model, shape, tmp_path=None):
    """The exported compact model of a gated image model: no gates, the counted hard MACs and
    parameters (measured), the same outputs, a checkpoint round trip, and a summary that
    states its widths, depths, stages and roles."""
    costs = CostModel(model, shape)
    macs, params = costs.hard()
    compact = export(model)
    assert not any(isinstance(m, Gate) for m in compact.modules())
    assert not compact.training
    # (a) MACs of the physical model, measured by PyTorch, equal the counted hard MACs
    assert measured_macs(compact, shape) == macs
    # (b) params likewise
    assert weight_params(compact) == params
    # the compact model describes itself with the same cost
    own = CostModel(compact, shape)
    assert (own.dense_macs, own.dense_params) == (macs, params)
    assert len(compact.blocks()) == len(model.blocks()) - len(hard_architecture(model)[1])
    # (c) same outputs as the gated model with hard gates, compared in float64: in float32 the
    # two summation orders leave differences above 1e-5 in a deep network's outputs
    model.eval()
    x = torch.randn(5, *shape)
    with torch.no_grad():
        ref, out = model(x), compact(x)
        ref64 = copy.deepcopy(model).double()(x.double())
        out64 = copy.deepcopy(compact).double()(x.double())
    assert ref64.abs().max() > 0
    torch.testing.assert_close(out64, ref64, atol=1e-10, rtol=1e-9)
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)
    # round trip through the checkpoint, in memory and on disk
    ckpt = compact_checkpoint(model, compact)
    with torch.no_grad():
        assert torch.equal(load_compact(ckpt)(x), out)
        if tmp_path is not None:
            path = tmp_path / "compact.pt"
            torch.save(ckpt, path)
            assert torch.equal(load_compact(str(path))(x), out)
    # the summary's widths are the active counts, and the compact layers have those widths
    summary = architecture_summary(model)
    keep, removed = hard_architecture(model)
    named = dict(gates_of(model))
    mods = dict(compact.named_modules())
    for site in model.sites():
        if site.out_gate is None:
            continue
        inside_removed = site.block is not None and named[site.block].logits.item() <= 0
        active = int((named[site.out_gate].logits > 0).sum())
        assert summary["widths"][site.name] == (0 if inside_removed else active)
        if not inside_removed:
            mod = mods[site.name]
            assert (mod.out_channels if isinstance(mod, nn.Conv2d) else mod.out_features) == active
    blocks = model.blocks()
    assert removed == {b.name for b in blocks if b.gate is not None
                       and named[b.gate].logits.item() <= 0}
    for stage in {b.stage for b in blocks}:
        expected = sum(1 for b in blocks if b.stage == stage and b.name not in removed)
        assert summary["depths"][f"stage{stage}"] == expected
    sites = {s.name: s for s in model.sites()}
    for layer, info in summary["layers"].items():    # stage and role, so figures parse no names
        assert (info["stage"], info["role"]) == (sites[layer].stage, sites[layer].role)
        assert info["width"] == summary["widths"][layer]
        mod = dict(model.named_modules())[layer]
        assert info["dense_width"] == (mod.out_channels if isinstance(mod, nn.Conv2d)
                                       else mod.out_features)
    assert summary["removed_blocks"] == sorted(removed)
    assert summary["block_gates"] == sum(isinstance(g, BlockGate) for g in named.values())
    return compact
