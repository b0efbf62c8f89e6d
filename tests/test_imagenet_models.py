"""ResNet-50 and MobileNetV1: dense counts against torchvision / the MobileNet paper and PyTorch's
FLOP counter, and their gates (costs and export of random hard architectures, as for every
model: test_costs_export.py)."""

from __future__ import annotations

import pytest
import torch

from reproduce.method import CostModel
from reproduce.method.gates import ChannelGate, gates_of
from reproduce.models import create_model, default_cfg

from .model_checks import measured_macs, weight_params

pytestmark = pytest.mark.usefixtures("fresh_seed", "one_thread")


def test_resnet50_is_torchvisions():
    """Same parameters, same state-dict keys, same outputs, same MACs as torchvision's."""
    torchvision = pytest.importorskip("torchvision")
    reference = torchvision.models.resnet50().eval()
    model = create_model("resnet50", gate_channels=False).eval()
    assert sum(p.numel() for p in model.parameters()) == \
        sum(p.numel() for p in reference.parameters()) == 25_557_032
    model.load_state_dict(reference.state_dict(), strict=True)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x))
    shape = default_cfg("resnet50").input_size
    costs = CostModel(model, shape)
    assert costs.dense_macs == measured_macs(reference, shape) == 4_089_184_256   # 4.09 G
    assert costs.dense_params == weight_params(model)


def test_mobilenet_v1_has_the_papers_counts():
    """Howard et al. 2017, Table 1/8: 569 M mult-adds and 4.2 M parameters at 224 px, α = 1."""
    model = create_model("mobilenet_v1", gate_channels=False)
    shape = default_cfg("mobilenet_v1").input_size
    assert shape == (3, 224, 224) and default_cfg("mobilenet_v1").num_classes == 1000
    costs = CostModel(model, shape)
    assert costs.dense_macs == measured_macs(model, shape)
    assert costs.dense_params == weight_params(model)
    assert round(costs.dense_macs / 1e6) == 569
    assert round(costs.dense_params / 1e6, 1) == 4.2


@pytest.mark.parametrize("alpha", [0.25, 0.5, 0.75])
def test_mobilenet_width_multiplier_costs(alpha):
    """Smaller α: the flop counter agrees, and MACs shrink roughly as α² (paper: 41/149/325 M)."""
    model = create_model("mobilenet_v1", gate_channels=False, width_multiplier=alpha)
    costs = CostModel(model, (3, 224, 224))
    assert costs.dense_macs == measured_macs(model, (3, 224, 224))
    paper = {0.25: 41, 0.5: 149, 0.75: 325}[alpha]
    assert abs(costs.dense_macs / 1e6 - paper) / paper < 0.03


def test_resnet50_gates():
    model = create_model("resnet50", width_multiplier=0.25, gate_blocks=True)
    named = dict(gates_of(model))
    channel = [n for n, g in named.items() if isinstance(g, ChannelGate)]
    # the stem, one stream per stage, two inner gates per block
    assert len(channel) == 1 + 4 + 2 * 16
    assert len(model.removable_blocks()) == 16 - 4


def test_mobilenet_has_no_removable_blocks():
    with pytest.raises(ValueError, match="no removable blocks"):
        create_model("mobilenet_v1", gate_blocks=True)
    model = create_model("mobilenet_v1", width_multiplier=0.25)
    assert len(model.blocks()) == 13 and not model.removable_blocks()
    assert sorted({b.stage for b in model.blocks()}) == [1, 2, 3, 4, 5]


def test_zero_init_residual_is_torchvisions():
    """model.zero_init_residual zeroes the same BN weights torchvision's option does (every
    bottleneck's bn3), so each block starts as the identity; off by default."""
    torchvision = pytest.importorskip("torchvision")
    model = create_model("resnet50", gate_channels=False, zero_init_residual=True)
    reference = torchvision.models.resnet50(zero_init_residual=True)
    zeroed = {k for k, v in model.state_dict().items() if k.endswith(".weight") and not v.any()}
    assert zeroed == {k for k, v in reference.state_dict().items()
                      if k.endswith(".weight") and not v.any()}
    assert len(zeroed) == 16 and all(k.endswith("bn3.weight") for k in zeroed)
    assert all(v.any() for k, v in create_model("resnet50", gate_channels=False)
               .state_dict().items() if k.endswith(".weight"))


def test_head_lr_scale_scales_only_the_classifier():
    """train.head_lr_scale gives the classifier (the head site) its own learning rate; every other
    weight keeps train.lr, and at 1 the optimizer has one group, as before the option existed."""
    from reproduce.config import TrainConfig
    from reproduce.method import GrowthController
    from reproduce.train import Phase, TrainState, head_parameters, start_phase
    model = create_model("mobilenet_v1", num_classes=10, gate_channels=False)
    state = TrainState(model, GrowthController(model, (3, 32, 32), epochs=1))
    start_phase(state, Phase(TrainConfig(lr=0.02, head_lr_scale=0.05)))
    body, head = state.opt_weights.param_groups
    assert {id(p) for p in head["params"]} == {id(p) for p in head_parameters(model)} \
        == {id(model.fc.weight), id(model.fc.bias)}
    assert head["lr_scale"] == 0.05 and "lr_scale" not in body
    assert len(body["params"]) + 2 == len(list(model.parameters()))
    start_phase(state, Phase(TrainConfig(lr=0.02)))
    assert len(state.opt_weights.param_groups) == 1
