"""Restructured execution computes only the sampled sub-network, with the masked step's mathematics."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from reproduce.method import GrowthController
from reproduce.method.gates import BlockGate, ChannelGate
from reproduce.method.options import BudgetOptions, GateOptions
from reproduce.models import create_model

SIZE = 8


def _pair(name: str, sampling: str = "bernoulli", **model_kwargs):
    """The same gated model and controller twice: masked and restructured."""
    model = create_model(name, num_classes=4, **model_kwargs)
    out = []
    for execution in ("masked", "restructured"):
        m = copy.deepcopy(model)
        c = GrowthController(m, (3, SIZE, SIZE), epochs=4, rng_seed=7,
                             gates=GateOptions(min_channels=0, sampling=sampling),
                             budget=BudgetOptions(target=0.5), execution=execution)
        out.append((m, c))
    return out


def _randomise(models, closed_gates: int = 2, closed_blocks: bool = True):
    """Random logits (same in every copy); a few channel gates entirely closed (zero width)."""
    gen = torch.Generator().manual_seed(int(torch.randint(0, 2**31, ())))
    first = models[0]
    names = [n for n, m in first.named_modules() if isinstance(m, ChannelGate)]
    shut = set(torch.randperm(len(names), generator=gen)[:closed_gates].tolist())
    values = {}
    for i, (n, m) in enumerate((n, m) for n, m in first.named_modules()
                               if isinstance(m, (ChannelGate, BlockGate))):
        v = torch.rand(m.n, generator=gen) * 2 - 1
        if isinstance(m, ChannelGate) and names.index(n) in shut:
            v.fill_(-50.0)                                   # zero width in every sample
        if isinstance(m, BlockGate) and closed_blocks and i % 2:
            v.fill_(-50.0)                                   # removed block
        values[n] = v
    for model in models:
        mods = dict(model.named_modules())
        with torch.no_grad():
            for n, v in values.items():
                mods[n].logits.copy_(v)
    return values


def _step(model, controller, x, y):
    model.train()
    controller.sample()
    loss = F.cross_entropy(model(x), y) + controller.penalty()
    model.zero_grad(set_to_none=True)
    loss.backward()
    controller.after_backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    controller.after_step(x.shape[0])
    return loss.detach(), grads


def _check_equal(pair, x, y, steps: int = 2):
    (ma, ca), (mb, cb) = pair
    always_on = {}
    for _ in range(steps):
        la, ga = _step(ma, ca, x, y)
        lb, gb = _step(mb, cb, x, y)
        for name, g in ga.items():      # every parameter has a gradient in both
            torch.testing.assert_close(gb[name], g, rtol=1e-4, atol=1e-5, msg=name)
        torch.testing.assert_close(lb, la, rtol=1e-5, atol=1e-6)
        assert cb.train_macs_epoch == ca.train_macs_epoch
        # BN statistics of the channels that were on in every step so far moved alike
        for n, m in ma.named_modules():
            if isinstance(m, ChannelGate):
                always_on[n] = always_on.get(n, True) & (m.sample > 0)
        mods_b = dict(mb.named_modules())
        for site in ca.costs.sites:
            if site.bn is None or site.out_gate is None or site.block is not None:
                continue
            on = always_on[site.out_gate]
            for stat in ("running_mean", "running_var"):
                a = getattr(dict(ma.named_modules())[site.bn], stat)[on]
                b = getattr(mods_b[site.bn], stat)[on]
                torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name,kwargs", [("resnet20", {}), ("resnet20", {"gate_blocks": True}),
                                         ("vgg11", {})])
def test_loss_and_gradients_equal_masked(name, kwargs, fresh_seed):
    pair = _pair(name, **kwargs)
    _randomise([m for m, _ in pair])
    x, y = torch.randn(6, 3, SIZE, SIZE), torch.randint(0, 4, (6,))
    _check_equal(pair, x, y)


def test_every_stream_channel_closed(fresh_seed):
    """A whole stage's residual stream at zero width, and a removed block, still match."""
    pair = _pair("resnet20", gate_blocks=True)
    values = _randomise([m for m, _ in pair], closed_gates=0)
    for m, _ in pair:
        with torch.no_grad():
            dict(m.named_modules())["layer2.gate"].logits.fill_(-50.0)
            dict(m.named_modules())["layer3.1.gate1"].logits.fill_(-50.0)
    assert values
    x, y = torch.randn(4, 3, SIZE, SIZE), torch.randint(0, 4, (4,))
    _check_equal(pair, x, y, steps=1)


def test_hard_sampling_equal_masked(fresh_seed):
    pair = _pair("resnet20", sampling="hard", gate_blocks=True)
    _randomise([m for m, _ in pair])
    x, y = torch.randn(4, 3, SIZE, SIZE), torch.randint(0, 4, (4,))
    _check_equal(pair, x, y, steps=1)


def test_restructured_computes_only_active_channels():
    (_, _), (model, controller) = _pair("resnet20", gate_blocks=True)
    _randomise([model])
    seen = {}

    def hook(name):
        def record(mod, inp, out):
            seen[name] = (inp[0].shape[1], out.shape[1])
        return record

    convs = {n: m for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)}
    for n, m in convs.items():
        m.register_forward_hook(hook(n))
    model.train()
    controller.sample()
    model(torch.randn(2, 3, SIZE, SIZE))
    q = {n: int(m.sample.sum()) for n, m in model.named_modules() if isinstance(m, ChannelGate)}
    blocks = {b.name: b.gate for b in model.blocks()}
    gates = dict(model.named_modules())
    for site in controller.costs.sites:
        if site.name not in convs:
            continue
        block = site.block
        if block is not None and gates[block].sample.item() == 0:
            assert site.name not in seen            # a closed block is not computed at all
            continue
        if site.name in seen and site.out_gate:
            assert seen[site.name][1] == q[site.out_gate], site.name
            if site.in_gate:
                assert seen[site.name][0] == q[site.in_gate], site.name
    assert blocks
    controller.after_step(2)                        # the plan ends with the iteration
    assert all(getattr(m, "active", None) is None for m in model.modules())


def test_fallback_for_straight_through_and_deterministic():
    for sampling in ("straight_through", "deterministic"):
        model = create_model("resnet20", num_classes=4)
        with pytest.warns(UserWarning, match="runs masked"):
            c = GrowthController(model, (3, SIZE, SIZE), epochs=2, execution="restructured",
                                 gates=GateOptions(sampling=sampling))
        assert not c.execution.restructures


@pytest.mark.slow
def test_tracked_run_same_metrics(tiny):
    """A short run gives the same tracked metrics in both execution modes."""
    from reproduce.config import resolve
    from reproduce.runner import execute

    histories = {}
    for execution in ("masked", "restructured"):
        overrides = copy.deepcopy(tiny)
        overrides["train"]["execution"] = execution
        overrides["model"] = {"name": "resnet20", "gate_blocks": True}
        cfg = resolve(overrides)
        histories[execution] = execute(cfg, progress=False).history
    masked, restructured = histories["masked"], histories["restructured"]
    assert len(masked) == len(restructured) == tiny["train"]["epochs"]
    for a, b in zip(masked, restructured):
        for key, value in a.items():
            if key.startswith("time/"):
                continue
            assert b[key] == pytest.approx(value, rel=1e-3, abs=1e-3), key
