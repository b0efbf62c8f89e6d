"""The package's structure: one-way imports, a store-only analysis layer, stable run identities."""

from __future__ import annotations

import ast
import json
import os
from pathlib import Path

import pytest

from reproduce.experiments import EXPERIMENTS_DIR, PROFILES_FILE, plan

ROOT = Path(__file__).resolve().parents[1]
PINS = Path(__file__).with_name("config_hashes.json")
# what analysis may import from the package: the readers of the stores (tracked runs, Optuna
# studies), the contract naming what runs track, and the package's errors
STORE_READERS = {"reproduce.store", "reproduce.study_results"}
ANALYSIS_MAY_IMPORT = {*STORE_READERS, "reproduce.contract", "reproduce.errors"}
# ... and all that those reach in turn: no training code, models or method
# (runs_view: the experiment's runs view and description, tags tracking writes; plain data)
READERS_MAY_REACH = {*ANALYSIS_MAY_IMPORT, "reproduce", "reproduce.tracking", "reproduce.runs_view"}
# what the datasets may import from the package: the schema, the process layout and themselves,
# never the training code (tasks, train, runner, baselines, autogrow, pipeline, search, models,
# method, checkpoints, tracking)
DATA_MAY_IMPORT = {"reproduce.data", "reproduce.config", "reproduce.errors",
                   "reproduce.distributed"}


def imports_of(path: Path, package: str) -> set[str]:
    """Every module a file imports (top level and inside functions), as absolute names."""
    module = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
    base = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = base.split(".")
                prefix = ".".join(parts[:len(parts) - node.level + 1])
                name = f"{prefix}.{node.module}" if node.module else prefix
            else:
                name = node.module
            out.add(name)
            out.update(f"{name}.{a.name}" for a in node.names)    # `from pkg import module`
    return {m for m in out if m.split(".")[0] == package}


def package_graph(package: str) -> dict[str, set[str]]:
    files = {".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): p
             for p in (ROOT / package).rglob("*.py")}
    return {m: {i for i in imports_of(p, package) if i in files and i != m}
            for m, p in files.items()}


def test_analysis_reads_the_store_only():
    for path in (ROOT / "analysis").glob("*.py"):
        reaching = reaching_beyond(path, ANALYSIS_MAY_IMPORT)
        assert not reaching, f"{path.name} imports {sorted(reaching)}"


def reaching_beyond(path: Path, allowed: set[str]) -> set[str]:
    return {m for m in imports_of(path, "reproduce")
            if m != "reproduce" and not any(m == a or m.startswith(a + ".") for a in allowed)}


def test_datasets_never_import_the_training_code():
    files = sorted((ROOT / "reproduce" / "data").glob("*.py"))
    assert len(files) >= 6                    # the registry, loaders and the families are seen
    for path in files:
        reaching = reaching_beyond(path, DATA_MAY_IMPORT)
        assert not reaching, f"reproduce/data/{path.name} imports {sorted(reaching)}"
    # the registry imports nothing of the suite: config, tasks and models read it without a cycle
    assert reaching_beyond(ROOT / "reproduce" / "data" / "registry.py", set()) == set()


def test_the_store_readers_reach_no_training_code():
    """Analysis cannot reach the trainer through the readers either (imports of imports)."""
    graph = package_graph("reproduce")
    reached, todo = set(), sorted(ANALYSIS_MAY_IMPORT)
    while todo:
        m = todo.pop()
        if m not in reached:
            reached.add(m)
            todo += sorted(graph[m])
    assert reached <= READERS_MAY_REACH, sorted(reached - READERS_MAY_REACH)


def test_no_module_level_getattr():
    """No lazy module attributes: every import is a visible import statement, so the import
    graph the tests here check is the one Python follows."""
    for package in ("reproduce", "analysis"):
        for path in (ROOT / package).rglob("*.py"):
            top = ast.parse(path.read_text()).body
            names = {n.name for n in top if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
            assert "__getattr__" not in names, f"{path.relative_to(ROOT)} defines __getattr__"


def test_the_method_core_imports_only_torch_and_itself():
    for path in (ROOT / "reproduce" / "method").glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else []
            for name in names:
                assert name.split(".")[0] in {"torch", "__future__", "contextlib", "dataclasses",
                                              "typing", "warnings", "math"}, f"{path.name}: {name}"


def test_no_import_cycle_in_the_package():
    graph = package_graph("reproduce")
    state: dict[str, int] = {}

    def visit(m: str, trail: list[str]) -> None:
        state[m] = 1
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                pytest.fail("import cycle: " + " -> ".join(trail[trail.index(n):] + [n]))
            if n not in state:
                visit(n, trail + [n])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])


def resolved_hashes() -> dict[str, list[str]]:
    out = {}
    for path in sorted(EXPERIMENTS_DIR.glob("*.yaml")):
        if path.name == PROFILES_FILE or path.stem.startswith("search-"):
            continue
        for profile in ("smoke", "paper"):
            out[f"{path.stem}:{profile}"] = sorted(
                {f"{r.cfg.variant}/s{r.cfg.seed}={r.hash}" for r in plan(path.stem, profile)})
    return out


def test_every_experiment_resolves_to_its_pinned_config_hashes():
    """Runs already tracked are found again: a refactoring must not change any run's identity.

    A deliberate change of a default changes hashes; regenerate the pins with
    `UPDATE_HASH_PINS=1 pytest tests/test_architecture.py` and say why in the commit.
    """
    now = resolved_hashes()
    if os.environ.get("UPDATE_HASH_PINS") == "1":
        PINS.write_text(json.dumps(now, indent=1) + "\n")
    pinned = json.loads(PINS.read_text())
    assert set(now) == set(pinned), "experiment files were added or removed: update the pins"
    for key in pinned:
        assert now[key] == pinned[key], f"{key}: config hashes changed"
