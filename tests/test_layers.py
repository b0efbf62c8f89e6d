"""Layer growing: closed blocks, depth counting and export of Basic3ResNet and Plain3Net, the seed
depth, the AutoGrow-style baseline's growth rule, and tracked smoke-size runs (Figure 5, the
AutoGrow table)."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from reproduce import autogrow, contract, tracking, train
from reproduce.config import resolve
from reproduce.method import (CostModel, GrowthController, architecture_summary, export,
                              hard_architecture)
from reproduce.method.gates import BlockGate, PassThroughGate, gates_of
from reproduce.method.options import GateOptions, OptionError, seed_blocks_per_stage
from reproduce.models import create_model
from reproduce.runner import execute

from .model_checks import DEPTH_FAMILIES


def gated(family: str, depths=(6, 6, 6), channels: bool = False, shape=(1, 8, 8)):
    model = create_model(f"{family}-{'-'.join(map(str, depths))}", in_channels=shape[0],
                         num_classes=5, gate_channels=channels, gate_blocks=True)
    with torch.no_grad():                          # BN statistics that are not the identity
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.bias.normal_(0, 0.5)
    return model


def set_depths(model, depths) -> None:
    """Keep the first depths[k] blocks of stage k+1 open, close the rest."""
    named = dict(gates_of(model))
    position: dict[int, int] = {}
    with torch.no_grad():
        for block in model.blocks():
            position[block.stage] = position.get(block.stage, 0) + 1
            if block.gate is not None:
                on = position[block.stage] <= depths[block.stage - 1]
                named[block.gate].logits.fill_(1.0 if on else -1.0)


# -- a closed block is the identity ---------------------------------------------------------------

@pytest.mark.parametrize("family", DEPTH_FAMILIES)
@pytest.mark.usefixtures("fresh_seed")
def test_a_closed_block_is_exactly_the_identity(family):
    model = gated(family, channels=True)
    block = model.layer2[1] if hasattr(model.layer2, "__getitem__") else getattr(model.layer2, "1")
    gate = block.block_gate
    assert isinstance(gate, PassThroughGate if family == "plain3net" else BlockGate)
    x = F.relu(torch.randn(4, 32, 4, 4))           # a block's input follows a ReLU
    with torch.no_grad():
        model.layer2.gate.logits.fill_(1.0)        # every channel of the stage on
        model.layer2.gate.sample.fill_(1.0)
        gate.logits.fill_(-0.5)
        model.eval()                               # hard gate: 1[s > 0] = 0
        assert torch.equal(block(x, model.layer2.gate), x)
        model.train()                              # sampled q = 0 gives g = q·p = 0 as well
        gate.sample.fill_(0.0)
        assert torch.equal(block(x, model.layer2.gate), x)
        gate.logits.fill_(0.5)                     # an open block is not the identity
        model.eval()
        assert not torch.equal(block(x, model.layer2.gate), x)


@pytest.mark.parametrize("family", DEPTH_FAMILIES)
@pytest.mark.usefixtures("fresh_seed")
def test_an_open_plain_sub_module_is_exactly_its_function_and_mixes_in_between(family):
    gate = PassThroughGate(sampling="deterministic")
    fx, x = torch.randn(3, 4), torch.randn(3, 4)
    with torch.no_grad():
        gate.logits.fill_(50.0)
        gate.eval()
        assert torch.equal(gate(fx, x), fx)
        gate.train()
        gate.logits.fill_(0.0)                     # p = 0.5
        torch.testing.assert_close(gate(fx, x), 0.5 * fx + 0.5 * x)


# -- depth counting, costs and export with removed blocks -------------------------------------------

@pytest.mark.parametrize("family", DEPTH_FAMILIES)
@pytest.mark.parametrize("channels", [False, True])
@pytest.mark.usefixtures("fresh_seed")
@pytest.mark.filterwarnings("ignore:Initializing zero-element tensors")
def test_a_network_found_as_2_4_3_exports_as_a_real_2_4_3_network(family, channels):
    shape = (1, 8, 8)
    model = gated(family, (6, 6, 6), channels, shape)
    set_depths(model, (2, 4, 3))
    costs = CostModel(model, shape)
    stats = costs.stage_summary()
    assert [stats[f"blocks/stage{k}"] for k in (1, 2, 3)] == [2, 4, 3]
    summary = architecture_summary(model)
    assert summary["depths"] == {"stage1": 2, "stage2": 4, "stage3": 3}
    assert len(summary["removed_blocks"]) == 18 - 9
    compact = export(model)
    assert [sum(b.stage == k for b in compact.blocks()) for k in (1, 2, 3)] == [2, 4, 3]
    # the same state loads into a freshly built <family>-2-4-3: it is that network
    sizes = {n: len(i) for n, i in hard_architecture(model)[0].items()}
    real = type(compact)(**{**compact.arch, "depths": (2, 4, 3)}, gate_channels=False,
                         gate_blocks=False, sizes=sizes)
    real.load_state_dict(compact.state_dict(), strict=True)
    real.eval()
    model.eval()
    x = torch.randn(6, *shape)
    with torch.no_grad():
        ref = model(x)
        torch.testing.assert_close(compact(x), ref, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(real(x), ref, atol=1e-5, rtol=1e-5)
    # its costs are the hard costs of the gated network, and a dense 2-4-3's when all channels on
    assert (CostModel(real, shape).dense_macs, CostModel(real, shape).dense_params) == costs.hard()
    if not channels:
        dense = create_model(f"{family}-2-4-3", in_channels=1, num_classes=5, gate_channels=False)
        assert CostModel(dense, shape).dense_macs == costs.hard()[0]


# -- the seed depth --------------------------------------------------------------------------------

@pytest.mark.parametrize("family", DEPTH_FAMILIES)
@pytest.mark.parametrize("seed_blocks,expected", [("one_per_stage", [1, 1, 1]),
                                                  ("2_per_stage", [2, 2, 2]),
                                                  ("5_per_stage", [4, 4, 4]),
                                                  ("all", [4, 4, 4])])
def test_the_seed_starts_at_n_blocks_per_stage(family, seed_blocks, expected):
    model = gated(family, (4, 4, 4))
    ctrl = GrowthController(model, (1, 8, 8), epochs=2, gates=GateOptions(seed_blocks=seed_blocks))
    stats = ctrl.architecture_stats()
    assert [stats[f"blocks/stage{k}"] for k in (1, 2, 3)] == expected
    if seed_blocks == "2_per_stage":              # the first blocks of each stage, in order
        assert architecture_summary(model)["removed_blocks"] == sorted(
            f"layer{k}.{j}" for k in (1, 2, 3) for j in (2, 3))


def test_seed_blocks_vocabulary():
    assert seed_blocks_per_stage("one_per_stage") == 1 and seed_blocks_per_stage("all") is None
    assert seed_blocks_per_stage("3_per_stage") == 3
    for bad in ("0_per_stage", "two_per_stage", "3", "some"):
        with pytest.raises(OptionError, match="gates.seed_blocks"):
            GateOptions(seed_blocks=bad)


# -- the AutoGrow-style baseline ---------------------------------------------------------------------

def test_growth_policy_stops_after_patience_intervals_without_improvement():
    policy = autogrow.GrowthPolicy(patience=2, min_delta=0.5)
    decisions = [policy.observe(a) for a in (50, 60, 60.3, 61, 60, 59, 70)]
    # 60.3 is no gain of 0.5 (strike 1), 61 is (reset), 60 and 59 strike twice: stop for good
    assert decisions == [True, True, True, True, True, False, False]
    assert policy.stopped and policy.best == 61


def test_grow_step_opens_the_next_block_of_every_stage_until_the_maximum():
    model = gated("plain3net", (2, 3, 1))
    GrowthController(model, (1, 8, 8), epochs=1, gates=GateOptions(
        sampling="hard", s_on=1.0, s_off=-1.0))
    assert autogrow.grow_step(model) == ["layer1.1", "layer2.1"]   # stage 3 is at its maximum
    assert autogrow.grow_step(model) == ["layer2.2"]
    assert autogrow.grow_step(model) == []
    assert architecture_summary(model)["depths"] == {"stage1": 2, "stage2": 3, "stage3": 1}


def _scripted_accuracy(monkeypatch, values):
    calls = iter(values)

    def evaluate(model, batches, task, amp=False):
        return {contract.VAL_ACC: float(next(calls)), contract.VAL_LOSS: 1.0}
    monkeypatch.setattr(train, "evaluate", evaluate)


def _autogrow_run(tiny, model, epochs, interval=1, patience=1):
    cfg = resolve(tiny, {"method": "autogrow", "model": {"name": model},
                         "train": {"epochs": epochs},
                         "autogrow": {"interval": interval, "patience": patience,
                                      "min_delta": 0.05}})
    steps = []
    state = execute(cfg, on_epoch=lambda step, stats, ctrl: steps.append((step, stats)),
                    progress=False)
    return state, steps


@pytest.mark.parametrize("family", DEPTH_FAMILIES)
def test_autogrow_adds_blocks_and_stops_by_its_rule(tiny, monkeypatch, family):
    # intervals of one epoch: 50, 60, 70 improve (grow after each), 70 does not: stop at 4-4-4
    _scripted_accuracy(monkeypatch, [50, 60, 70, 70, 10, 10])
    state, steps = _autogrow_run(tiny, f"{family}-6-6-6", epochs=2)
    depth = [[s[f"blocks/stage{k}"] for k in (1, 2, 3)] for _, s in steps]
    assert [d[0] for d in depth] == [1, 1, 2, 3, 4, 4, 4]    # step 0 = seed, then each epoch
    assert all(d == [d[0]] * 3 for d in depth)                # one block to every stage per step
    assert [s[contract.PHASE] for _, s in steps] == [0, 0, 0, 0, 0, 1, 1]
    assert [s[contract.GROWTH_STEP] for _, s in steps] == [0, 0, 1, 2, 3, 3, 3]
    assert architecture_summary(state.model)["depths"] == {f"stage{k}": 4 for k in (1, 2, 3)}
    # the training cost counts what trained: 3 × the epoch's architecture's MACs per sample
    per_sample = [s[contract.TRAIN_MACS] / s[contract.MACS] for _, s in steps[1:]]
    assert max(per_sample) == pytest.approx(min(per_sample))
    macs = [s[contract.MACS] for _, s in steps]
    assert macs[1] < macs[2] < macs[3] < macs[4] == macs[-1] < steps[0][1][contract.DENSE_MACS]
    assert steps[-1][1][contract.TRAIN_MACS_TOTAL] == pytest.approx(
        sum(s[contract.TRAIN_MACS] for _, s in steps[1:]))


def test_autogrow_stops_at_the_maximum_depth(tiny, monkeypatch):
    _scripted_accuracy(monkeypatch, [50, 60, 70, 80, 90])    # always improving
    state, steps = _autogrow_run(tiny, "basic3resnet-2-3-2", epochs=1, interval=2)
    depth = [tuple(s[f"blocks/stage{k}"] for k in (1, 2, 3)) for _, s in steps]
    assert depth == [(1, 1, 1), (1, 1, 1), (1, 1, 1), (2, 2, 2), (2, 2, 2), (2, 3, 2)]
    assert steps[-1][1][contract.PHASE] == 1


def test_autogrow_needs_removable_blocks(tiny):
    from reproduce.config import ConfigError
    with pytest.raises(ConfigError, match="no removable blocks"):
        execute(resolve(tiny, {"method": "autogrow", "model": {"name": "vgg11"}}), progress=False)


def test_autogrow_options_are_checked_and_hashed_only_for_autogrow_runs():
    from reproduce.config import ConfigError, config_hash
    with pytest.raises(ConfigError, match="autogrow.interval"):
        resolve({"autogrow": {"interval": 0}})
    grow, other = resolve({}), resolve({"autogrow": {"patience": 7}})
    assert config_hash(grow) == config_hash(other)           # a grow run does not read them
    a, b = (resolve({"method": "autogrow", "autogrow": {"patience": p}}) for p in (1, 7))
    assert config_hash(a) != config_hash(b)


# -- tracked smoke-size runs -------------------------------------------------------------------------

@pytest.mark.slow
def test_layer_growing_run_is_tracked_and_figure_5_drawn():
    from reproduce.pipeline import make
    # the smoke profile itself (digits, 30 epochs; minutes): on the tiny synthetic data joint
    # growing froze its channels at 0.44-0.45 of the 0.5 budget (10 and 20 epochs)
    epochs = 30
    paths = make("figure-5", profile="smoke", progress=False)
    assert {p.suffix for p in paths} >= {".png", ".pdf"}
    c = tracking.client()
    exp = tracking.experiment_id(c, "smoke", create=False)
    runs = c.search_runs([exp])
    assert {r.data.tags["variant"] for r in runs} == {"grow-layers", "grow-joint"}
    for run in runs:
        depth = {k: [m.value for m in sorted(c.get_metric_history(run.info.run_id,
                                                                  contract.stage_blocks(k)),
                                              key=lambda m: m.step)] for k in (1, 2, 3)}
        assert all(len(v) == epochs + 1 for v in depth.values())   # step 0 (seed), every epoch
        assert [depth[k][0] for k in (1, 2, 3)] == [1, 1, 1]  # starts at one block per stage
        total = [sum(depth[k][e] for k in (1, 2, 3)) for e in range(epochs + 1)]
        # layers grow: deeper than the seed by the end, and the first epoch does not open every
        # block (before, joint growing opened all 15 gated blocks in epoch 1: 3 -> 18)
        assert total[-1] > total[0] and total[1] < 18, total
        macs = {m.step: m.value for m in c.get_metric_history(run.info.run_id, contract.MACS)}
        dense = contract.final_metrics(run.data.metrics, run.data.params)[contract.DENSE_MACS]
        target = float(run.data.params["budget.target"])
        assert abs(macs[epochs] / dense - target) <= 0.03 * target, (
            run.data.tags["variant"], macs[epochs] / dense, total)
        arch = json.loads(open(c.download_artifacts(run.info.run_id,
                                                    contract.ARTIFACT_ARCH)).read())
        assert arch["depths"] == {f"stage{k}": int(depth[k][-1]) for k in (1, 2, 3)}
        assert run.data.metrics[contract.MACS] == pytest.approx(arch["macs"])


@pytest.mark.slow
def test_table_autogrow_end_to_end(tiny, tmp_path):
    from reproduce.pipeline import make
    paths = make("table-autogrow", profile="smoke", overrides=tiny, progress=False)
    csv = pd.read_csv(next(p for p in paths if p.suffix == ".csv"), keep_default_na=False)
    measured = csv[csv["kind"] != "published"]
    assert sorted(measured["kind"].value_counts().items()) == [
        ("autogrow", 2), ("grow-joint", 2), ("grow-layers", 2), ("scratch", 2)]
    published = csv[csv["kind"] == "published"]
    assert "42-42-42" in set(published["depth"]) and set(published["family"]) == {"basic3resnet"}
    c = tracking.client()
    for row in measured.itertuples():
        run = c.get_run(row.run_ids)
        m = contract.final_metrics(run.data.metrics, run.data.params)
        assert row.depth == "-".join(str(int(m[contract.stage_blocks(k)])) for k in (1, 2, 3))
        assert float(row.top1_mean) == pytest.approx(m[contract.VAL_ACC])
        assert float(row.train_macs_total_mean) == pytest.approx(m[contract.TRAIN_MACS_TOTAL])
    md = next(p for p in paths if p.suffix == ".md").read_text()
    assert "AutoGrow periodic, published" in md and "Plain3Net" in md
