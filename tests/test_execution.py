"""Restructured execution computes only the sampled sub-network, with the masked step's mathematics."""

from __future__ import annotations

import copy
import random

import pytest
import torch
import torch.nn.functional as F

from reproduce.method import GrowthController
from reproduce.method.execution import SKIPPING_SAMPLING, Execution
from reproduce.method.gates import BlockGate, ChannelGate
from reproduce.method.options import BudgetOptions, GateOptions, OptionError
from reproduce.method.structure import GatedModel, Site
from reproduce.models import create_model, default_cfg
from reproduce.models.layers import BatchNorm2d, Conv2d, Linear

from .model_checks import IMAGE_MODELS, build

pytestmark = pytest.mark.usefixtures("one_thread")

SIZE = 8


def _pair(name: str, sampling: str = "bernoulli", size: int = SIZE, resample_every: int = 1,
          dtype: torch.dtype = torch.float64, min_channels: int | None = 0, multiple: int = 1,
          **model_kwargs):
    """The same gated model and controller twice: masked and restructured. `min_channels`
    None: 0 where residual branches have inner channels to close (_randomise closes some), else
    1, since a network without identity shortcuts computes nothing past a gate sampled entirely
    off."""
    model = build(name, num_classes=4, **model_kwargs).to(dtype)
    if min_channels is None:
        min_channels = 0 if any(s.role == "inner" for s in model.sites()) else 1
    out = []
    for execution in ("masked", "restructured"):
        m = copy.deepcopy(model)
        c = GrowthController(m, (3, size, size), epochs=4, rng_seed=7,
                             gates=GateOptions(min_channels=min_channels, sampling=sampling,
                                               resample_every=resample_every),
                             budget=BudgetOptions(target=0.5), execution=execution,
                             channel_multiple=multiple)
        out.append((m, c))
    return out


def _data(n: int, size: int = SIZE, dtype: torch.dtype = torch.float64):
    """A batch of inputs and class targets."""
    x = torch.randn(n, 3, size, size, dtype=dtype)
    y = torch.randint(0, 4, (n,))
    return x, y


def _assert_same(actual, expected, name: str = ""):
    """Equal up to float64 round-off. An element that is the small difference of large terms keeps
    their round-off (seen: 6e-10 on a gradient element of 0.1 in a tensor whose largest element
    is 103), so the absolute tolerance is 1e-9 of the tensor's largest element; a wrong channel or
    a missing term moves elements by the order of that largest element."""
    scale = float(expected.detach().abs().max()) if expected.numel() else 0.0
    torch.testing.assert_close(actual, expected, rtol=1e-9, atol=1e-10 + 1e-9 * scale,
                               msg=(lambda m: f"{name}: {m}") if name else None)


def _randomise(models, closed_gates: int = 2, closed_blocks: bool = True):
    """Random logits (same in every copy); a few channel gates entirely closed (zero width):
    gates of a residual branch's inner channels, which leave the rest of the network training
    (test_every_stream_channel_closed closes a stream); half the blocks, drawn at random,
    removed. Streams keep a channel and the remaining blocks are mostly on, so that gradients
    reach most of the network and the comparison proves something."""
    gen = torch.Generator().manual_seed(int(torch.randint(0, 2**31, ())))
    first = models[0]
    names = [n for n, m in first.named_modules() if isinstance(m, ChannelGate)]
    inner = [i for i, n in enumerate(names) if n.endswith((".gate1", ".gate2"))]
    shut = {inner[i] for i in torch.randperm(len(inner), generator=gen)[:closed_gates].tolist()}
    blocks = [n for n, m in first.named_modules() if isinstance(m, BlockGate)]
    removed = {blocks[i] for i in torch.randperm(len(blocks), generator=gen)[:len(blocks) // 2]
               .tolist()} if closed_blocks else set()
    values = {}
    for n, m in ((n, m) for n, m in first.named_modules()
                 if isinstance(m, (ChannelGate, BlockGate))):
        v = torch.rand(m.n, generator=gen) * 2 - 1
        if isinstance(m, ChannelGate) and names.index(n) in shut:
            v.fill_(-50.0)                                   # zero width in every sample
        elif isinstance(m, ChannelGate) and names.index(n) not in inner:
            # a stream keeps one channel in every sample: a stream sampled entirely off leaves
            # nothing upstream with a gradient, and the comparison would prove little
            v[int(torch.randint(0, m.n, (), generator=gen))] = 50.0
        if n in removed:
            v.fill_(-50.0)                                   # removed block (half of them)
        elif isinstance(m, BlockGate):
            v = v.abs() + 0.5                                # the other half: mostly sampled on
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


def _check_equal(pair, x, y, steps: int = 2, flowing: bool = True):
    """Loss, every gradient and the BN statistics of the channels that stayed on are equal.
    `flowing`: many parameters must get a gradient, or the comparison would prove little.
    The models are compared in float64: in float32 the two modes' different summation orders
    leave relative differences of 1e-5 in large gradients, and an activation within round-off
    of a ReLU's kink can fall on either side of it and move a few gradients by much more.
    Even in float64 they are equal only up to round-off (_assert_same).
    (The float32 path is compared end to end by test_tracked_run_same_metrics.)"""
    (ma, ca), (mb, cb) = pair
    always_on = {}
    for _ in range(steps):
        la, ga = _step(ma, ca, x, y)
        lb, gb = _step(mb, cb, x, y)
        # the comparison means something only where gradients flow through most of the network
        assert not flowing or sum(bool(g.abs().max() > 0) for g in ga.values()) > len(ga) / 3
        for name, g in ga.items():      # every parameter has a gradient in both
            _assert_same(gb[name], g, name)
        torch.testing.assert_close(lb, la, rtol=1e-10, atol=1e-12)
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
                _assert_same(b, a, f"{site.bn}.{stat}")


@pytest.mark.parametrize("multiple", [1, 4])
@pytest.mark.parametrize("name", IMAGE_MODELS)
def test_loss_and_gradients_equal_masked(name, multiple, fresh_seed):
    """Every image model (block gates where it has blocks), at its smallest input; with exact
    widths and with widths rounded up to a multiple of 4 (the added channels closed)."""
    size = default_cfg(name).min_size
    pair = _pair(name, size=size, min_channels=None, width_multiplier=0.25, gate_blocks=True,
                 multiple=multiple)
    _randomise([m for m, _ in pair])
    for m, _ in pair:              # dropout draws different masks for different widths
        for d in m.modules():
            if isinstance(d, torch.nn.Dropout):
                d.p = 0.0
    x, _ = _data(4, size)
    with torch.no_grad():          # per-pixel logits (segmentation): a target per pixel
        out = pair[0][0].eval()(x)
    y = torch.randint(0, 4, out.shape[:1] + out.shape[2:])
    _check_equal(pair, x, y)


@pytest.mark.parametrize("multiple", [1, 4])
@pytest.mark.parametrize("name", IMAGE_MODELS)
def test_evaluation_of_the_hard_architecture_equals_masked(name, multiple, fresh_seed):
    """Evaluation inside `controller.hard_architecture()` runs only the hard architecture's channels and
    blocks (restructured) and gives the masked evaluation's outputs; afterwards every layer
    computes everything again."""
    size = default_cfg(name).min_size
    pair = _pair(name, size=size, min_channels=None, width_multiplier=0.25, gate_blocks=True,
                 multiple=multiple)
    _randomise([m for m, _ in pair])
    gen = torch.Generator().manual_seed(int(torch.randint(0, 2**31, ())))
    stats = {}                     # BN statistics and affine parameters: random, the same in both
    for n, m in pair[0][0].named_modules():
        if isinstance(m, torch.nn.BatchNorm2d) and m.num_features:
            stats[n] = (torch.randn(m.num_features, generator=gen, dtype=torch.float64),
                        torch.rand(m.num_features, generator=gen, dtype=torch.float64) + 0.5,
                        torch.randn(m.num_features, generator=gen, dtype=torch.float64))
    for model, _ in pair:
        mods = dict(model.named_modules())
        with torch.no_grad():
            for n, (mean, var, weight) in stats.items():
                mods[n].running_mean.copy_(mean)
                mods[n].running_var.copy_(var)
                mods[n].weight.copy_(weight)
    (masked, cm), (restructured, cr) = pair
    assert cr.execution.restructures and not cm.execution.restructures
    x, _ = _data(5, size)
    narrower = []                  # convs that ran on fewer input or output channels

    def record(conv, inputs, out):
        narrower.append(inputs[0].shape[1] < conv.in_channels or out.shape[1] < conv.out_channels)
    hooks = [m.register_forward_hook(record) for m in restructured.modules()
             if isinstance(m, Conv2d)]
    with torch.no_grad():
        expected = masked.eval()(x)
        restructured.eval()
        with cm.hard_architecture():      # masked execution: nothing changes
            torch.testing.assert_close(masked(x), expected, rtol=0, atol=0)
        with cr.hard_architecture():
            got = restructured(x)
        assert any(narrower)
        _assert_same(got, expected)
        narrower.clear()
        _assert_same(restructured(x), expected)
        assert narrower and not any(narrower)     # planned no more: everything computed
    for h in hooks:
        h.remove()


@pytest.mark.parametrize("multiple", [2, 8])
def test_channel_multiple_rounds_each_gate_up_with_closed_channels(multiple, fresh_seed):
    """Each gate computes its open channels plus its first closed ones, as many as round the
    count up to the multiple (or to all of them); a gate with nothing open stays at zero width."""
    model = build("resnet20", num_classes=4, gate_blocks=True)
    ex = Execution(model, "restructured", multiple=multiple)
    q = (torch.rand(sum(g.n for _, g in ex.gates)) < torch.rand(())).float()
    q[: ex.gates[0][1].n] = 0.0                                   # one gate entirely closed
    idx, counts = ex._indices(q)
    start = 0
    for s, (name, gate) in enumerate(ex.gates):
        opened = (q[start:start + gate.n] > 0).nonzero().flatten()
        start += gate.n
        want = min(gate.n, -(-len(opened) // multiple) * multiple)
        assert counts[s] == want, name
        if isinstance(gate, BlockGate):
            continue
        computed = torch.arange(gate.n) if idx[s] is None else idx[s]
        assert len(computed) == want and set(opened.tolist()) <= set(computed.tolist())
        extra = sorted(set(computed.tolist()) - set(opened.tolist()))
        closed = [i for i in range(gate.n) if i not in set(opened.tolist())]
        assert extra == closed[:len(extra)], name                 # the first closed ones
    with pytest.raises(OptionError, match="channel_multiple"):
        Execution(model, "restructured", multiple=0)


def test_every_stream_channel_closed(fresh_seed):
    """A whole stage's residual stream at zero width, and a removed block, still match."""
    pair = _pair("resnet20", gate_blocks=True)
    values = _randomise([m for m, _ in pair], closed_gates=0)
    for m, _ in pair:
        with torch.no_grad():
            dict(m.named_modules())["layer2.gate"].logits.fill_(-50.0)
            dict(m.named_modules())["layer3.1.gate1"].logits.fill_(-50.0)
    assert values
    x, y = _data(4)
    _check_equal(pair, x, y, steps=1, flowing=False)     # nothing before layer 2 learns


def test_hard_sampling_equal_masked(fresh_seed):
    pair = _pair("resnet20", sampling="hard", gate_blocks=True)
    _randomise([m for m, _ in pair])
    x, y = _data(4)
    _check_equal(pair, x, y, steps=1)


def test_train_step_updates_alike_in_both_modes(fresh_seed):
    """The training loop's step (train.train_step, which the benchmarks call too): with momentum
    and weight decay, the layers a restructured forward skips are updated as masked execution
    updates them, so both modes leave the same parameters."""
    from reproduce.train import train_step

    pair = _pair("resnet20", gate_blocks=True)
    values = _randomise([m for m, _ in pair])
    removed = [n.rsplit(".", 1)[0] for n, v in values.items()
               if n.endswith("block_gate") and v.item() < -10]
    assert removed                                   # blocks that are never computed
    before = {n: p.detach().clone() for n, p in pair[1][0].named_parameters()}
    x, y = _data(6)
    for model, controller in pair:
        model.train()
        opt_w = torch.optim.SGD(controller.weight_parameters(), lr=0.1, momentum=0.9,
                                weight_decay=0.01)
        opt_m = torch.optim.SGD(controller.mask_parameters(), lr=0.1, momentum=0.9)
        for _ in range(2):
            train_step(model, controller, (opt_w, opt_m), x, y, F.cross_entropy, x.shape[0])
    (masked, _), (restructured, _) = pair
    after = dict(restructured.named_parameters())
    for name, p in masked.named_parameters():
        _assert_same(after[name], p, name)
    for block in removed:                            # weight decay shrank what was skipped
        name = f"{block}.conv1.weight"
        assert after[name].norm() < before[name].norm()


@pytest.mark.parametrize("name,kwargs", [
    ("resnet20", {"gate_blocks": True}),
    ("resnet50", {"gate_blocks": True, "width_multiplier": 0.125, "size": 64})])
def test_restructured_computes_only_active_channels(name, kwargs):
    size = kwargs.get("size", SIZE)
    (_, _), (model, controller) = _pair(name, dtype=torch.float32, **kwargs)
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
    model(torch.randn(2, 3, size, size))
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
    assert all(getattr(m, "active", None) is None and getattr(m, "fold", None) is None
               for m in model.modules())


@pytest.mark.parametrize("execution", ["masked", "restructured"])
def test_gates_fold_into_their_batchnorm(execution):
    """Restructured: every gate that runs passes its BN's output through (the BN multiplied g
    in); masked: every gate multiplies."""
    pair = _pair("resnet20", gate_blocks=True, dtype=torch.float32)
    model, controller = pair[execution == "restructured"]
    _randomise([model])
    passed, multiplied = set(), set()

    def hook(name):
        def record(mod, inp, out):
            (passed if out is inp[0] else multiplied).add(name)
        return record

    for n, m in model.named_modules():
        if isinstance(m, ChannelGate):
            m.register_forward_hook(hook(n))
    model.train()
    controller.sample()
    model(torch.randn(2, 3, SIZE, SIZE)).sum().backward()
    controller.after_backward()
    if execution == "restructured":
        assert passed and not multiplied
    else:
        assert multiplied and not passed


class _GateAfterSum(GatedModel):
    """Declares that its gate follows its BN, but adds something in between."""
    gates_follow_bn = True
    arch: dict = {}

    def __init__(self):
        super().__init__()
        self.conv, self.bn, self.gate = Conv2d(3, 8, 3, 1, 1, bias=False), BatchNorm2d(8), \
            ChannelGate(8)
        self.fc = Linear(8, 4)

    def forward(self, x):
        x = F.relu(self.gate(self.bn(self.conv(x)) + 1.0))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))

    def sites(self):
        return [Site("conv", None, "gate", bn="bn", stage=1),
                Site("fc", "gate", None, stage=1, role="head")]


def test_fold_refuses_a_gate_that_does_not_follow_its_batchnorm():
    model = _GateAfterSum()
    controller = GrowthController(model, (3, SIZE, SIZE), epochs=1, execution="restructured",
                                  gates=GateOptions(min_channels=0))
    model.train()
    controller.sample()
    model(torch.randn(2, 3, SIZE, SIZE)).sum().backward()
    with pytest.raises(RuntimeError, match="never reached the gate"):
        controller.after_backward()


def _perturb(models):
    """The same random change of every logit in each model (as a mask optimizer step would)."""
    names = [n for n, m in models[0].named_modules() if isinstance(m, (ChannelGate, BlockGate))]
    deltas = {n: 0.2 * torch.randn(dict(models[0].named_modules())[n].n) for n in names}
    for model in models:
        mods = dict(model.named_modules())
        with torch.no_grad():
            for n, d in deltas.items():
                mods[n].logits.add_(d.to(mods[n].logits.dtype))


def test_periodic_resampling_holds_the_architecture(fresh_seed):
    """resample_every = k: q is drawn at calls 0, k, 2k, ... (the same draws as k = 1 makes at
    calls 0, 1, 2 with the same logits) and held in between."""
    k = 3
    every, held = (_pair("resnet20", gate_blocks=True, resample_every=r)[1] for r in (1, k))
    _randomise([every[0], held[0]])
    seen = {1: [], k: []}
    for (model, controller), r in ((every, 1), (held, k)):
        model.train()
        for _ in range(3 if r == 1 else 3 * k):
            controller.sample()
            seen[r].append(torch.cat([g.sample.clone() for g in controller.gates]))
            controller.after_step(2)
    for j in range(3):
        period = seen[k][j * k:(j + 1) * k]
        assert all(torch.equal(q, period[0]) for q in period)
        assert torch.equal(period[0], seen[1][j])
    assert not torch.equal(seen[k][0], seen[k][k])


def test_periodic_resampling_equal_masked(fresh_seed):
    """A held architecture trains with the gate values of the current logits, in both modes."""
    pair = _pair("resnet20", gate_blocks=True, resample_every=3)
    models = [m for m, _ in pair]
    _randomise(models)
    x, y = _data(6)
    for _ in range(2):
        _check_equal(pair, x, y, steps=2)
        _perturb(models)
    assert pair[1][1].draws == 4


def test_resume_inside_a_period(fresh_seed):
    """A run resumed in the middle of a period holds that period's q, then draws as before."""
    k = 3
    (_, _), (model, controller) = _pair("resnet20", gate_blocks=True, resample_every=k)
    _randomise([model])
    model.train()
    for _ in range(2):
        controller.sample()
        controller.after_step(2)
    saved = copy.deepcopy(model.state_dict()), copy.deepcopy(controller.state_dict())
    ahead = []
    for _ in range(2):
        controller.sample()
        ahead.append(torch.cat([g.sample.clone() for g in controller.gates]))
        controller.after_step(2)
    (_, _), (model2, controller2) = _pair("resnet20", gate_blocks=True, resample_every=k)
    model2.load_state_dict(saved[0])
    controller2.load_state_dict(saved[1])
    model2.train()
    for q in ahead:
        controller2.sample()
        assert torch.equal(torch.cat([g.sample for g in controller2.gates]), q)
        assert torch.equal(controller2._sampled.q, q)   # what is planned
        controller2.after_step(2)
    assert not torch.equal(ahead[0], ahead[1])     # the second was a new draw


def test_resample_every_is_checked():
    with pytest.raises(OptionError, match="gates.resample_every"):
        GateOptions(resample_every=0)
    with pytest.raises(OptionError, match="gates.resample_every"):
        GateOptions(sampling="deterministic", resample_every=2)


def test_fallback_for_straight_through_and_deterministic():
    for sampling in ("straight_through", "deterministic"):
        model = create_model("resnet20", num_classes=4)
        with pytest.warns(UserWarning, match="runs masked"):
            c = GrowthController(model, (3, SIZE, SIZE), epochs=2, execution="restructured",
                                 gates=GateOptions(sampling=sampling))
        assert not c.execution.restructures


def test_auto_restructures_where_it_can_and_masks_quietly_elsewhere(recwarn):
    """auto (the default of growing runs): restructured for a sliceable model with skipping
    sampling; masked, without a warning, for a model whose layers cannot be sliced (the LSTM)
    or a sampling that skips nothing; an explicit restructured on that model is an error."""
    sampling = random.choice(SKIPPING_SAMPLING)
    model = create_model("resnet20", num_classes=4)
    c = GrowthController(model, (3, SIZE, SIZE), epochs=2, execution="auto",
                         gates=GateOptions(sampling=sampling))
    assert c.execution.restructures
    c = GrowthController(create_model("resnet20", num_classes=4), (3, SIZE, SIZE), epochs=2,
                         execution="auto", gates=GateOptions(sampling="deterministic"))
    assert not c.execution.restructures
    lstm = build("lstm_lm", num_classes=50)
    assert not Execution(lstm, "auto", sampling).restructures
    assert not [w for w in recwarn if "masked" in str(w.message)]
    with pytest.raises(TypeError, match="cannot run on its active channels"):
        Execution(lstm, "restructured", sampling)


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
