"""The Makefile hands the user's variables to the commands it runs (checked with `make -n`)."""

from __future__ import annotations

import random
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs make")


def dry_run(*args: str) -> str:
    """What `make` would run, without running it (the environment's stamp is taken as built)."""
    stamp = ["-o", ".venv/.installed"]
    out = subprocess.run(["make", "-n", *stamp, *args], cwd=ROOT, capture_output=True,
                         text=True, check=True)
    return out.stdout


@pytest.mark.parametrize("target", ["figure-4", "table-cifar", "figures", "tables", "studies",
                                    "run"])
def test_set_overrides_reach_every_training_target(target):
    rng = random.SystemRandom()
    sets = [f"budget.target={rng.choice([0.3, 0.4, 0.6])}",
            f"data.image_size={8 * rng.randint(2, 4)}",
            f"train.epochs={rng.randint(1, 9)}"][:rng.randint(1, 3)]
    extra = ["EXP=figure-4"] if target == "run" else []
    out = dry_run(target, f"SET={' '.join(sets)}", "PROFILE=smoke", *extra)
    line = next(ln for ln in out.splitlines() if "-m reproduce" in ln)
    assert all(f"--set {s}" in line for s in sets), line
    assert "--profile smoke" in line
    plain = next(ln for ln in dry_run(target, "PROFILE=smoke", *extra).splitlines()
                 if "-m reproduce" in ln)
    assert "--set" not in plain
