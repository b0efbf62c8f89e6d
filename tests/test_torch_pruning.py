"""The pruning baselines checked against Torch-Pruning (Fang et al. 2023), a maintained library.

On one network with random weights and BN scales (standing in for a trained one) our selection
and Torch-Pruning's, given the same per-layer ratios, must remove the same channels of the same
layers, and the two pruned networks must be the same network: equal tensors, equal outputs, and
equal MACs and params by Torch-Pruning's counter (`tp.utils.count_ops_and_params`) and by ours.

How each baseline is spelt in Torch-Pruning (docs/METHOD.md, "Baselines"):
  l1_norm   MagnitudeImportance(p=1, normalizer=None, group_reduction="first"): the L1 norm of the
            filter writing the channel, Li et al.'s criterion. Torch-Pruning's default
            (group_reduction="mean", normalizer="mean") is its group norm, which also sums the next
            layer's input kernels and the BN scale: a different criterion, not compared.
  slimming  BNScaleImportance: |γ| of the BN after the layer (the mean over the BNs of a coupled
            group, as ours). Liu et al.'s global threshold is global_pruning=True with
            normalizer=None; Torch-Pruning's default normalizer divides each layer's scores by their
            mean, which changes a global ranking (not a per-layer one).
  scope     Layers outside our scope are `ignored_layers`. ResNet scope `inner` prunes each block's
            conv1 only (as Li et al.); scope `all` adds the residual streams, which Torch-Pruning's
            dependency graph couples exactly as our stream gates (checked below).

Intended differences, kept out of the compared cases: a layer that a ratio or a threshold would
empty keeps its best channel in ours and is left whole by Torch-Pruning (it refuses to empty a
layer); ties in the scores break towards the lower index in ours and by torch.topk in
Torch-Pruning (random scores have none); MACs by Torch-Pruning's counter also count BN (2 per
element), ReLU, pooling and biases, ours conv and linear multiply-accumulates only, so ours is
compared with its conv and linear layers less the linear bias. Its counter finds a layer's hook
by exact type, so our layers (subclasses of nn.Conv2d, nn.Linear, ...) are registered with its
hooks for their bases (tp_count); unregistered, it counts them as zero-op.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from reproduce import baselines
from reproduce.method import CostModel, GrowthController, export
from reproduce.method.options import BudgetOptions, GateOptions
from reproduce.models import create_model, layers

tp = pytest.importorskip("torch_pruning", reason="test extra: pip install -e '.[test]'")

SHAPES = {"resnet20": (3, 16, 16), "vgg16": (3, 16, 16)}     # CIFAR nets, small maps
L1 = dict(p=1, normalizer=None, group_reduction="first")


def trained(name: str, seed: int):
    """A gated network, all gates open, with random conv weights and BN affine/statistics."""
    torch.manual_seed(seed)
    model = create_model(name, num_classes=10, in_channels=3)
    controller = GrowthController(
        model, SHAPES[name], epochs=2, budget=BudgetOptions(lambda_base=0.0),
        gates=GateOptions(sampling="hard", seed_fraction=1.0, seed_blocks="all", s_on=1.0))
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(-1, 1)
                m.bias.normal_(0, 0.1)
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return model, controller


def ours(model: nn.Module, masks: dict[str, torch.Tensor]) -> nn.Module:
    """Our pruned network: the masks on a copy of the gated model, exported."""
    model = copy.deepcopy(model)
    baselines.apply_masks(model, masks)
    return export(model)


def theirs(dense: nn.Module, shape, importance, prunable: list[str], *, ratios=None,
           ratio: float = 0.0, global_pruning: bool = False):
    """Torch-Pruning on a copy of the dense network: `prunable` layers (out channels) may be
    pruned, every other conv and linear is ignored. Returns the pruned network and the indices
    each group removed, by the name of every prunable layer whose out channels it removed."""
    net = copy.deepcopy(dense)
    mods = dict(net.named_modules())
    names = {m: n for n, m in mods.items()}
    ignored = [m for n, m in mods.items()
               if isinstance(m, (nn.Conv2d, nn.Linear)) and n not in prunable]
    pruner = tp.pruner.MetaPruner(
        net, torch.zeros(1, *shape), importance=importance, global_pruning=global_pruning,
        pruning_ratio=ratio, pruning_ratio_dict={mods[n]: r for n, r in (ratios or {}).items()},
        ignored_layers=ignored)
    removed = {}
    for group in pruner.step(interactive=True):
        written = [names[dep.target.module] for dep, _ in group
                   if pruner.DG.is_out_channel_pruning_fn(dep.handler)
                   and names.get(dep.target.module) in prunable]
        removed.update({layer: sorted(group[0][1]) for layer in written})
        group.prune()
    return net.eval(), removed


def writer(gates, gate: str) -> str:
    """The first layer writing a gate's channels (a key of its Torch-Pruning ratio)."""
    return gates[gate][0].name


def assert_same_selection(gates, masks, removed):
    """Every layer writing a gate lost exactly the channels our mask closes."""
    for gate, keep in masks.items():
        for site in gates[gate]:
            assert torch.nonzero(~keep).flatten().tolist() == removed.get(site.name, []), site.name


def tp_count(net: nn.Module, shape):
    """Torch-Pruning's counter. It looks hooks up by exact type, so our layers (nn.Conv2d etc.
    subclasses that accept zero channels) are registered with its own hooks for their bases;
    otherwise it would count them as zero-op layers."""
    counter = tp.utils.op_counter
    counter.CUSTOM_MODULES_MAPPING = {            # reset by every count, so set for each
        layers.Conv2d: counter.conv_flops_counter_hook,
        layers.Linear: counter.linear_flops_counter_hook,
        layers.BatchNorm2d: counter.bn_flops_counter_hook,
        layers.MaxPool2d: counter.pool_flops_counter_hook,
    }
    ops, params, layer_ops, layer_params = tp.utils.count_ops_and_params(
        net, torch.zeros(1, *shape), layer_wise=True)
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)) and m.weight.numel():
            assert layer_ops[m] > 0, f"{type(m).__name__} not counted"
    return ops, params, layer_ops, layer_params


def assert_same_network(a: nn.Module, b: nn.Module, shape):
    """Equal tensors, equal outputs, equal MACs/params by Torch-Pruning's counter and ours."""
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert sa[k].shape == sb[k].shape and torch.equal(sa[k], sb[k]), k
    x = torch.randn(2, *shape)
    with torch.no_grad():
        torch.testing.assert_close(a.eval()(x), b.eval()(x), rtol=0, atol=0)
    ops_a, params_a, layer_ops, layer_params = tp_count(a, shape)
    assert (ops_a, params_a) == tp_count(b, shape)[:2]
    # ours counts conv and linear multiply-accumulates and weights (+ bias) only
    convs = [m for m in a.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    macs = sum(layer_ops[m] - (m.out_features if isinstance(m, nn.Linear) and m.bias is not None
                               else 0) for m in convs)
    params = sum(layer_params[m] for m in convs)
    for net in (a, b):
        counted = CostModel(net, shape)
        assert (counted.dense_macs, counted.dense_params) == (macs, params)
    return macs, params


def per_layer_ratios(gates, seed: int) -> dict[str, float]:
    """A ratio per gate, several with fractional ratio·n so the rounding of kept counts shows."""
    g = torch.Generator().manual_seed(seed)
    choices = [0.1, 0.25, 0.3, 0.45, 0.5, 0.6, 0.7, 0.85]
    return {gate: choices[int(torch.randint(len(choices), (), generator=g))] for gate in gates}


@pytest.mark.parametrize("name,seed", [("resnet20", 11), ("vgg16", 12)])
@pytest.mark.parametrize("criterion", ["l1_norm", "slimming"])
def test_per_layer_ratio_keeps_the_channels_torch_pruning_keeps(name, seed, criterion):
    model, controller = trained(name, seed)
    gates = baselines.prunable_gates(model, "auto")
    scoring = baselines.l1_scores if criterion == "l1_norm" else baselines.slimming_scores
    ratios = per_layer_ratios(gates, seed)
    masks = baselines.ratio_masks(scoring(model, gates), ratios)
    importance = (tp.importance.MagnitudeImportance(**L1) if criterion == "l1_norm"
                  else tp.importance.BNScaleImportance())
    net, removed = theirs(export(model), SHAPES[name], importance, [writer(gates, g) for g in gates],
                          ratios={writer(gates, g): r for g, r in ratios.items()})
    assert_same_selection(gates, masks, removed)
    ours_net = ours(model, masks)
    macs, params = assert_same_network(ours_net, net, SHAPES[name])
    baselines.apply_masks(model, masks)
    assert controller.costs.hard() == (macs, params)           # the counter training reports


@pytest.mark.parametrize("name,target", [("resnet20", 0.5), ("vgg16", 0.3)])
def test_l1_norm_bisected_ratio_is_torch_pruning_uniform_ratio(name, target):
    model, controller = trained(name, seed=21)
    gates = baselines.prunable_gates(model, "auto")
    masks, info = baselines.choose_masks(model, controller.costs, gates, "l1_norm", target)
    assert all(int(m.sum()) > 1 for m in masks.values())
    net, removed = theirs(export(model), SHAPES[name], tp.importance.MagnitudeImportance(**L1),
                          [writer(gates, g) for g in gates], ratio=info["prune/layer_ratio"])
    assert_same_selection(gates, masks, removed)
    macs, _ = assert_same_network(ours(model, masks), net, SHAPES[name])
    assert macs / controller.costs.dense_macs == pytest.approx(info["prune/usage"])


@pytest.mark.parametrize("name,target,scope", [("resnet20", 0.5, "inner"), ("vgg16", 0.4, "all"),
                                               ("resnet20", 0.6, "all")])
def test_slimming_global_threshold_is_torch_pruning_global_pruning(name, target, scope):
    model, controller = trained(name, seed=31)
    gates = baselines.prunable_gates(model, scope)
    masks, info = baselines.choose_masks(model, controller.costs, gates, "slimming", target)
    assert all(int(m.sum()) > 1 for m in masks.values())        # no layer at its floor of one
    k = sum(int((~m).sum()) for m in masks.values())
    total = sum(m.numel() for m in masks.values())
    # Torch-Pruning removes total − int(total·(1 − ratio)) channels: exactly k at this ratio
    ratio = (k - 0.5) / total
    assert total - int(total * (1 - ratio)) == k
    net, removed = theirs(export(model), SHAPES[name],
                          tp.importance.BNScaleImportance(normalizer=None),
                          [s.name for sites in gates.values() for s in sites],
                          ratio=ratio, global_pruning=True)
    assert_same_selection(gates, masks, removed)
    macs, _ = assert_same_network(ours(model, masks), net, SHAPES[name])
    assert macs / controller.costs.dense_macs == pytest.approx(info["prune/usage"])


def test_residual_streams_are_coupled_as_our_stream_gates():
    """Torch-Pruning's dependency graph couples a stream channel across exactly the layers our
    stream gate names: every layer writing it (out) and every layer reading it (in)."""
    model, _ = trained("resnet20", seed=41)
    dense = export(model)
    names = {m: n for n, m in dense.named_modules()}
    graph = tp.DependencyGraph().build_dependency(
        dense, example_inputs=torch.zeros(1, *SHAPES["resnet20"]))
    sites = list(model.sites())
    for k in (1, 2, 3):
        gate = f"layer{k}.gate"
        writers = {s.name for s in sites if s.out_gate == gate}
        readers = {s.name for s in sites if s.in_gate == gate}
        first = dict(dense.named_modules())[sorted(writers)[0]]
        group = graph.get_pruning_group(first, tp.prune_conv_out_channels, idxs=[0])
        out = {names[d.target.module] for d, _ in group
               if isinstance(d.target.module, (nn.Conv2d, nn.Linear))
               and graph.is_out_channel_pruning_fn(d.handler)}
        into = {names[d.target.module] for d, _ in group
                if isinstance(d.target.module, (nn.Conv2d, nn.Linear))
                and graph.is_in_channel_pruning_fn(d.handler)}
        assert (out, into) == (writers, readers), gate


def test_kept_count_is_the_floor_of_the_reference_code():
    """A layer keeps int(n·(1 − r)) channels, at least one, as Torch-Pruning and the reference
    code of Li et al.'s criterion do (round-to-nearest used to keep 13 of 16 at r = 0.2)."""
    assert baselines.kept_channels(16, 0.2) == 12
    assert baselines.kept_channels(16, 0.3) == 11
    assert baselines.kept_channels(64, 0.45) == 35
    assert baselines.kept_channels(16, 0.99) == 1
    assert baselines.kept_channels(16, 0.0) == 16
