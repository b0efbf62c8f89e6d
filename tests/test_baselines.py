"""Pruning baselines: which channels go, how the MACs target is hit, and fixed masks in fine-tuning."""

from __future__ import annotations

import copy

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from reproduce import baselines
from reproduce.config import ConfigError, resolve
from reproduce.method.options import BudgetOptions, GateOptions
from reproduce.method import CostModel, GrowthController, export
from reproduce.models import create_model
from reproduce.runner import execute
from reproduce.tasks import task_for
from reproduce.train import Phase, build, run_epochs

SHAPE = (1, 8, 8)


def gated(name: str = "resnet20", seed: int = 0):
    """A gated model with every gate open and hard (fixed-mask) sampling, random weights."""
    torch.manual_seed(seed)
    model = create_model(name, num_classes=4, in_channels=1)
    controller = GrowthController(
        model, SHAPE, epochs=2, budget=BudgetOptions(lambda_base=0.0),
        gates=GateOptions(sampling="hard", seed_fraction=1.0, seed_blocks="all", s_on=1.0))
    with torch.no_grad():                      # BN scales away from 1 so |γ| ranks something
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(-1, 1)
    return model, controller


def test_scope_inner_is_block_inner_gates_and_all_adds_streams():
    model, _ = gated("resnet20")
    inner = baselines.prunable_gates(model, "auto")
    assert set(inner) == {f"layer{k}.{j}.gate1" for k in (1, 2, 3) for j in range(3)}
    assert set(baselines.prunable_gates(model, "all")) == set(inner) | {"layer1.gate", "layer2.gate",
                                                                         "layer3.gate"}
    vgg, _ = gated("vgg11")
    assert set(baselines.prunable_gates(vgg, "auto")) == {f"gate{i}" for i in range(1, 9)}


def test_l1_norm_removes_exactly_the_smallest_norm_filters():
    model, _ = gated("resnet20", seed=3)
    gates = baselines.prunable_gates(model, "inner")
    scores = baselines.l1_scores(model, gates)
    conv = dict(model.named_modules())["layer2.1.conv1"]
    norms = conv.weight.detach().abs().sum(dim=(1, 2, 3))
    assert torch.allclose(scores["layer2.1.gate1"], norms)
    masks = baselines.ratio_masks(scores, 0.25)
    keep = masks["layer2.1.gate1"]
    assert int((~keep).sum()) == 8                                   # 25 % of 32 filters
    assert set(torch.nonzero(~keep).flatten().tolist()) == set(norms.argsort()[:8].tolist())
    assert norms[~keep].max() < norms[keep].min()
    for gate, mask in baselines.ratio_masks(scores, 0.999).items():   # never below one channel
        assert int(mask.sum()) == 1 and bool(mask[scores[gate].argmax()])


@pytest.mark.parametrize("name,criterion,target", [("resnet20", "l1_norm", 0.5),
                                                    ("resnet20", "slimming", 0.3),
                                                    ("vgg11", "l1_norm", 0.3),
                                                    ("vgg11", "slimming", 0.5)])
def test_bisection_hits_target_and_counter_matches_export(name, criterion, target):
    model, controller = gated(name, seed=1)
    gates = baselines.prunable_gates(model, "auto")
    masks, info = baselines.choose_masks(model, controller.costs, gates, criterion, target)
    baselines.apply_masks(model, masks)
    macs, params = controller.costs.hard()
    usage = macs / controller.costs.dense_macs
    assert abs(usage - target) < 0.03
    assert info["prune/usage"] == pytest.approx(usage)
    for gate, keep in masks.items():                                  # logits are exactly ±1
        logits = dict(model.named_modules())[gate].logits.detach()
        assert torch.equal(logits, torch.where(keep, 1.0, -1.0))
    compact = export(model)
    counted = CostModel(compact, SHAPE)                               # the exported net's own count
    assert counted.dense_macs == pytest.approx(macs)
    assert counted.dense_params == pytest.approx(params)
    with FlopCounterMode(display=False) as fc:                        # and torch's FLOP counter
        compact(torch.zeros(1, *SHAPE))
    assert fc.get_total_flops() / 2 == pytest.approx(macs)
    model.eval()
    x = torch.randn(5, *SHAPE)
    assert torch.allclose(model(x), compact(x), atol=1e-5)


def test_slimming_threshold_removes_smallest_gamma_and_keeps_one_per_layer():
    model, controller = gated("vgg11", seed=2)
    gates = baselines.prunable_gates(model, "all")
    scores = baselines.slimming_scores(model, gates)
    bn = dict(model.named_modules())["bn3"]
    assert torch.allclose(scores["gate3"], bn.weight.detach().abs())
    threshold, masks = baselines.bisect_threshold(controller.costs, scores, 0.4)
    assert (~torch.cat(list(masks.values()))).any()
    for gate, keep in masks.items():
        s = scores[gate]
        largest = torch.zeros_like(keep)
        largest[s.argmax()] = True
        assert keep[largest].all()                                    # >= 1 channel per layer
        assert (s[~keep] <= threshold).all()                          # one global threshold:
        assert (s[keep & ~largest] > threshold).all()                 # the smallest |γ| go
    # a threshold above every |γ| still leaves each layer its largest channel
    cands = baselines.global_candidates(scores)
    everything = baselines.threshold_masks(scores, cands, len(cands))
    for gate, keep in everything.items():
        assert int(keep.sum()) == 1 and bool(keep[scores[gate].argmax()])


def test_slimming_l1_gradient_is_sign_gamma_times_lambda():
    model, _ = gated("resnet20")
    gates = baselines.prunable_gates(model, "inner")
    scales = baselines.bn_scales(model, gates)
    with torch.no_grad():
        scales[0][0] = 0.0                                            # sign(0) = 0
    penalty = baselines.slimming_regularizer(model, gates, 1e-3)()
    penalty.backward()
    for g in scales:
        assert torch.allclose(g.grad, 1e-3 * torch.sign(g.detach()))


def test_hard_masks_stay_closed_and_output_zero_while_finetuning(tiny):
    from reproduce.data import build_data

    cfg = resolve(tiny, {"method": "prune", "model": {"name": "basic3resnet-2-2-2"},
                         "baseline": {"pretrain_epochs": 0, "finetune_epochs": 1}})
    inner = baselines.internal_config(cfg)
    data = build_data(cfg.data, torch.device("cpu"), seed=0)
    state = build(inner, data, torch.device("cpu"))
    model, controller = state.model, state.controller
    gates = baselines.prunable_gates(model, "auto")
    masks, _ = baselines.choose_masks(model, controller.costs, gates, "l1_norm", 0.5)
    baselines.apply_masks(model, masks)
    before = {n: g.logits.detach().clone() for n, g in controller.named_gates}
    run_epochs(state, Phase(baselines.phase_schedule(inner, 1, 0.05)), data, task_for(cfg, data),
               torch.device("cpu"), progress=False)
    for n, g in controller.named_gates:
        assert torch.equal(g.logits.detach(), before[n])
    seen = {}
    gate = dict(model.named_modules())["layer1.0.gate1"]
    handle = gate.register_forward_hook(lambda m, i, o: seen.setdefault("out", o.detach()))
    model.train()                                                     # training mode, hard gates
    controller.sample()
    model(next(iter(data.train))[0])
    handle.remove()
    closed = ~masks["layer1.0.gate1"]
    assert closed.any()
    assert torch.count_nonzero(seen["out"][:, closed]) == 0
    assert torch.count_nonzero(seen["out"][:, ~closed]) > 0


def test_baseline_run_reports_phases_and_counts_pretraining(tiny):
    steps = []
    cfg = resolve(tiny, {"method": "prune", "model": {"name": "resnet20"},
                         "baseline": {"criterion": "slimming", "pretrain_epochs": 2,
                                      "finetune_epochs": 1, "prune_target": 0.4}})
    result = execute(cfg, on_epoch=lambda s, st, c: steps.append((s, dict(st))), progress=False)
    assert [s for s, _ in steps] == [0, 1, 2, 3]
    assert [st["phase"] for _, st in steps] == [0, 0, 0, 1]
    pre, post = steps[2][1], steps[3][1]
    assert pre["cost/macs"] == pre["cost/dense_macs"]                  # dense while pre-training
    assert post["cost/macs"] / post["cost/dense_macs"] == pytest.approx(0.4, abs=0.03)
    epoch_dense = steps[1][1]["cost/train_macs_total"]
    assert post["cost/train_macs"] == pytest.approx(epoch_dense * post["cost/macs"] / pre["cost/macs"])
    assert post["cost/train_macs_total"] == pytest.approx(2 * epoch_dense + post["cost/train_macs"])
    assert "prune/val_acc_before_finetune" in post and "val/acc" in post
    assert len(result.history) == 3 and result.epoch == 3 and result.phase == 1


def test_baseline_config_ranges():
    with pytest.raises(ConfigError, match="finetune_epochs"):
        resolve({"method": "prune", "baseline": {"finetune_epochs": 0}})
    with pytest.raises(ConfigError, match="pretrain_epochs"):
        resolve({"baseline": {"pretrain_epochs": -1}})
    with pytest.raises(ConfigError, match="criterion"):
        resolve({"baseline": {"criterion": "random"}})


class MemoryPretraining:
    """The trainer's `shared` store, in memory: what the runner's SharedPretraining does on disk."""

    def __init__(self):
        self.state, self.saves, self.loads = None, 0, 0

    def load(self):
        if self.state is None:
            return None
        self.loads += 1
        return copy.deepcopy(self.state)

    def save(self, state):
        self.state, self.saves = copy.deepcopy(state), self.saves + 1


def _timeless(stats: dict) -> dict:
    return {k: v for k, v in stats.items() if not k.startswith("time/")}


@pytest.mark.parametrize("criterion", ["l1_norm", "slimming"])
def test_shared_pretraining_gives_exactly_the_numbers_of_pretraining_alone(tiny, criterion,
                                                                         fresh_seed):
    base = {"method": "prune", "seed": fresh_seed % 1000, "model": {"name": "resnet20"},
            "baseline": {"criterion": criterion, "pretrain_epochs": 2, "finetune_epochs": 1}}
    first = resolve(tiny, base, {"variant": "l1-60", "baseline": {"prune_target": 0.6}})
    second = resolve(tiny, base, {"variant": "l1-30", "baseline": {"prune_target": 0.3}})
    assert baselines.pretraining_key(first) == baselines.pretraining_key(second)
    for other in ({"seed": fresh_seed % 1000 + 1}, {"baseline": {"pretrain_epochs": 3}},
                  {"baseline": {"criterion": "slimming" if criterion == "l1_norm" else "l1_norm"}}):
        assert baselines.pretraining_key(resolve(tiny, base, other)) != \
            baselines.pretraining_key(first), other

    shared = MemoryPretraining()
    execute(first, progress=False, shared=shared)
    assert shared.saves == 1 and shared.state["epoch"] == 2 and shared.state["phase"] == 0

    loaded_steps, alone_steps = [], []
    loaded = execute(second, progress=False, shared=shared,
                     on_epoch=lambda s, st, c: loaded_steps.append((s, _timeless(st))))
    alone = execute(second, progress=False,
                    on_epoch=lambda s, st, c: alone_steps.append((s, _timeless(st))))
    assert shared.loads == 1 and shared.saves == 1           # loaded, not pre-trained again
    assert [s for s, _ in loaded_steps] == [0, 1, 2, 3]       # pre-training reported as its own
    assert loaded_steps == alone_steps                        # every number of every step
    assert loaded_steps[-1][1]["cost/macs"] < loaded_steps[2][1]["cost/macs"]   # it did prune
    for (k, a), b in zip(loaded.model.state_dict().items(), alone.model.state_dict().values()):
        assert torch.equal(a, b), k
