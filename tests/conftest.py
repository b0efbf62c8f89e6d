"""Shared fixtures. Every test runs against stores in its own temporary directory."""

from __future__ import annotations

import os
import random

import pytest

# A run small enough for tests: synthetic 8x8 data, a few epochs, one thread.
TINY = {
    "data": {"dataset": "synthetic", "synthetic_train": 128, "synthetic_val": 64,
             "batch_size": 32, "image_size": 8, "num_classes": 4},
    "train": {"epochs": 3, "lr": 0.05, "threads": 1},
}


@pytest.fixture(autouse=True)
def isolated_stores(tmp_path, monkeypatch):
    """Tracking store, Optuna storage and figure outputs live in tmp_path, never the user's."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("OPTUNA_STORAGE", f"sqlite:///{tmp_path}/optuna.db")
    monkeypatch.setenv("FIGURES_DIR", str(tmp_path / "figures"))
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    # what `make` exports for the commands it runs, and a command for its training processes: a
    # test passes them itself where it needs them
    for name in ("JOBS", "RUNS_PER_GPU", "PROFILE", "FORCE", "LAUNCHER", "NO_WAIT",
                 "REPRODUCE_PROCESSES"):
        monkeypatch.delenv(name, raising=False)
    return uri


# The ImageNet experiment files (figure-3, table-imagenet) shrunk to seconds: synthetic 16-px
# images, two epochs; ResNet-50 and MobileNetV1 keep their full depth and width.
IMAGENET_TINY = {
    "data": {"dataset": "synthetic", "synthetic_train": 64, "synthetic_val": 32,
             "batch_size": 32, "image_size": 16, "num_classes": 4},
    "train": {"epochs": 2, "threads": 1},
}


@pytest.fixture
def imagenet_tiny():
    """Overrides that shrink the ImageNet experiments to seconds (a fresh deep copy per test)."""
    import copy
    return copy.deepcopy(IMAGENET_TINY)


@pytest.fixture
def tiny():
    """Overrides that shrink any experiment to seconds (a fresh deep copy per test)."""
    import copy
    return copy.deepcopy(TINY)


@pytest.fixture
def one_thread():
    """Torch on one thread: small models run faster so, and on a shared machine much faster."""
    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def fresh_seed():
    """Fresh random inputs every run. The seed is printed so a failure can be replayed:
    TEST_SEED=<seed> make test PYTEST_ARGS="-k <test>"."""
    import torch
    seed = int(os.environ.get("TEST_SEED") or random.SystemRandom().randrange(2**31))
    print(f"torch seed {seed}")
    torch.manual_seed(seed)
    return seed
