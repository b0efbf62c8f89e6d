"""The declared model interface and the registry."""

import pytest
import torch

from reproduce.method import GatedModel
from reproduce.method.structure import ROLES
from reproduce.models import available_models, create_model, default_cfg, model_exists
from reproduce.models.registry import model_class, register_model


@pytest.mark.parametrize("name", ["resnet20", "resnet56", "vgg16", "basic3resnet-2-4-3",
                                  "plain3net-2-4-3"])
def test_registry_builds_every_model_with_its_defaults(name):
    cfg = default_cfg(name)
    model = create_model(name, width_multiplier=0.25)
    assert isinstance(model, GatedModel)
    out = model.eval()(torch.randn(2, *cfg.input_size))
    assert out.shape == (2, cfg.num_classes)
    assert model_class(type(model).__name__) is type(model)


@pytest.mark.parametrize("name", ["resnet20", "vgg11", "basic3resnet-1-2-1",
                                  "plain3net-1-2-1"])
def test_every_layer_declares_its_stage_and_role(name):
    model = create_model(name, in_channels=1, gate_blocks=True)
    info = model.layer_info()
    assert list(info) == [s.name for s in model.sites()]
    assert {v["role"] for v in info.values()} <= set(ROLES)
    stages = [v["stage"] for v in info.values()]
    assert stages == sorted(stages) and min(stages) == 1
    assert list(info.values())[-1]["role"] == "head"
    removable = model.removable_blocks()
    assert all(b.gate is not None for b in removable)
    assert {b.name for b in removable} <= {b.name for b in model.blocks()}


def test_unknown_model_and_double_registration_fail_clearly():
    with pytest.raises(KeyError, match="unknown model 'resnet21'.*resnet20"):
        create_model("resnet21")
    assert not model_exists("basic3resnet-0-1-1") and model_exists("basic3resnet-1-1-1")
    assert "basic3resnet-A-B-C" in available_models()
    with pytest.raises(ValueError, match="registered twice"):
        register_model("resnet20")(lambda **kw: None)
