"""Every model is built by name: `create_model("resnet20", num_classes=10, in_channels=3)`.

Experiment files say `model: {name: resnet20}` and nothing more. Each family registers its
constructors next to its definition (registry.py explains the decorators); importing this
package registers them all. Basic3ResNet takes any depth per stage in its name, e.g.
`basic3resnet-2-4-3` (AutoGrow's notation; ResNet-20 = basic3resnet-3-3-3), and so does its
shortcut-free counterpart, e.g. `plain3net-2-4-3`. For layer growing the name gives the maximum
depth per stage and `model.gate_blocks: true` gates every block but the first of each stage.
"""

from . import (lstm_lm, mobilenet, plain_cifar, resnet_cifar,  # noqa: F401  (registers the models)
               resnet_imagenet, segmentation, vgg_cifar)
from .registry import (ModelDefaults, available_models, builds, create_model, default_cfg,
                       example_models, model_exists, register_model)

__all__ = ["ModelDefaults", "available_models", "builds", "create_model", "default_cfg",
           "example_models", "model_exists", "register_model"]
