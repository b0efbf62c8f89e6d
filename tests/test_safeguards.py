"""A gate never disconnects the network; divergence stops with a clear message."""

from __future__ import annotations

import pytest
import torch

from reproduce.method.options import BudgetOptions, GateOptions
from reproduce.method import ChannelGate, GrowthController, export, sample_gates
from reproduce.models import create_model


@pytest.mark.parametrize("k", [1, 2, 3])
def test_hard_gate_keeps_the_top_logits_when_all_are_closed(k):
    n = int(torch.randint(4, 20, ()).item())
    gate = ChannelGate(n, min_active=k)
    with torch.no_grad():
        gate.logits.copy_(-torch.rand(n) - 0.01)          # every logit closed
    kept = set(gate.active_indices().tolist())
    assert kept == set(gate.logits.detach().topk(k).indices.tolist())
    gate.eval()
    assert gate.value().sum() == k
    # once enough logits are open the floor changes nothing
    with torch.no_grad():
        gate.logits.copy_(torch.randn(n))
        gate.logits[:k] = torch.rand(k) + 0.1
    assert torch.equal(gate.hard(), (gate.logits > 0).float())


def test_samples_keep_at_least_min_active():
    gates = [ChannelGate(int(torch.randint(2, 12, ()).item()), min_active=1) for _ in range(5)]
    for g in gates:
        with torch.no_grad():
            g.logits.fill_(-30.0)                         # p ~ 1e-13: q would be all zero
            g.logits[torch.randint(g.n, ())] = -20.0      # the one the floor must pick
    sample_gates(gates, torch.Generator().manual_seed(int(torch.randint(1000, ()))))
    for g in gates:
        assert g.sample.sum() == 1
        assert g.sample[g.logits.detach().argmax()] == 1


def test_min_channels_zero_still_allows_zero_width_and_floor_applies_to_export():
    for floor in (0, 1):
        model = create_model("resnet20", in_channels=1)
        grow = GrowthController(model, (1, 8, 8), epochs=2, gates=GateOptions(min_channels=floor))
        with torch.no_grad():
            for g in grow.gates:
                g.logits.uniform_(-1, 1)
            model.layer1.gate.logits.fill_(-1.0)          # the whole stage-1 stream closed
        compact = export(model)
        assert compact.conv1.out_channels == floor
        assert grow.costs.layer_ratios()["conv1"] == pytest.approx(floor / 16)
        x = torch.randn(3, 1, 8, 8)
        model.eval()
        assert torch.allclose(model(x), compact(x), atol=1e-5)


def test_non_finite_probabilities_stop_with_a_clear_message():
    gate = ChannelGate(8)
    with torch.no_grad():
        gate.logits[int(torch.randint(8, ()))] = float("nan")
    with pytest.raises(FloatingPointError, match="train.lr"):
        sample_gates([gate], torch.Generator().manual_seed(0))


def test_temperature_trace_and_metric_agree_and_end_at_beta_final(tiny):
    from reproduce.config import resolve
    from reproduce.runner import execute

    epochs = int(torch.randint(3, 6, ()).item())
    beta_final = float(torch.randint(20, 300, ()).item())
    cfg = resolve(tiny, {"train": {"epochs": epochs}, "temperature": {"beta_final": beta_final,
                                                                      "schedule": "global"}})
    seen = {}

    def on_epoch(step, stats, controller):
        state = controller.structure_state()
        seen[step] = (stats["temperature/conv1"], max(state["beta"]))

    execute(cfg, on_epoch=on_epoch, progress=False)
    assert sorted(seen) == list(range(epochs + 1))
    for step, (metric, trace) in seen.items():
        assert metric == pytest.approx(trace), step
    assert seen[epochs][0] == pytest.approx(beta_final)
    assert seen[0][0] == pytest.approx(cfg.temperature.beta_0)


def test_a_model_without_gates_reports_no_budget_pressure():
    model = create_model("vgg11", in_channels=1, gate_channels=False)
    grow = GrowthController(model, (1, 8, 8), epochs=2,
                            budget=BudgetOptions(lambda_base=float(torch.rand(()) + 0.1)))
    grow.after_step(8)
    stats = grow.end_epoch()
    assert stats["budget/lambda"] == 0.0 and stats["budget/usage"] == pytest.approx(1.0)
    assert float(grow.penalty()) == 0.0
