"""Tests for reproduce.method.costs and reproduce.method.export: MAC and parameter counting against
PyTorch's own FLOP counter, and the exported compact model against the gated one, for one model
of every class the registry builds (tests/model_checks.py)."""

from __future__ import annotations

import pytest
import torch

from reproduce.method import CostModel, architecture_summary, hard_architecture
from reproduce.method.gates import gates_of
from reproduce.models import create_model, default_cfg

from .model_checks import (IMAGE_MODELS, ONE_PER_CLASS, build, check_export, head, image_shapes,
                           measured_macs, random_gated, randomise_gates, reads_tokens,
                           weight_params)

pytestmark = pytest.mark.usefixtures("fresh_seed", "one_thread")


# --- dense models -----------------------------------------------------------------------------

DENSE_CASES = [(name, shape) for name in ONE_PER_CLASS
               for shape in ([default_cfg(name).input_size] if reads_tokens(name)
                             else image_shapes(name))]


@pytest.mark.parametrize("name,shape", DENSE_CASES,
                         ids=[f"{n}-{'x'.join(map(str, s))}" for n, s in DENSE_CASES])
def test_dense_costs_match_flop_counter(name, shape):
    """Dense costs against PyTorch's FLOP counter; the gated model (every gate it has) counts
    the same dense costs, and as much once every gate is open."""
    ncls = int(torch.randint(2, 20, ()))
    model = create_model(name, in_channels=shape[0], num_classes=ncls, width_multiplier=0.5,
                         gate_channels=False)
    costs = CostModel(model, shape)
    assert costs.dense_macs == measured_macs(model, shape)
    assert costs.dense_params == weight_params(model)
    assert costs.hard() == (costs.dense_macs, costs.dense_params)   # no gates: hard = dense
    gated = build(name, in_channels=shape[0], num_classes=ncls, width_multiplier=0.5,
                  gate_blocks=True)
    named = gates_of(gated)
    assert named
    cg = CostModel(gated, shape)
    assert (cg.dense_macs, cg.dense_params) == (costs.dense_macs, costs.dense_params)
    with torch.no_grad():
        for _, g in named:
            g.logits.fill_(1.0)
    assert cg.hard() == (costs.dense_macs, costs.dense_params)


# --- export -----------------------------------------------------------------------------------

# every image model with and without block gates (where it has blocks), on both of its inputs
EXPORT_CASES = [(name, gate_blocks, shape) for name in IMAGE_MODELS
                for gate_blocks, shape in zip((True, False), image_shapes(name))]
EXPORT_IDS = [f"{n}-{'blocks' if b else 'channels'}-{'x'.join(map(str, s))}"
              for n, b, s in EXPORT_CASES]


@pytest.mark.parametrize("name,gate_blocks,shape", EXPORT_CASES, ids=EXPORT_IDS)
def test_export_of_random_hard_architecture(name, gate_blocks, shape, tmp_path):
    model = random_gated(name, gate_blocks, shape)
    randomise_gates(model, closed_channel_gates=1)
    if model.removable_blocks():
        assert hard_architecture(model)[1], "expected at least one removed block"
    check_export(model, shape, tmp_path)


@pytest.mark.parametrize("name,gate_blocks,shape", EXPORT_CASES, ids=EXPORT_IDS)
def test_zero_width_layers_do_not_crash(name, gate_blocks, shape):
    """Several fully closed gates, including the classifier's input (it reads nothing)."""
    model = random_gated(name, gate_blocks, shape)
    randomise_gates(model, closed_channel_gates=3)
    named = dict(gates_of(model))
    last = model.sites()[-1].in_gate
    with torch.no_grad():
        named[last].logits.fill_(-1.0)
    compact = check_export(model, shape)
    # the classifier reads no features: the output is its bias for every input (and pixel)
    _, fc = head(compact)
    assert (fc.in_channels if isinstance(fc, torch.nn.Conv2d) else fc.in_features) == 0
    with torch.no_grad():
        out = compact(torch.randn(3, *shape))
    bias = fc.bias.view(1, -1, *[1] * (out.dim() - 2))
    torch.testing.assert_close(out, bias.expand_as(out), rtol=1e-6, atol=1e-6)
    costs = CostModel(model, shape)
    summary = architecture_summary(model)
    assert summary["widths"][next(s.name for s in model.sites() if s.out_gate == last)] == 0
    stats = costs.stage_summary()
    assert all(0.0 <= v for v in stats.values())
    ratios = costs.layer_ratios()
    assert all(0.0 <= v <= 1.0 for v in ratios.values())


@pytest.mark.parametrize("name", IMAGE_MODELS)
def test_everything_closed_exports_a_network_of_zero_width(name):
    shape = image_shapes(name)[1]
    model = random_gated(name, True, shape)
    with torch.no_grad():
        for _, g in gates_of(model):
            g.logits.fill_(-1.0)
    costs = CostModel(model, shape)
    macs, params = costs.hard()
    compact = check_export(model, shape)
    assert macs == measured_macs(compact, shape)
    # only the input conv reads the image (into zero channels): nothing costs anything
    # except the classifier's bias
    assert macs == 0 and params == head(compact)[1].bias.numel()


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
