"""The declared model interface and the registry, for every registered model."""

import pytest
import torch

from reproduce import contract
from reproduce.method import GatedModel
from reproduce.method.structure import ROLES
from reproduce.models import available_models, builds, create_model, default_cfg, model_exists
from reproduce.models.registry import model_class, register_model, register_pattern
from reproduce.models.resnet_cifar import ResNetCIFAR

from .model_checks import EVERY_MODEL, build, model_input

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("name", EVERY_MODEL)
def test_registry_builds_every_model_with_its_defaults(name):
    cfg = default_cfg(name)
    model = create_model(name, width_multiplier=0.25)
    assert isinstance(model, GatedModel)
    assert type(model) is builds(name) is model_class(type(model).__name__)
    x = model_input(model, (cfg.input_size[0], cfg.min_size, cfg.min_size), batch=2)
    out = model.eval()(x)
    if x.is_floating_point():      # images: (N, classes), or per pixel (N, classes, H, W)
        assert out.shape[:2] == (2, cfg.num_classes) and out.shape[2:] in ((), x.shape[2:])
    else:                          # tokens (N, T): next-token logits (N, T, vocabulary)
        assert out.shape == (*x.shape, cfg.num_classes)


@pytest.mark.parametrize("name", EVERY_MODEL)
def test_every_layer_declares_its_stage_and_role(name):
    model = build(name, in_channels=1, num_classes=5, width_multiplier=0.25, gate_blocks=True)
    info = model.layer_info()
    assert list(info) == [s.name for s in model.sites()]
    assert {v["role"] for v in info.values()} <= set(ROLES)
    stages = [v["stage"] for v in info.values()]
    assert stages == sorted(stages) and min(stages) == 1
    assert list(info.values())[-1]["role"] == "head"
    removable = model.removable_blocks()
    assert all(b.gate is not None for b in removable)
    assert {b.name for b in removable} <= {b.name for b in model.blocks()}


def test_the_tracking_contract_names_the_methods_roles():
    declared = {v for k, v in vars(contract).items() if k.startswith("ROLE_")}
    assert declared == set(ROLES)


def test_unknown_model_and_double_registration_fail_clearly():
    with pytest.raises(KeyError, match="unknown model 'resnet21'.*resnet20"):
        create_model("resnet21")
    assert not model_exists("basic3resnet-0-1-1") and model_exists("basic3resnet-1-1-1")
    assert "basic3resnet-A-B-C" in available_models()
    with pytest.raises(ValueError, match="registered twice"):
        register_model("resnet20")(lambda **kw: None)


def test_a_builder_must_say_which_class_it_builds():
    """The class is what a compact checkpoint is rebuilt from: a builder without a return
    annotation (or not returning a GatedModel) is refused, and registers nothing."""
    with pytest.raises(TypeError, match="annotate its return type"):
        register_model("unannotated-net")(lambda **kw: None)

    def not_a_model(**kwargs) -> torch.nn.Linear:
        return torch.nn.Linear(1, 1)

    with pytest.raises(TypeError, match="GatedModel"):
        register_model("linear-net")(not_a_model)

    def wide(*depths: str, **kwargs) -> ResNetCIFAR:
        return ResNetCIFAR(depths=tuple(map(int, depths)), **kwargs)

    with pytest.raises(ValueError, match="does not match"):
        register_pattern("wide-A-B-C", r"wide-(\d+)-(\d+)-(\d+)$", example="wide-2-2")(wide)
    assert not any(map(model_exists, ("unannotated-net", "linear-net", "wide-2-2-2")))
