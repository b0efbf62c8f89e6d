"""Tests for reproduce.method.gates: the gate value of every sampling mode, its gradient, the
per-iteration draw of q, and hard gates in evaluation (a closed structure is exactly zero)."""

from __future__ import annotations

import copy
import random

import pytest
import torch
import torch.nn.functional as F

from reproduce.method.options import GateOptions
from reproduce.method import GrowthController
from reproduce.method.gates import (SAMPLING_MODES, BlockGate, ChannelGate, gates_of, open_all,
                                    sample_gates, set_sampling)
from reproduce.models import create_model


pytestmark = pytest.mark.usefixtures("fresh_seed")


def random_gate(n: int, cls=ChannelGate) -> ChannelGate:
    """A gate with random logits (some of each sign), random β and a random q with both values."""
    g = cls(n) if cls is ChannelGate else cls()
    with torch.no_grad():
        # |β·s| ≤ 12: p(1−p) stays representable in float32, so a gradient is never 0 by underflow
        g.logits.copy_((torch.randn(n) * 1.5).clamp(-3, 3))
        g.logits[0] = abs(g.logits[0]) + 0.1      # at least one open and one closed structure
        if n > 1:
            g.logits[1] = -abs(g.logits[1]) - 0.1
        if n > 2:
            g.logits[2] = 0.0                     # s = 0 is closed: the hard gate is 1[s > 0]
        g.beta.copy_(torch.empty(n).uniform_(0.3, 4.0))
        q = torch.bernoulli(torch.full((n,), 0.5))
        q[0] = 1.0
        if n > 1:
            q[-1] = 0.0
        g.sample.copy_(q)
    return g


# --- gate values ------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", SAMPLING_MODES)
def test_training_value_follows_the_mode_and_eval_is_hard(mode):
    n = int(torch.randint(3, 40, ()))
    g = random_gate(n)
    g.sampling = mode
    s, beta, q = g.logits.detach(), g.beta, g.sample
    p = torch.sigmoid(beta * s)
    hard = (s > 0).float()
    if n > 2:
        assert hard[2] == 0
    expected = {"bernoulli": q * p, "straight_through": q, "deterministic": p, "hard": hard}[mode]
    g.train()
    torch.testing.assert_close(g.value().detach(), expected, rtol=1e-6, atol=0)
    g.eval()
    assert torch.equal(g.value().detach(), hard)
    # the feature map is scaled channel-wise by exactly that value
    x = torch.randn(2, n, 3, 5)
    g.train()
    torch.testing.assert_close(g(x), x * expected.view(1, -1, 1, 1))
    g.eval()
    y = g(x)
    assert torch.equal(y[:, hard == 0], torch.zeros_like(y[:, hard == 0]))
    assert torch.equal(y[:, hard == 1], x[:, hard == 1])


@pytest.mark.parametrize("mode", ["bernoulli", "straight_through", "deterministic"])
def test_gradient_of_the_gate_matches_the_analytic_form(mode):
    """dL/ds = dL/dg · dg/ds with dg/ds = q·β·p(1−p) (bernoulli) or β·p(1−p) (the others)."""
    n = int(torch.randint(4, 30, ()))
    g = random_gate(n)
    g.sampling = mode
    g.train()
    x = torch.randn(3, n, 4, 4)
    r = torch.randn(3, n, 4, 4)
    (g(x) * r).sum().backward()
    dl_dg = (x * r).sum(dim=(0, 2, 3))
    p = torch.sigmoid(g.beta * g.logits.detach())
    dp_ds = g.beta * p * (1 - p)
    factor = g.sample if mode == "bernoulli" else torch.ones(n)
    torch.testing.assert_close(g.logits.grad, dl_dg * factor * dp_ds, rtol=1e-5, atol=1e-5)
    if mode == "bernoulli":
        assert torch.all(g.logits.grad[g.sample == 0] == 0)
        assert torch.all(g.logits.grad[g.sample == 1] != 0)


def test_hard_mode_passes_no_gradient_to_logits():
    g = random_gate(10)
    g.sampling = "hard"
    g.train()
    x = torch.randn(2, 10, 3, 3, requires_grad=True)
    g(x).sum().backward()
    assert g.logits.grad is None or torch.all(g.logits.grad == 0)
    assert torch.equal(x.grad[0, :, 0, 0], (g.logits.detach() > 0).float())


def test_block_gate_scales_the_whole_branch():
    g = random_gate(1, BlockGate)
    g.train()
    g.sampling = "bernoulli"
    x = torch.randn(2, 5, 3, 3)
    p = torch.sigmoid(g.beta * g.logits.detach())
    torch.testing.assert_close(g(x), x * (g.sample * p))
    g.eval()
    assert torch.equal(g(x), x * float(g.logits.item() > 0))


def test_set_sampling_rejects_unknown_modes_and_sets_all_gates():
    model = create_model("vgg11", in_channels=1, width_multiplier=0.125)
    mode = random.choice(SAMPLING_MODES)
    set_sampling(model, mode)
    assert all(g.sampling == mode for _, g in gates_of(model))
    with pytest.raises(ValueError, match="bernoulli"):
        set_sampling(model, "gumbel")


def test_gradient_reaches_logits_through_sampled_gates_in_a_model():
    """In a full forward/backward, a logit gets gradient iff its structure was sampled (q = 1)."""
    model = create_model("resnet20", in_channels=1, num_classes=3, width_multiplier=0.25)
    gates = [g for _, g in gates_of(model)]
    with torch.no_grad():
        for g in gates:
            g.logits.copy_(torch.randn(g.n).clamp(-3, 3))
            g.beta.uniform_(0.5, 3.0)
    sample_gates(gates, torch.Generator().manual_seed(int(torch.randint(0, 2**31, ()))))
    for k in (1, 2, 3):     # a stage with every stream channel off would cut its inner gates off
        dict(gates_of(model))[f"layer{k}.gate"].sample[0] = 1.0
    model.train()
    x, y = torch.randn(8, 1, 8, 8), torch.randint(0, 3, (8,))
    F.cross_entropy(model(x), y).backward()
    n_on = 0
    for g in gates:
        grad = g.logits.grad
        assert grad is not None
        assert torch.all(grad[g.sample == 0] == 0)
        assert torch.all(grad[g.sample == 1] != 0)
        n_on += int(g.sample.sum())
    assert n_on > 0


# --- sampling q -------------------------------------------------------------------------------

def test_sample_gates_frequency_matches_p():
    ga, gb = random_gate(int(torch.randint(5, 15, ()))), random_gate(int(torch.randint(5, 15, ())))
    with torch.no_grad():   # two gates with clearly different p: a mix-up of chunks would show
        ga.logits.copy_(torch.randn(ga.n) - 1.0)
        gb.logits.copy_(torch.randn(gb.n) + 1.0)
    gen = torch.Generator().manual_seed(int(torch.randint(0, 2**31, ())))
    draws = 3000
    sums = [torch.zeros(ga.n), torch.zeros(gb.n)]
    for _ in range(draws):
        sample_gates([ga, gb], gen)
        for acc, g in zip(sums, (ga, gb)):
            assert set(g.sample.unique().tolist()) <= {0.0, 1.0}
            acc += g.sample
    for acc, g in zip(sums, (ga, gb)):
        p = g.probs().detach()
        sigma = (p * (1 - p) / draws).sqrt().clamp_min(1e-3)
        z = (acc / draws - p).abs() / sigma
        assert float(z.max()) < 5.0, (acc / draws, p)


def test_sample_gates_is_identical_for_identically_seeded_generators():
    """The 'same on every rank' property: same seed, same q; another seed, another q."""
    model = create_model("resnet20", in_channels=1, width_multiplier=0.25, gate_blocks=True)
    with torch.no_grad():
        for _, g in gates_of(model):
            g.logits.copy_(torch.randn(g.n) * 0.5)
    twin = copy.deepcopy(model)
    seed = int(torch.randint(0, 2**31, ()))
    gen_a, gen_b = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)
    gen_c = torch.Generator().manual_seed(seed + 1)
    other = copy.deepcopy(model)
    differs = False
    for _ in range(5):
        sample_gates([g for _, g in gates_of(model)], gen_a)
        sample_gates([g for _, g in gates_of(twin)], gen_b)
        sample_gates([g for _, g in gates_of(other)], gen_c)
        qa = torch.cat([g.sample for _, g in gates_of(model)])
        qb = torch.cat([g.sample for _, g in gates_of(twin)])
        qc = torch.cat([g.sample for _, g in gates_of(other)])
        assert torch.equal(qa, qb)
        differs |= not torch.equal(qa, qc)
    assert differs


def test_controllers_with_the_same_seed_sample_the_same_architecture():
    seed = int(torch.randint(0, 10_000, ()))
    models = [create_model("vgg11", in_channels=1, width_multiplier=0.125) for _ in range(2)]
    ctrls = [GrowthController(m, (1, 8, 8), epochs=3, gates=GateOptions(s_off=0.0), rng_seed=seed)
             for m in models]
    for _ in range(4):
        for c in ctrls:
            c.sample()
        qa, qb = (torch.cat([g.sample for g in c.gates]) for c in ctrls)
        assert torch.equal(qa, qb)


def test_open_all_sets_every_sample_to_one():
    gates = [random_gate(int(torch.randint(2, 9, ()))) for _ in range(3)]
    open_all(gates)
    assert all(torch.equal(g.sample, torch.ones(g.n)) for g in gates)


# --- hard gates in evaluation ----------------------------------------------------------------

def _randomise_bn(model):
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d) and m.num_features:
                m.running_mean.normal_()
                m.running_var.uniform_(0.5, 2.0)
                m.weight.normal_()
                m.bias.normal_()


def test_closed_channels_are_exactly_zero_downstream_in_eval_resnet():
    model = create_model("resnet20", in_channels=1, width_multiplier=0.5, gate_blocks=True)
    _randomise_bn(model)
    named = dict(gates_of(model))
    with torch.no_grad():
        for g in named.values():
            g.logits.copy_(torch.randn(g.n))
        named["layer1.1.block_gate"].logits.fill_(-1.0)   # one closed block, one open
        named["layer1.2.block_gate"].logits.fill_(1.0)
    model.eval()
    seen = {}

    def keep(name):
        def hook(mod, inp, out):
            seen[name] = (inp[0].detach(), out.detach())
        return hook

    mods = dict(model.named_modules())
    hooks = [mods[n].register_forward_hook(keep(n)) for n in
             ["layer1", "layer2", "layer3", "layer1.1"]]
    # gate outputs
    for name, g in named.items():
        if isinstance(g, ChannelGate):
            hooks.append(g.register_forward_hook(keep(name)))
    model(torch.randn(4, 1, 8, 8))
    for h in hooks:
        h.remove()
    for name, g in named.items():
        if isinstance(g, ChannelGate):
            _, out = seen[name]
            closed = g.logits.detach() <= 0
            assert torch.all(out[:, closed] == 0), name
    # the residual stream of every stage is zero on its closed channels, all along the stage
    for k in (1, 2, 3):
        _, out = seen[f"layer{k}"]
        closed = named[f"layer{k}.gate"].logits.detach() <= 0
        assert torch.all(out[:, closed] == 0)
        # not vacuous: the gate lets its open channels through (checked before the final ReLU,
        # which may zero a whole stage when the randomised BN shifts everything negative)
        _, gated = seen[f"layer{k}.gate"]
        assert torch.any(gated[:, ~closed] != 0) or not bool((~closed).any())
    # a closed block is the identity
    inp, out = seen["layer1.1"]
    assert torch.equal(inp, out)


def test_closed_channels_are_exactly_zero_in_eval_vgg():
    model = create_model("vgg11", in_channels=3, width_multiplier=0.125)
    _randomise_bn(model)
    named = dict(gates_of(model))
    with torch.no_grad():
        for g in named.values():
            g.logits.copy_(torch.randn(g.n))
    model.eval()
    mods = dict(model.named_modules())
    inputs = {}
    hooks = [mods[f"conv{i}"].register_forward_hook(
        lambda m, i_, o, i=i: inputs.__setitem__(i, i_[0].detach())) for i, _ in model.plan[1:]]
    model(torch.randn(3, 3, 16, 16))
    for h in hooks:
        h.remove()
    for i, _ in model.plan[1:]:
        closed = named[f"gate{i - 1}"].logits.detach() <= 0
        assert torch.all(inputs[i][:, closed] == 0)


def test_sample_gates_keeps_min_active_as_each_gate_alone_would():
    """sample_gates fills the gates drawn below their minimum from their most probable
    structures, and leaves every other gate's draw as it is."""
    gates = [ChannelGate(n, min_active=m) for n, m in ((5, 2), (3, 0), (7, 3), (1, 1), (4, 4))]
    with torch.no_grad():
        for g in gates:
            g.logits.copy_(torch.randn(g.n) - 1.5)
    for seed in range(20):
        q = sample_gates(gates, torch.Generator().manual_seed(seed))
        p = torch.cat([g.probs().detach() for g in gates])
        raw = torch.bernoulli(p, generator=torch.Generator().manual_seed(seed))
        start = 0
        for g in gates:
            q_g, raw_g, p_g = (t[start:start + g.n] for t in (q, raw, p))
            if g.min_active and raw_g.sum() < g.min_active:
                raw_g = raw_g.index_fill(0, p_g.topk(g.min_active).indices, 1.0)
            assert torch.equal(q_g, raw_g)
            assert torch.equal(g.sample, q_g)
            start += g.n
