"""`python -m reproduce flops`: params and MACs of a dense model, and of a tracked run's result."""

from __future__ import annotations

import json

from .method import CostModel
from .models import create_model, default_cfg

CONVENTION = "conv and linear layers only; MACs per image; FLOPs = 2 x MACs"


def describe(model: str, input_shape: str | None = None, num_classes: int | None = None,
             run_id: str | None = None) -> dict:
    """Params and MACs of `model` at `input_shape` ("C,H,W"; default: the model's own)."""
    if input_shape is None:
        c, h, w = default_cfg(model).input_size
    else:
        c, h, w = (int(v) for v in input_shape.split(","))
    if num_classes is None:
        num_classes = default_cfg(model).num_classes
    net = create_model(model, num_classes=num_classes, in_channels=c, gate_channels=False)
    costs = CostModel(net, (c, h, w))
    per_token = hasattr(net, "example_input")       # a language model: input shape unused
    info = {"model": model, "input": "one token" if per_token else [c, h, w],
            "num_classes": num_classes, "params": int(costs.dense_params),
            "macs": int(costs.dense_macs), "flops": int(2 * costs.dense_macs),
            "convention": CONVENTION.replace("per image", "per token") if per_token else CONVENTION}
    if run_id:
        from . import tracking
        client = tracking.client()
        path = client.download_artifacts(run_id, tracking.ARTIFACT_ARCH)
        with open(path) as f:
            arch = json.load(f)
        info.update({"run_id": run_id, "run_params": int(arch["params"]),
                     "run_macs": int(arch["macs"]), "run_dense_macs": int(arch["dense_macs"]),
                     "run_macs_ratio": arch["macs"] / arch["dense_macs"],
                     "run_depths": arch.get("depths", {})})
    return info
