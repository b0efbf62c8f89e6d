"""bench/gpu_check.py in its --quick CPU mode: every row timed, every paper target estimated, and
nothing of MLflow or Optuna needed (the GPU machine it is meant for may have neither)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

import analysis

ROOT = Path(__file__).resolve().parents[1]
CIFAR_MODES = {"dense", "masked", "restructured-1", "restructured-8", "restructured-64"}


def positive(*values) -> bool:
    return all(isinstance(v, (int, float)) and math.isfinite(v) and v > 0 for v in values)


@pytest.mark.slow
def test_quick_gpu_check(tmp_path):
    blocked = tmp_path / "blocked"            # importing either package fails
    for name in ("mlflow", "optuna"):
        (blocked / name).mkdir(parents=True)
        (blocked / name / "__init__.py").write_text(
            f"raise ImportError('{name} must not be needed by bench/gpu_check.py')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(blocked), str(ROOT)])}
    out = tmp_path / "check.json"
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_check.py"), "--quick",
                           "--out", str(out)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert out.with_suffix(".md").read_text().strip() in done.stdout
    assert result["quick"] and result["imported"] == []

    cifar = {(r["model"], r["precision"], r["mode"]): r for r in result["cifar"]}
    assert set(cifar) == {(m, p, mode) for m in ("resnet20", "resnet56", "vgg16")
                          for p in ("fp32", "bf16-cl") for mode in CIFAR_MODES}
    for r in cifar.values():
        assert r["timed_steps"] >= 1
        assert positive(r["step_s"], r["images_per_s"], r["epoch_end_s"], r["epoch_s"],
                        r["vs_dense"]), r
    assert {(r["model"], r["mode"]) for r in result["imagenet"]} == {
        (m, mode) for m in ("resnet50", "mobilenet_v1")
        for mode in ("dense", "masked", "restructured-1")}
    for r in result["imagenet"]:
        assert positive(r["step_s"], r["images_per_s"], r["vs_dense"]), r
    assert [r["runs"] for r in result["sharing"]] == [1, 2, 4]
    for r in result["sharing"]:
        assert len(r["images_per_s_each"]) == r["runs"]
        assert positive(r["images_per_s"], r["step_s"], r["epoch_s_each"],
                        *r["images_per_s_each"]), r

    est = result["estimate"]
    assert set(est["targets"]) == set(analysis.targets())       # every figure and table
    for name, t in est["targets"].items():
        assert t["runs"] > 0 and positive(t["gpu_hours"]), name
    assert est["distinct_runs"] == len(est["runs"]) > 0
    assert all(positive(r["gpu_hours"], r["epoch_s"]) for r in est["runs"])
    assert positive(est["total_gpu_hours"])
