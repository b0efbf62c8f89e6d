"""Tests for reproduce.method.{temperature,budget,growth}: β schedules, the budget controller (formula
and closed loop), the seed architecture, the penalty's push, training-cost accounting and the
per-epoch statistics."""

from __future__ import annotations

import math
import random

import pytest
import torch

from reproduce.method.options import (SCHEDULES, BudgetOptions, GateOptions, OptionError,
                                      TemperatureOptions)
from reproduce.method import (BudgetController, CostModel, GrowthController, TemperatureSchedule,
                              init_seed)
from reproduce.method.gates import BlockGate, ChannelGate, gates_of
from reproduce.models import create_model

from .test_layers import gated


pytestmark = pytest.mark.usefixtures("fresh_seed")


def small_resnet(gate_blocks=True):
    return create_model("resnet20", in_channels=1, num_classes=4, width_multiplier=0.5,
                        gate_blocks=gate_blocks)


def small_vgg():
    return create_model("vgg11", in_channels=1, num_classes=4, width_multiplier=0.25)


def rand_gates(k=3):
    gates = [ChannelGate(int(torch.randint(1, 20, ()))) for _ in range(k)] + [BlockGate()]
    for g in gates:
        with torch.no_grad():
            g.logits.copy_(torch.randn(g.n))
    return gates


# --- temperature --------------------------------------------------------------------------------


def budget_only_steps(ctrl: GrowthController, steps: int) -> list[float]:
    """`steps` iterations that train the logits on the budget penalty alone (SGD, lr 0.1,
    momentum 0.9, 8 samples each); the budget's usage after each."""
    opt = torch.optim.SGD(ctrl.mask_parameters(), lr=0.1, momentum=0.9)
    usage = []
    for _ in range(steps):
        ctrl.sample()
        loss = ctrl.penalty()
        opt.zero_grad()
        loss.backward()
        opt.step()
        ctrl.after_step(8)
        usage.append(ctrl.budget.usage)
    return usage

def test_global_schedule_is_geometric_and_ends_at_beta_final():
    epochs = int(torch.randint(2, 40, ()))
    beta_0 = float(torch.empty(()).uniform_(0.5, 3.0))
    beta_final = beta_0 * float(torch.empty(()).uniform_(5.0, 500.0))
    gates = rand_gates()
    options = TemperatureOptions(beta_0=beta_0, beta_final=beta_final, ramp_fraction=1.0)
    sched = TemperatureSchedule(gates, options, epochs)
    gamma = (beta_final / beta_0) ** (1 / (epochs - 1))
    for t in range(epochs):
        for g in gates:                       # β during epoch t, whatever the logits are
            assert torch.allclose(g.beta, torch.full((g.n,), beta_0 * gamma ** t), rtol=1e-5)
        with torch.no_grad():
            for g in gates:
                g.logits.copy_(torch.randn(g.n))
        if t < epochs - 1:
            sched.step()
    for g in gates:                           # the last epoch (t = epochs − 1) uses β_T
        assert torch.allclose(g.beta, torch.full((g.n,), beta_final), rtol=1e-5)


def test_ramp_fraction_reaches_beta_final_early_and_stays():
    epochs, ramp = 10, 0.5
    gates = rand_gates()
    options = TemperatureOptions(beta_0=2.0, beta_final=200.0, ramp_fraction=ramp)
    sched = TemperatureSchedule(gates, options, epochs)
    seen = []
    for t in range(epochs):
        seen.append(float(gates[0].beta[0]))
        if t < epochs - 1:
            sched.step()
    assert seen[0] == pytest.approx(2.0)
    assert seen[4] == pytest.approx(200.0, rel=1e-5)          # R = round(0.5·10) = 5 epochs of ramp
    assert all(b == pytest.approx(200.0, rel=1e-5) for b in seen[4:])
    assert all(a < b for a, b in zip(seen[:4], seen[1:5]))


@pytest.mark.parametrize("schedule", ["separate", "separate_decayed"])
def test_separate_schedules_move_only_what_they_should(schedule):
    epochs = int(torch.randint(3, 30, ()))
    beta_0 = float(torch.empty(()).uniform_(0.5, 2.0))
    beta_final = beta_0 * float(torch.empty(()).uniform_(10.0, 300.0))
    decay = float(torch.empty(()).uniform_(0.3, 0.95))
    gates = rand_gates()
    options = TemperatureOptions(schedule=schedule, beta_0=beta_0, beta_final=beta_final,
                                 decay=decay, ramp_fraction=1.0)
    sched = TemperatureSchedule(gates, options, epochs)
    gamma = (beta_final / beta_0) ** (1 / (epochs - 1))
    expected = [torch.full((g.n,), beta_0) for g in gates]
    went_up = went_down = False
    for _ in range(epochs + 3):
        with torch.no_grad():
            for g in gates:
                g.logits.copy_(torch.randn(g.n))
        for g, e in zip(gates, expected):
            active = g.logits.detach() > 0
            before = e.clone()
            e[active] = torch.clamp(e[active] * gamma, max=beta_final)   # capped at β_T
            if schedule == "separate_decayed":
                e[~active] = torch.clamp(e[~active] * decay, min=beta_0)
            went_up |= bool((e > before).any())
            went_down |= bool((e < before).any())
        sched.step()
        for g, e in zip(gates, expected):
            torch.testing.assert_close(g.beta, e, rtol=1e-5, atol=0)
            assert torch.all(g.beta >= beta_0 * (1 - 1e-6))
    assert went_up
    if schedule == "separate_decayed":
        assert went_down


def test_unknown_schedule_names_the_choices():
    with pytest.raises(OptionError) as err:
        TemperatureOptions(schedule="cosine")
    for name in SCHEDULES:
        assert name in str(err.value)


# --- budget -------------------------------------------------------------------------------------

def test_budget_lambda_formula_and_sign():
    for _ in range(20):
        target = float(torch.empty(()).uniform_(0.05, 1.0))
        base = float(torch.empty(()).uniform_(0.001, 1.0))
        usage = float(torch.empty(()).uniform_(0.0, 1.0))
        metric = random.choice(["macs", "params"])
        b = BudgetController(BudgetOptions(metric=metric, target=target, lambda_base=base))
        lam = b.update(usage)
        assert lam == b.lam and b.usage == usage
        assert lam == pytest.approx(base * (usage - target) / target, rel=1e-12)
        assert (lam > 0) == (usage > target) and (lam < 0) == (usage < target)
    b = BudgetController(BudgetOptions(target=0.5, lambda_base=base))
    assert b.update(0.5) == 0.0


def test_budget_none_keeps_lambda_base():
    base = float(torch.empty(()).uniform_(0.001, 1.0))
    target = float(torch.empty(()).uniform_(0.1, 1.0))
    b = BudgetController(BudgetOptions(metric="none", target=target, lambda_base=base))
    assert b.lam == base
    for _ in range(5):
        assert b.update(float(torch.rand(()))) == base


def test_budget_rejects_bad_arguments():
    with pytest.raises(OptionError, match="budget.metric: unknown value 'flops'.*macs"):
        BudgetOptions(metric="flops")
    for bad in (0.0, -random.random(), 1 + random.random()):
        with pytest.raises(OptionError, match=r"budget.target = .*: must be in \(0, 1\]"):
            BudgetOptions(target=bad)


@pytest.mark.parametrize("name", ["resnet20", "vgg11"])
@pytest.mark.parametrize("target", [0.3, 0.6])
@pytest.mark.parametrize("seed_fraction,seed_blocks", [(0.25, "one_per_stage"), (1.0, "all")])
def test_budget_closed_loop_reaches_the_target(name, target, seed_fraction, seed_blocks):
    """Only the penalty drives the masks (no task loss): the hard-MACs usage must settle within a
    few percent of the target, from a small seed (growing) and from the full network (pruning).

    Without a task loss every structure of a gate would get the same gradient and all of them
    would cross zero together, so the seed logits get a small random jitter (the symmetry a
    task loss breaks in real training). Gates are on channels only, and the ResNet at full width
    so that its costliest structure (a stage-1 stream channel) is 2.4 % of the dense MACs: the
    hard usage moves in steps of whole structures (with block gates, of whole blocks, ~11 %)."""
    model = create_model("resnet20", in_channels=1, gate_blocks=False) if name == "resnet20" \
        else small_vgg()
    ctrl = GrowthController(model, (1, 8, 8), epochs=10,
                            gates=GateOptions(seed_fraction=seed_fraction, seed_blocks=seed_blocks,
                                              s_on=0.5, s_off_spread=0.0),
                            temperature=TemperatureOptions(beta_0=1.0),
                            budget=BudgetOptions(target=target, lambda_base=0.05),
                            rng_seed=int(torch.randint(0, 10_000, ())))
    with torch.no_grad():
        for p in ctrl.mask_parameters():
            p.add_(0.1 * torch.randn_like(p))
    ctrl.budget.update(ctrl.current_usage())
    start = ctrl.budget.usage
    assert abs(start - target) > 0.1
    usage = budget_only_steps(ctrl, 300)
    hard = ctrl.costs.hard()[0] / ctrl.costs.dense_macs
    assert usage[-1] == pytest.approx(hard)
    tail = usage[-50:]
    assert max(abs(u - target) for u in tail) < 0.03, (start, tail[::5])
    stats = ctrl.end_epoch()
    assert stats["budget/usage"] == pytest.approx(stats["cost/macs"] / stats["cost/dense_macs"])



@pytest.mark.parametrize("seed_fraction,seed_blocks", [(0.25, "one_per_stage"), (1.0, "all")])
def test_target_ramp_moves_the_target_from_the_seed_to_tau(seed_fraction, seed_blocks):
    """budget.target_ramp r: epoch e of T aims at u_0 + (τ − u_0)·min(1, e/(r·T)), from the seed's
    usage u_0 (below τ when growing, above when pruning from full); λ follows the epoch's target,
    the target is logged, it survives a checkpoint, and the budget alone follows it."""
    epochs, target = random.randint(6, 12), random.uniform(0.3, 0.7)
    ramp = random.uniform(0.3, 0.8)
    ctrl = GrowthController(create_model("resnet20", in_channels=1, gate_blocks=False), (1, 8, 8),
                            epochs=epochs,
                            temperature=TemperatureOptions(beta_0=1.0, beta_final=1.0),
                            gates=GateOptions(seed_fraction=seed_fraction, seed_blocks=seed_blocks,
                                              s_on=0.5, s_off_spread=0.0),
                            budget=BudgetOptions(target=target, target_ramp=ramp),
                            rng_seed=random.randint(0, 1000))
    u0 = ctrl.budget.ramp_from
    assert u0 == pytest.approx(ctrl.current_usage()) and abs(u0 - target) > 0.1
    with torch.no_grad():                  # the symmetry a task loss would break
        for p in ctrl.mask_parameters():
            p.add_(0.01 * torch.randn_like(p))

    def expected(e):
        return u0 + (target - u0) * min(1.0, e / (ramp * epochs))

    assert ctrl.budget.target == pytest.approx(expected(1))
    targets, final_usage = [], []
    for e in range(1, epochs + 1):
        ctrl.start_epoch()
        assert ctrl.budget.target == pytest.approx(expected(e))
        usage = budget_only_steps(ctrl, 40)
        assert ctrl.budget.lam == pytest.approx(
            ctrl.budget.lambda_base * (usage[-1] - ctrl.budget.target) / ctrl.budget.target)
        stats = ctrl.end_epoch()
        targets.append(stats["budget/target"])
        final_usage.append(usage[-1])
        if e == epochs // 2:               # a checkpoint mid-ramp restores the same targets
            again = GrowthController(create_model("resnet20", in_channels=1, gate_blocks=False),
                                     (1, 8, 8), epochs=epochs,
                                     budget=BudgetOptions(target=target, target_ramp=ramp))
            again.load_state_dict(ctrl.state_dict())
            assert again.budget.target == pytest.approx(ctrl.budget.target)
            again.start_epoch()
            assert again.budget.target == pytest.approx(expected(e + 1))
    assert targets == pytest.approx([expected(e) for e in range(1, epochs + 1)])
    assert targets[-1] == pytest.approx(target)
    # the usage follows the moving target instead of reaching τ in the first epoch
    assert abs(final_usage[0] - targets[0]) < abs(final_usage[0] - target), (targets, final_usage)
    assert abs(final_usage[-1] - target) < 0.05, (u0, targets, final_usage)


def test_no_ramp_logs_no_target_and_keeps_tau():
    ctrl = GrowthController(small_resnet(), (1, 8, 8), epochs=5,
                            budget=BudgetOptions(target=0.4))
    ctrl.start_epoch()
    assert ctrl.budget.target == 0.4 and "budget/target" not in ctrl.end_epoch()
    with pytest.raises(OptionError, match=r"budget.target_ramp = .*in \[0, 1\]"):
        BudgetOptions(target_ramp=1 + random.random())


# --- seed ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("blocks", ["one_per_stage", "all"])
def test_init_seed_fraction_and_blocks(blocks):
    model = small_resnet(gate_blocks=True)
    fraction = float(torch.empty(()).uniform_(0.0, 1.0))
    s_on = float(torch.empty(()).uniform_(0.1, 2.0))
    s_off = -float(torch.empty(()).uniform_(0.01, 2.0))
    named = gates_of(model)
    selection = random.choice(["first", "random"])
    init_seed(named, fraction, blocks, selection, s_on, s_off,
              torch.Generator().manual_seed(int(torch.randint(0, 1000, ()))))
    n_blocks = 0
    for name, g in named:
        vals = g.logits.detach()
        assert torch.all(torch.isclose(vals, torch.tensor(s_on))
                         | torch.isclose(vals, torch.tensor(s_off))), name
        on = int((vals > 0).sum())
        if isinstance(g, BlockGate):
            n_blocks += 1
            assert on == (1 if blocks == "all" else 0), name
        else:
            assert 1 <= on <= g.n
            assert abs(on - fraction * g.n) <= 0.5 or (on == 1 and fraction * g.n < 1), \
                (name, on, fraction * g.n)
            if selection == "first":
                assert torch.all(vals[:on] > 0)
    assert n_blocks == 6


def test_controller_seed_one_per_stage_keeps_one_block_per_stage():
    model = small_resnet(gate_blocks=True)
    ctrl = GrowthController(model, (1, 8, 8), epochs=2, gates=GateOptions(seed_fraction=0.25))
    stats = ctrl.architecture_stats()
    assert [stats[f"blocks/stage{k}"] for k in (1, 2, 3)] == [1.0, 1.0, 1.0]
    full = GrowthController(small_resnet(gate_blocks=True), (1, 8, 8), epochs=2,
                            gates=GateOptions(seed_fraction=1.0, seed_blocks="all"))
    assert full.costs.hard() == (full.costs.dense_macs, full.costs.dense_params)
    assert full.budget.usage == 1.0


# --- penalty ------------------------------------------------------------------------------------

def _equalise(ctrl, logit, beta):
    with torch.no_grad():
        for g in ctrl.gates:
            g.logits.fill_(logit)
            g.beta.fill_(beta)


def test_penalty_is_zero_when_lambda_is_zero():
    ctrl = GrowthController(small_resnet(), (1, 8, 8), epochs=3,
                            budget=BudgetOptions(metric="none", lambda_base=0.0))
    pen = ctrl.penalty()
    assert pen.item() == 0.0
    ctrl2 = GrowthController(small_vgg(), (1, 8, 8), epochs=3, budget=BudgetOptions(target=0.5))
    ctrl2.budget.lam = 0.0
    assert ctrl2.penalty().item() == 0.0
    ctrl2.budget.lam = 0.1
    assert ctrl2.penalty().item() > 0.0


def _penalty_grads(ctrl):
    for p in ctrl.mask_parameters():
        p.grad = None
    ctrl.penalty().backward()
    return torch.cat([g.logits.grad for g in ctrl.gates])


def _marginal_macs(costs: CostModel, ctrl) -> torch.Tensor:
    """What removing one structure of each gate saves in the dense network, by counting."""
    out = []
    for name, g in ctrl.named_gates:
        state = {name: torch.ones(g.n)}
        state[name][0] = 0.0
        saved = costs.dense_macs - float(costs.count(state)[0])
        out.append(torch.full((g.n,), saved))
    return torch.cat(out)


@pytest.mark.parametrize("make", [small_resnet, small_vgg])
def test_growth_push_uniform_vs_cost(make):
    # |β·s| ≤ 3 keeps float32's 1 − p accurate to ~1e-6 relative
    logit = float(torch.empty(()).uniform_(-1.5, 1.5))
    beta = float(torch.empty(()).uniform_(0.5, 2.0))
    lam = -float(torch.empty(()).uniform_(0.01, 1.0))
    # dense costs (small_resnet gates blocks too: its default is the current architecture's)
    uniform = GrowthController(make(), (1, 8, 8), epochs=3,
                               budget=BudgetOptions(growth_push="uniform", block_costs="dense"))
    cost = GrowthController(make(), (1, 8, 8), epochs=3,
                            budget=BudgetOptions(growth_push="cost", block_costs="dense"))
    p = 1 / (1 + math.exp(-beta * logit))
    marginal = _marginal_macs(cost.costs, cost)
    assert torch.all(marginal > 0)
    for ctrl in (uniform, cost):
        _equalise(ctrl, logit, beta)
    # growing (λ < 0): uniform push is the same on every logit, cost push is cost-proportional
    uniform.budget.lam = cost.budget.lam = lam
    gu, gc = _penalty_grads(uniform), _penalty_grads(cost)
    # mean normalisation: uniform weights are 1, cost weights c_i / mean(c)
    torch.testing.assert_close(gu, torch.full_like(gu, lam * beta * p * (1 - p)), rtol=1e-4, atol=0)
    torch.testing.assert_close(gc, lam * beta * p * (1 - p) * marginal / marginal.mean(),
                               rtol=1e-4, atol=0)
    assert torch.all(gu < 0) and torch.all(gc < 0)      # λ < 0: descent raises every logit
    assert gc.min() / gc.max() > 2                       # costs really differ
    # pruning (λ > 0): both are cost-proportional, whatever growth_push says
    uniform.budget.lam = cost.budget.lam = -lam
    gu, gc = _penalty_grads(uniform), _penalty_grads(cost)
    torch.testing.assert_close(gu, gc)
    torch.testing.assert_close(gu / gu.sum(), marginal / marginal.sum(), rtol=1e-4, atol=0)


# --- training cost accounting -------------------------------------------------------------------

def test_after_step_accounts_three_times_sampled_macs_per_image():
    model = small_resnet(gate_blocks=True)
    ctrl = GrowthController(model, (1, 8, 8), epochs=2, gates=GateOptions(s_off=0.0),
                            rng_seed=int(torch.randint(0, 10_000, ())))
    expected, dense = 0.0, 0.0
    twin_costs = CostModel(model, (1, 8, 8))
    for _ in range(4):
        ctrl.sample()
        batch = int(torch.randint(1, 64, ()))
        # the sampled architecture as a hard one: logits with the sign of q
        saved = [g.logits.detach().clone() for g in ctrl.gates]
        with torch.no_grad():
            for g in ctrl.gates:
                g.logits.copy_(g.sample - 0.5)
        sampled = twin_costs.hard()[0]
        with torch.no_grad():
            for g, s in zip(ctrl.gates, saved):
                g.logits.copy_(s)
        assert 0 < sampled < ctrl.costs.dense_macs
        ctrl.after_step(batch)
        expected += 3 * sampled * batch
        dense += 3 * ctrl.costs.dense_macs * batch
        assert ctrl.train_macs_epoch == pytest.approx(expected, rel=1e-9)
    stats = ctrl.end_epoch()
    assert stats["cost/train_macs"] == pytest.approx(expected)
    assert stats["cost/train_macs_total"] == pytest.approx(expected)
    assert stats["cost/dense_train_macs_total"] == pytest.approx(dense)
    assert stats["cost/train_savings"] == pytest.approx(1 - expected / dense)
    ctrl.sample()
    ctrl.after_step(2)
    stats2 = ctrl.end_epoch()        # a new epoch starts from zero; the total accumulates
    assert stats2["cost/train_macs"] == pytest.approx(3 * ctrl.costs.sampled_macs() * 2)
    assert stats2["cost/train_macs_total"] == pytest.approx(expected + stats2["cost/train_macs"])


@pytest.mark.parametrize("mode", ["deterministic", "hard"])
def test_unsampled_modes_count_dense_or_hard_macs(mode):
    ctrl = GrowthController(small_resnet(gate_blocks=True), (1, 8, 8), epochs=2,
                            gates=GateOptions(sampling=mode, seed_fraction=float(
                                torch.empty(()).uniform_(0.1, 0.6))))
    with torch.no_grad():
        for g in ctrl.gates:
            g.logits.copy_(torch.randn(g.n))
    batch = int(torch.randint(1, 64, ()))
    ctrl.sample()
    ctrl.after_step(batch)
    ref = ctrl.costs.dense_macs if mode == "deterministic" else ctrl.costs.hard()[0]
    assert ctrl.costs.hard()[0] < ctrl.costs.dense_macs
    assert ctrl.train_macs_epoch == pytest.approx(3 * ref * batch)


# --- per-epoch statistics -----------------------------------------------------------------------

@pytest.mark.parametrize("make", [small_resnet, small_vgg])
def test_end_epoch_returns_the_contract_keys(make):
    model = make()
    ctrl = GrowthController(model, (1, 8, 8), epochs=4,
                            temperature=TemperatureOptions(schedule=random.choice(SCHEDULES)))
    named = dict(ctrl.named_gates)
    with torch.no_grad():
        for g in ctrl.gates:
            g.logits.copy_(torch.randn(g.n))
            g.beta.uniform_(1.0, 5.0)
    betas = {n: float(g.beta.mean()) for n, g in named.items()}
    ctrl.sample()
    ctrl.after_step(4)
    stats = ctrl.end_epoch()
    for key in ("cost/macs", "cost/params", "cost/train_macs", "cost/train_macs_total",
                "budget/lambda", "budget/usage"):
        assert key in stats and math.isfinite(stats[key]), key
    macs, params = ctrl.costs.hard()
    assert (stats["cost/macs"], stats["cost/params"]) == (macs, params)
    assert stats["budget/usage"] == pytest.approx(macs / ctrl.costs.dense_macs)
    assert stats["budget/lambda"] == pytest.approx(
        0.05 * (stats["budget/usage"] - 0.5) / 0.5)
    floor = GateOptions().min_channels        # channels a gate keeps on whatever its logits

    def kept(g):
        return max(int((g.logits > 0).sum()), min(floor, g.n))

    gated_layers = [s for s in model.sites() if s.out_gate is not None]
    assert gated_layers
    for site in gated_layers:
        gate = named[site.out_gate]
        ratio = kept(gate) / gate.n
        if site.block is not None:
            ratio *= float(named[site.block].logits.item() > 0)
        assert stats[f"channels/{site.name}"] == pytest.approx(ratio), site.name
        # mean β of the layer's gate during the epoch that just ended
        assert stats[f"temperature/{site.name}"] == pytest.approx(betas[site.out_gate])
    assert not any(k.startswith("channels/") and k[9:] not in
                   {s.name for s in gated_layers} and not k.startswith("channels/stage")
                   for k in stats)
    stages = sorted({s.stage for s in model.sites()})
    for k in stages:
        gates_k = [g for n, g in named.items() if isinstance(g, ChannelGate)
                   and ctrl.costs.stage_of.get(n) == k]
        if gates_k:
            on = sum(kept(g) for g in gates_k)
            assert stats[f"channels/stage{k}"] == pytest.approx(on / sum(g.n for g in gates_k))
    if make is small_resnet:
        for k in (1, 2, 3):
            on = 1 + sum(int(named[f"layer{k}.{j}.block_gate"].logits.item() > 0) for j in (1, 2))
            assert stats[f"blocks/stage{k}"] == on
    else:
        assert not any(k.startswith("blocks/") for k in stats)


def test_the_method_checks_its_own_options_for_users_of_their_own_loop():
    """Someone using the method without the suite's config gets the same clear errors."""
    from reproduce.method.options import (BudgetOptions, GateOptions, OptionError,
                                          TemperatureOptions)
    with pytest.raises(OptionError, match="gates.sampling: unknown value 'gumbel'.*bernoulli"):
        GateOptions(sampling="gumbel")
    with pytest.raises(OptionError, match="budget.growth_push: unknown value 'fast'"):
        BudgetOptions(growth_push="fast")
    with pytest.raises(OptionError, match="budget.target = 1.5: must be in"):
        BudgetOptions(target=1.5)
    with pytest.raises(OptionError, match="temperature.beta_final"):
        TemperatureOptions(beta_0=10.0, beta_final=5.0)
    with pytest.raises(OptionError, match="gates.seed_blocks"):
        GateOptions(seed_blocks="some")
    # the config schema takes the method's vocabularies: one definition, one message
    from reproduce.config import ConfigError, resolve
    with pytest.raises(ConfigError, match="gates.sampling: unknown value 'gumbel'"):
        resolve({"gates": {"sampling": "gumbel"}})
    with pytest.raises(ConfigError, match="budget.target"):
        resolve({"budget": {"target": 0.0}})


def test_block_costs_follow_the_current_architecture():
    """budget.block_costs = current: a structure weighs what it costs in the hard architecture
    (a closed block's inner channels nothing; an open block its layers at their current widths)
    over the dense cost per channel, so a block-only model pushes a block as hard, per MAC, as a
    model that also gates channels; dense keeps the weights of before."""
    def weights(channels, block_costs):
        model = gated("basic3resnet", channels=channels, shape=(1, 8, 8))
        ctrl = GrowthController(model, (1, 8, 8), epochs=3,
                                budget=BudgetOptions(block_costs=block_costs))
        return ctrl, dict(zip((n for n, _ in ctrl.named_gates),
                              ctrl.cost_weights.split([g.n for g in ctrl.gates])))
    layers, w_layers = weights(False, "current")
    joint, w_joint = weights(True, "current")
    per_channel = 2 * joint.costs.dense_macs / sum(sh.cout for sh in joint.costs.shapes)
    block = "layer1.1.block_gate"
    dense_block = joint.costs.structure_costs("macs")[block]
    # block-only: channels all on, so the current cost is the dense one
    assert float(w_layers[block]) == pytest.approx(dense_block / per_channel, rel=1e-5)
    # joint, at the seed (25 % of channels, closed blocks): the block's layers at seed width
    state = joint.costs.hard_state()
    opened = dict(state, **{block: torch.ones(1)})
    cost_now = float(joint.costs.count(opened)[0] - joint.costs.count(state)[0])
    assert float(w_joint[block]) == pytest.approx(cost_now / per_channel, rel=1e-5)
    assert cost_now < dense_block / 8
    assert torch.all(w_joint["layer1.1.gate1"] == 0)        # inside a closed block: free
    # dense: the weights of before (block-only: a block over the mean block = 1)
    _, w_dense = weights(False, "dense")
    assert torch.allclose(w_dense[block], torch.ones(1))
    # the weights follow the hard architecture as it changes
    with torch.no_grad():
        dict(joint.named_gates)[block].logits.fill_(1.0)
    joint.after_step(1)
    w_now = dict(zip((n for n, _ in joint.named_gates),
                     joint.cost_weights.split([g.n for g in joint.gates])))
    assert torch.all(w_now["layer1.1.gate1"] > 0)


def test_spread_seed_logits_cross_zero_one_by_one(fresh_seed):
    spread = float(torch.empty(()).uniform_(0.2, 2.0))
    s_off = -float(torch.rand(())) * 0.3
    ctrl = GrowthController(small_resnet(), (1, 8, 8), epochs=3, rng_seed=fresh_seed,
                            gates=GateOptions(s_on=2.5, s_off=s_off, s_off_spread=spread))
    unspread = GrowthController(small_resnet(), (1, 8, 8), epochs=3, rng_seed=fresh_seed,
                                gates=GateOptions(s_on=2.5, s_off=s_off, s_off_spread=spread,
                                                  spread_blocks=False))
    blocks = [g.logits.item() for _, g in ctrl.named_gates if isinstance(g, BlockGate)]
    assert len(blocks) > 1 and len(set(blocks)) == len(blocks)      # blocks spread as channels
    assert all(s_off - spread <= b <= s_off for b in blocks)
    assert all(g.logits.item() == pytest.approx(s_off)              # as before: one shared logit
               for _, g in unspread.named_gates if isinstance(g, BlockGate))
    for name, g in ctrl.named_gates:
        if isinstance(g, BlockGate):
            continue
        seed = g.logits.detach() == 2.5
        rest = g.logits.detach()[~seed]
        assert int(seed.sum()) == max(1, round(0.25 * g.n))
        assert torch.all(rest <= s_off) and torch.all(rest >= s_off - spread)
        if rest.numel() > 1:
            assert rest.unique().numel() == rest.numel()           # distinct: no whole-gate jump


def test_bn_recalibration_measures_the_hard_architecture_and_counts_its_cost(fresh_seed):
    """Running stats become the plain average over N batches of the hard-gated net's batch
    statistics; sampling, momenta, mode and the loader's epoch are restored; MACs are counted."""
    model = small_vgg()
    ctrl = GrowthController(model, (1, 8, 8), epochs=3, rng_seed=fresh_seed)
    with torch.no_grad():
        for g in ctrl.gates:
            g.logits.uniform_(-1, 1)

    class Loader:
        epoch = 7
        def __iter__(self):
            gen = torch.Generator().manual_seed(fresh_seed)
            for _ in range(5):
                yield torch.randn(6, 1, 8, 8, generator=gen), None

    n = int(torch.randint(1, 5, ()))
    # expected: per BN layer, the mean of the batch means over the first n batches (hard gates)
    bn = model.bn2
    seen = []
    handle = bn.register_forward_hook(lambda m, i, o: seen.append(i[0].mean(dim=(0, 2, 3))))
    model.eval()
    ctrl.recalibrate_bn(Loader(), n)
    handle.remove()
    assert len(seen) == n
    assert torch.allclose(bn.running_mean, torch.stack(seen).mean(0), atol=1e-5)
    assert int(bn.num_batches_tracked) == n and bn.momentum == 0.1
    assert not model.training and all(g.sampling == "bernoulli" for g in ctrl.gates)
    assert ctrl.train_macs_epoch == pytest.approx(ctrl.costs.hard()[0] * 6 * n)
    loader = Loader()
    ctrl.recalibrate_bn(loader, 2)
    assert loader.epoch == 7
    before = ctrl.train_macs_epoch
    ctrl.recalibrate_bn(loader, 0)                                  # 0 = off
    assert ctrl.train_macs_epoch == before


def test_pruning_from_the_full_network_moves_with_the_default_options(fresh_seed):
    """With the method's default seed logit and β_0, a full network under a 0.5 budget prunes:
    the seed's probabilities are not saturated (s_on = 3 at β_0 = 5 gave σ'(15) ≈ 3e-7, and the
    full network never pruned)."""
    model = create_model("resnet20", in_channels=1, gate_blocks=False)
    defaults = GateOptions()
    ctrl = GrowthController(model, (1, 8, 8), epochs=10, rng_seed=fresh_seed,
                            gates=GateOptions(seed_fraction=1.0, seed_blocks="all"),
                            budget=BudgetOptions(target=0.5))
    assert ctrl.budget.usage == pytest.approx(1.0)
    budget_only_steps(ctrl, 150)
    assert ctrl.budget.usage < 0.7, (defaults, ctrl.budget.usage)


def test_seed_spread_leaves_the_rest_of_the_start_alone(fresh_seed):
    """`s_on_spread` spreads the seed channels over [s_on, s_on + spread] and draws after the
    non-seed spread, so at 0 (its default) every run starts exactly as before it existed."""
    spread = float(torch.empty(()).uniform_(0.2, 1.0))
    plain = GrowthController(small_resnet(), (1, 8, 8), epochs=3, rng_seed=fresh_seed)
    spread_ctrl = GrowthController(small_resnet(), (1, 8, 8), epochs=3, rng_seed=fresh_seed,
                                   gates=GateOptions(s_on_spread=spread))
    for (name, a), (_, b) in zip(plain.named_gates, spread_ctrl.named_gates):
        a, b = a.logits.detach(), b.logits.detach()
        if a.numel() == 1:                       # block gates are not spread
            assert torch.equal(a, b), name
            continue
        seed = a == 0.5
        assert torch.equal(a[~seed], b[~seed]), name               # the rest is untouched
        assert torch.all(b[seed] >= 0.5) and torch.all(b[seed] <= 0.5 + spread)
        if int(seed.sum()) > 1:
            assert b[seed].unique().numel() == int(seed.sum())


def test_pruning_from_full_with_a_seed_spread_closes_channels_a_few_at_a_time(fresh_seed):
    """From the full network every channel of a gate starts at s_on: without a spread the
    cost-weighted push closes a whole stage's stream in one iteration (ResNet-20 at τ = 0.3:
    usage 1.0 → 0.64, then 0.55 → 0.33, before the task loss has shaped anything; the smoke
    run then trained at chance). With `s_on_spread` the usage falls a few channels at a time,
    so the budget controller sees it approach τ. (Over 1000 seeds with the spread: the largest
    drop 0.05-0.150, the usage after 60 steps at most 0.329; after 40 it was still up to 0.40.)"""
    def largest_step(spread: float) -> float:
        model = create_model("resnet20", in_channels=1, gate_blocks=False)
        ctrl = GrowthController(model, (1, 8, 8), epochs=20, rng_seed=fresh_seed,
                                gates=GateOptions(seed_fraction=1.0, seed_blocks="all",
                                                  s_on_spread=spread),
                                budget=BudgetOptions(target=0.3))
        usage = [ctrl.budget.usage] + budget_only_steps(ctrl, 60)
        assert usage[-1] < 0.35                                    # both prune to the budget
        return max(a - b for a, b in zip(usage, usage[1:]))

    assert largest_step(0.0) > 0.3                 # stage 1's whole stream (0.36 of the MACs)
    assert largest_step(0.5) < 0.2                 # a few channels at a time


@pytest.mark.slow
def test_pruning_from_full_at_a_0_3_budget_trains_on_the_smoke_data(one_thread):
    """Figure 1(c)'s pruning-from-full run at τ = 0.3 (experiments/figure-14.yaml, smoke profile,
    20 epochs on digits) trains to a working network within its budget (97.5 % at 0.298 of the
    dense MACs). Without `gates.s_on_spread` it closed stage 1's and stage 2's streams in the
    first epoch and ended at chance (8.9 %)."""
    from reproduce.experiments import plan
    from reproduce.runner import execute

    cfg = plan("figure-14", "smoke", only=["prune-macs0.3"])[0].cfg
    assert cfg.gates.seed_fraction == 1.0 and cfg.gates.s_on_spread > 0
    final = execute(cfg, progress=False).history[-1]
    assert final["val/acc"] > 90.0, final["val/acc"]              # chance is 10 %
    assert final["train/loss"] < 0.5, final["train/loss"]         # ln 10 = 2.30 when collapsed
    assert final["budget/usage"] == pytest.approx(0.3, abs=0.02)
