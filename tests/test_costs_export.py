"""Tests for reproduce.method.costs and reproduce.method.export: MAC and parameter counting against
PyTorch's own FLOP counter, and the exported compact model against the gated one."""

from __future__ import annotations


import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from reproduce.method import CostModel, architecture_summary, export, hard_architecture
from reproduce.method.gates import BlockGate, ChannelGate, Gate, gates_of
from reproduce.checkpoint import compact_checkpoint, load_compact
from reproduce.models import create_model


pytestmark = pytest.mark.usefixtures("fresh_seed")


def measured_macs(model: nn.Module, shape) -> float:
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.randn(1, *shape))
    return counter.get_total_flops() / 2


def weight_params(model: nn.Module) -> int:
    return sum(m.weight.numel() + (m.bias.numel() if m.bias is not None else 0)
               for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))


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


# --- dense models -----------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["resnet20", "resnet56", "vgg16", "basic3resnet-2-4-3",
                                  "plain3net-2-4-3"])
@pytest.mark.parametrize("shape", [(3, 32, 32), (1, 8, 8)])
def test_dense_costs_match_flop_counter(name, shape):
    ncls = int(torch.randint(2, 20, ()))
    model = create_model(name, in_channels=shape[0], num_classes=ncls, gate_channels=False)
    costs = CostModel(model, shape)
    assert costs.dense_macs == measured_macs(model, shape)
    assert costs.dense_params == weight_params(model)
    assert costs.hard() == (costs.dense_macs, costs.dense_params)   # no gates: hard = dense


def test_gated_model_with_open_gates_costs_the_same_as_dense():
    shape = (1, 8, 8)
    dense = create_model("resnet20", in_channels=1, width_multiplier=0.5, gate_channels=False)
    gated = create_model("resnet20", in_channels=1, width_multiplier=0.5, gate_blocks=True)
    cd, cg = CostModel(dense, shape), CostModel(gated, shape)
    assert (cg.dense_macs, cg.dense_params) == (cd.dense_macs, cd.dense_params)
    with torch.no_grad():
        for _, g in gates_of(gated):
            g.logits.fill_(1.0)
    assert cg.hard() == (cd.dense_macs, cd.dense_params)


# --- export -----------------------------------------------------------------------------------

EXPORT_CASES = [
    ("resnet20", True, (3, 16, 16)),
    ("basic3resnet-2-4-3", True, (1, 8, 8)),
    ("plain3net-2-4-3", True, (1, 8, 8)),
    ("resnet20", False, (1, 8, 8)),
    ("vgg11", False, (3, 16, 16)),
]


def _gated(name, gate_blocks, shape):
    model = create_model(name, in_channels=shape[0], num_classes=int(torch.randint(2, 12, ())),
                         width_multiplier=0.5, gate_blocks=gate_blocks)
    randomise_bn(model)
    return model


def _check_export(model, shape, tmp_path=None):
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
    # (c) same outputs as the gated model with hard gates
    model.eval()
    x = torch.randn(5, *shape)
    with torch.no_grad():
        ref, out = model(x), compact(x)
    assert ref.abs().max() > 0
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
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


@pytest.mark.parametrize("name,gate_blocks,shape", EXPORT_CASES)
def test_export_of_random_hard_architecture(name, gate_blocks, shape, tmp_path):
    model = _gated(name, gate_blocks, shape)
    randomise_gates(model, closed_channel_gates=1)
    if gate_blocks:
        assert hard_architecture(model)[1], "expected at least one removed block"
    _check_export(model, shape, tmp_path)


@pytest.mark.parametrize("name,gate_blocks,shape", EXPORT_CASES)
def test_zero_width_layers_do_not_crash(name, gate_blocks, shape):
    """Several fully closed gates, including the last stage's (the classifier reads nothing)."""
    model = _gated(name, gate_blocks, shape)
    randomise_gates(model, closed_channel_gates=3)
    named = dict(gates_of(model))
    last = "layer3.gate" if "layer3.gate" in named else f"gate{model.plan[-1][0]}"
    with torch.no_grad():
        named[last].logits.fill_(-1.0)
    compact = _check_export(model, shape)
    # the classifier reads no features: the output is its bias for every input
    fc = compact.fc
    assert fc.in_features == 0
    with torch.no_grad():
        out = compact(torch.randn(3, *shape))
    assert torch.equal(out, fc.bias.expand(3, -1))
    costs = CostModel(model, shape)
    summary = architecture_summary(model)
    assert summary["widths"][next(s.name for s in model.sites() if s.out_gate == last)] == 0
    stats = costs.stage_summary()
    assert all(0.0 <= v for v in stats.values())
    ratios = costs.layer_ratios()
    assert all(0.0 <= v <= 1.0 for v in ratios.values())


def test_everything_closed_exports_a_network_of_zero_width():
    shape = (1, 8, 8)
    for name, gb in (("resnet20", True), ("vgg11", False)):
        model = _gated(name, gb, shape)
        with torch.no_grad():
            for _, g in gates_of(model):
                g.logits.fill_(-1.0)
        costs = CostModel(model, shape)
        macs, params = costs.hard()
        compact = _check_export(model, shape)
        assert macs == measured_macs(compact, shape)
        # only the input conv reads the image (into zero channels): nothing costs anything
        # except the classifier's bias
        assert macs == 0 and params == compact.fc.out_features


# --- costs of random states ---------------------------------------------------------------------

def test_sampled_and_prob_costs_follow_the_gate_states():
    """count() is the hard cost of whichever state it gets: a sampled q equals the hard cost of
    logits set to its sign; the expected cost under p lies between the extremes and is
    differentiable."""
    shape = (1, 8, 8)
    model = create_model("resnet20", in_channels=1, width_multiplier=0.5, gate_blocks=True)
    costs = CostModel(model, shape)
    named = gates_of(model)
    with torch.no_grad():
        for _, g in named:
            g.logits.copy_(torch.randn(g.n))
            g.sample.copy_(torch.bernoulli(torch.full((g.n,), 0.5)))
    sampled = costs.sampled_macs()
    with torch.no_grad():
        for _, g in named:
            g.logits.copy_(g.sample - 0.5)
    assert sampled == costs.hard()[0]
    macs, params = costs.count(costs.prob_state())
    assert 0 < macs.item() < costs.dense_macs and 0 < params.item() < costs.dense_params
    macs.backward()
    assert all(g.logits.grad is not None and torch.all(g.logits.grad > 0) for _, g in named)


@pytest.mark.parametrize("name,kwargs,shape", [
    ("resnet20", {"gate_blocks": True}, (3, 8, 8)),
    ("vgg11", {}, (3, 8, 8)),
    ("mobilenet_v1", {"width_multiplier": 0.125}, (3, 32, 32)),
    ("lstm_lm_small", {}, (1, 1, 1))])
def test_flat_counts_equal_count(name, kwargs, shape):
    """The per-iteration count of a 0/1 state (count_flat, from the concatenated vector) is
    exactly count()'s, and hard_flat is every gate's hard() (min_active included)."""
    model = create_model(name, **kwargs)
    costs = CostModel(model, shape)
    named = gates_of(model)
    for trial in range(6):
        with torch.no_grad():
            for i, (_, g) in enumerate(named):
                g.logits.copy_(torch.randn(g.n))
                if trial % 2 and i % 3 == 0:
                    g.logits.fill_(-1.0)                 # closed: min_active decides
                g.min_active = min(trial % 3, g.n) if isinstance(g, ChannelGate) else 0
        q = torch.cat([torch.bernoulli(torch.full((g.n,), 0.5)) for _, g in named])
        state = dict(zip(costs.gates, q.split(costs.sizes)))
        assert costs.count_flat(q) == tuple(float(v) for v in costs.count(state))
        assert torch.equal(costs.hard_flat(), torch.cat([g.hard().double() for _, g in named]))
        assert costs.hard() == tuple(float(v) for v in costs.count(costs.hard_state()))
