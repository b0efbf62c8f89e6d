"""What a finished run logs for whoever opens it in MLflow: a picture of its own channel
dynamics (its Figure 7 panel) and a README saying how to load its compact model.

Both are written after the run's metrics and architecture.json, from the store itself (the
picture is analysis/figure_7.py's drawing of this one run), and neither can fail a run: a model
the drawing does not fit (no stages, no gated layers) simply has no picture.
"""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

import torch

from . import contract

ARTIFACT_DYNAMICS = contract.ARTIFACT_DYNAMICS
ARTIFACT_README = contract.ARTIFACT_README


def log_run_artifacts(c, run_id: str, compact: torch.nn.Module, input_shape: tuple) -> None:
    """Log the channel-dynamics PNG (when the run's layers can be drawn) and the README."""
    run = c.get_run(run_id)
    with tempfile.TemporaryDirectory() as tmp:
        picture = Path(tmp) / Path(ARTIFACT_DYNAMICS).name
        try:
            draw_dynamics(c, run, picture)
        except Exception as e:  # noqa: BLE001 - a missing picture never fails a finished run
            warnings.warn(f"run {run_id}: no channel-dynamics picture ({type(e).__name__}: {e})")
        if picture.exists():
            c.log_artifact(run_id, str(picture), _folder(ARTIFACT_DYNAMICS))
        readme = Path(tmp) / Path(ARTIFACT_README).name
        readme.write_text(readme_text(run, c.tracking_uri, compact, input_shape,
                                      picture.exists()))
        c.log_artifact(run_id, str(readme), _folder(ARTIFACT_README))


def _folder(artifact: str) -> str | None:
    parent = str(Path(artifact).parent)
    return None if parent == "." else parent


def draw_dynamics(c, run, path: Path) -> None:
    """The run's retained channel ratio per layer and epoch, one panel per stage."""
    import pandas as pd

    from analysis import figure_7
    from .store import Store

    tags = run.data.tags
    frame = pd.DataFrame([{"run_id": run.info.run_id, "variant": tags.get("variant", ""),
                           "seed": int(tags.get("seed", 0)), "model": tags.get("model", ""),
                           "dataset": tags.get("dataset", ""), "profile": tags.get("profile", "")}])
    store = Store(c.tracking_uri)
    staged = store.layers(run.info.run_id)["stage"].dropna()
    if staged.empty or not any(k.startswith(contract.CHANNELS) for k in run.data.metrics):
        return                                  # no layer in a stage: nothing to draw
    figure_7.draw(frame, path.with_suffix(""), tags.get("profile", ""), store,
                  title=f"{run.info.run_name} - retained channels per layer (epoch 0 = seed)",
                  formats=(path.suffix.lstrip("."),))


def example_input(model: torch.nn.Module, input_shape: tuple) -> tuple[str, torch.Tensor]:
    """The README's example batch: its Python expression and the tensor it makes."""
    if hasattr(model, "example_input"):
        return "model.example_input()", model.example_input()
    shape = ", ".join(str(int(n)) for n in (1, *input_shape))
    return f"torch.zeros({shape})", torch.zeros(1, *input_shape)


def readme_text(run, uri: str, compact: torch.nn.Module, input_shape: tuple,
                with_picture: bool) -> str:
    """The run's README.md: what it is, and the exact lines that load and run its model."""
    tags, m = run.data.tags, contract.final_metrics(run.data.metrics, run.data.params)
    expr, x = example_input(compact, input_shape)
    shape = None
    try:                                  # the output's shape, for the README's comment
        with torch.no_grad():
            out = compact.eval()(x.to(next(compact.parameters()).device))
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else None
    except Exception:  # noqa: BLE001 - the README is written without it
        pass
    main = next((k for k in (contract.VAL_ACC, contract.VAL_MIOU, contract.VAL_PPL) if k in m), None)
    facts = [f"- run `{run.info.run_id}`, experiment file `experiments/{tags.get('experiment')}.yaml`, "
             f"profile `{tags.get('profile')}`, variant `{tags.get('variant')}`, seed "
             f"{tags.get('seed')}; {tags.get('model')} on {tags.get('dataset')}, trained on "
             f"{tags.get('device', '?')} at commit `{tags.get('git_commit', '?')}`"]
    if main:
        facts.append(f"- {main} after the last epoch: {m[main]:.2f}")
    if m.get(contract.DENSE_MACS):
        facts.append(f"- inference MACs: {m[contract.MACS] / 1e6:.3f} M, "
                     f"{m[contract.MACS] / m[contract.DENSE_MACS]:.3f} of the dense model's "
                     f"{m[contract.DENSE_MACS] / 1e6:.3f} M; params {m[contract.PARAMS] / 1e6:.3f} M")
    lines = [f"# {run.info.run_name}", "", *facts, "",
             "## Load the compact model", "",
             f"`{contract.ARTIFACT_MODEL}` is the trained network with every channel and block "
             "that growing switched off removed: a plain `torch.nn.Module` without gates, whose "
             "outputs equal the gated network's. From the repository's root, with its virtual "
             "environment (`PYTHONPATH=. .venv/bin/python`):", "",
             "```python",
             "import mlflow",
             "import torch",
             "",
             "from reproduce.checkpoint import load_compact",
             "",
             f'path = mlflow.artifacts.download_artifacts(run_id="{run.info.run_id}",',
             f'                                           artifact_path="{contract.ARTIFACT_MODEL}",',
             f'                                           tracking_uri="{uri}")',
             "model = load_compact(path)      # the network, in eval mode",
             "with torch.no_grad():",
             f"    out = model({expr})" + (f"   # shape {shape}" if shape else ""),
             "```", "",
             "The file itself is a `dict` (`torch.load(path, weights_only=False)`): `class` (the "
             "model's class in reproduce/models), `arch` (its constructor's arguments), `sizes` "
             "(channels kept per layer), `removed` (blocks removed) and `state_dict`; "
             "`load_compact` builds the class with those sizes and loads the weights.", ""]
    lines += ["## Other artifacts", "",
              f"- `{contract.ARTIFACT_CONFIG}`: the resolved configuration "
              f"(`python -m reproduce run` with it retrains this run)",
              f"- `{contract.ARTIFACT_ARCH}`: final width of every layer, stage and role, costs",
              f"- `{contract.ARTIFACT_TRACES}`: every gated structure's β, logit and state per epoch"]
    if with_picture:
        lines.append(f"- `{ARTIFACT_DYNAMICS}`: retained channel ratio of every layer per epoch, "
                     f"one panel per stage (this run's Figure 7)")
    lines += ["", "Metrics: step = epochs completed; step 0 is the seed architecture before "
              "training. Values that cannot change during the run (the dense model's costs, "
              "the depth of stages without block gates, a fixed temperature) are params of the "
              "metric's name.", ""]
    return "\n".join(lines)
